"""nPrint rows -> IP packets (L3 header + L4 header + payload), vectorized over packets.

Decode uses this to rebuild captures from bits alone, and repair/serve use it to emit the packets
of generated flows. All bytes are assembled in one numpy buffer with per-packet offsets; the only
per-packet Python work is slicing the final buffer into ``bytes`` objects.

Rules (per row):
- network header: ``ipv4`` if its fixed bits are present, else ``ipv6``, else none (the packet is
  returned as ``b""``); its length is the leading run of fully present bytes (IPv4 options
  included), at least the fixed header size;
- transport header: the first present of ``tcp``, ``udp``, ``icmp`` (layout order), with the
  length of its leading run of present bytes (TCP options included);
- payload: ``payload_lengths`` if given, else what the IPv4 total length / IPv6 payload length
  leaves after the headers (never negative); zero-filled, or random bytes with ``payload="random"``.
"""

from __future__ import annotations

import numpy as np

from netdiffusion.fields import HEADERS, Layout

L3_HEADERS = ("ipv4", "ipv6")
L4_HEADERS = ("tcp", "udp", "icmp")


def _choose(layout: Layout, matrix: np.ndarray, candidates: tuple[str, ...]) -> np.ndarray:
    """Index into ``candidates`` of the first header present per row, -1 for none."""
    choice = np.full(matrix.shape[0], -1, dtype=np.int64)
    for i in range(len(candidates) - 1, -1, -1):
        h = candidates[i]
        if h in layout.headers:
            choice[layout.header_present(matrix, h)] = i
    return choice


def _header_bytes(layout: Layout, matrix: np.ndarray, rows: np.ndarray, header: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`Layout.header_bytes` of ``matrix[rows]`` without copying whole rows when most rows
    are selected (packing the header's columns of every row is cheaper than gathering the rows)."""
    if len(rows) * 4 >= matrix.shape[0]:
        data, lengths = layout.header_bytes(matrix, header)
        return (data, lengths) if len(rows) == matrix.shape[0] else (data[rows], lengths[rows])
    return layout.header_bytes(matrix[rows], header)


def packet_lengths(layout: Layout, matrix: np.ndarray,
                   payload_lengths: np.ndarray | None = None,
                   header_data: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> dict[str, np.ndarray]:
    """Per-row byte lengths implied by the bits: ``l3``, ``l4``, ``payload`` and header choices.

    ``header_data`` (optional, filled here): header -> ``(rows, bytes)`` of the rows that chose that
    header, ``bytes`` as :meth:`Layout.header_bytes` returns them, so the builder packs each header once."""
    n = matrix.shape[0]
    header_data = {} if header_data is None else header_data
    l3_choice = _choose(layout, matrix, L3_HEADERS)
    l4_choice = _choose(layout, matrix, L4_HEADERS)
    l4_choice[l3_choice < 0] = -1
    l3_len = np.zeros(n, dtype=np.int64)
    l4_len = np.zeros(n, dtype=np.int64)
    implied_total = np.zeros(n, dtype=np.int64)  # bytes after the L3 header, from the L3 length field
    for i, h in enumerate(L3_HEADERS):
        rows = np.flatnonzero(l3_choice == i)
        if not len(rows):
            continue
        data, lengths = _header_bytes(layout, matrix, rows, h)
        header_data[h] = (rows, data)
        l3_len[rows] = np.maximum(lengths, HEADERS[h].min_bits // 8)
        # a narrow field: reading its columns for every row beats copying whole rows
        if h == "ipv4":
            total = layout.field_values(matrix, "ipv4_tl")[rows]
            implied_total[rows] = np.maximum(total, 0) - l3_len[rows]
        else:
            implied_total[rows] = np.maximum(layout.field_values(matrix, "ipv6_len")[rows], 0)
    for i, h in enumerate(L4_HEADERS):
        rows = np.flatnonzero(l4_choice == i)
        if not len(rows):
            continue
        data, lengths = _header_bytes(layout, matrix, rows, h)
        header_data[h] = (rows, data)
        l4_len[rows] = np.maximum(lengths, HEADERS[h].min_bits // 8)
    if payload_lengths is None:
        payload = np.maximum(implied_total - l4_len, 0)
    else:
        payload = np.asarray(payload_lengths, dtype=np.int64).reshape(-1).copy()
        if payload.shape[0] != n:
            raise ValueError(f"{n} rows but {payload.shape[0]} payload lengths")
        payload = np.maximum(payload, 0)
    payload[l3_choice < 0] = 0
    return {"l3": l3_len, "l4": l4_len, "payload": payload, "l3_choice": l3_choice, "l4_choice": l4_choice}


def _scatter(buf: np.ndarray, starts: np.ndarray, data: np.ndarray, lengths: np.ndarray) -> None:
    """Copy ``data[r, :lengths[r]]`` to ``buf[starts[r]:]`` for every row at once.

    One block copy per distinct length (header lengths take few values): no row-by-column mask
    or position matrix over the widest row."""
    lengths = np.minimum(lengths, data.shape[1])
    for size in np.unique(lengths).tolist():
        if size <= 0:
            continue
        rows = np.flatnonzero(lengths == size)
        buf[starts[rows, None] + np.arange(size)] = data[rows, :size]


def build_ip_buffer(layout: Layout, matrix: np.ndarray, payload_lengths: np.ndarray | None = None,
                    payload: str = "zero", rng: np.random.Generator | None = None,
                    gap_before: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IP packets of ``matrix``'s rows in one uint8 buffer: ``(buffer, starts, ends)``.

    Packet ``i`` is ``buffer[starts[i]:ends[i]]``. ``gap_before`` (bytes per row, optional) leaves
    that many zero bytes before each packet, e.g. for pcap record and Ethernet headers, so a
    writer can fill them in place instead of copying every packet. The bytes (random payloads
    included, same ``rng`` draws) are those of :func:`build_ip_packets`."""
    if payload not in ("zero", "random"):
        raise ValueError(f"payload must be 'zero' or 'random', not {payload!r}")
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[1] != layout.width:
        raise ValueError(f"matrix shape {matrix.shape} does not match layout width {layout.width}")
    n = matrix.shape[0]
    header_data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    info = packet_lengths(layout, matrix, payload_lengths, header_data) if n else None
    sizes = info["l3"] + info["l4"] + info["payload"] if n else np.zeros(0, dtype=np.int64)
    gap = np.zeros(n, dtype=np.int64) if gap_before is None else np.asarray(gap_before, dtype=np.int64)
    ends = np.cumsum(sizes + gap)
    starts = ends - sizes
    total = int(ends[-1]) if n else 0
    if payload == "random":
        rng = rng if rng is not None else np.random.default_rng()
        ip_total = int(sizes.sum())
        if gap_before is None or not gap.any():
            buf = rng.integers(0, 256, size=ip_total, dtype=np.uint8)
        else:
            buf = np.zeros(total, dtype=np.uint8)
            # the same draws as without gaps, each packet's share moved to its place
            shift = np.repeat(starts - (np.cumsum(sizes) - sizes), sizes)
            buf[np.arange(ip_total) + shift] = rng.integers(0, 256, size=ip_total, dtype=np.uint8)
    else:
        buf = np.zeros(total, dtype=np.uint8)
    if not n:
        return buf, starts, ends
    for h in L3_HEADERS:
        if h in header_data:
            rows, data = header_data[h]
            _scatter(buf, starts[rows], data, info["l3"][rows])
    for h in L4_HEADERS:
        if h in header_data:
            rows, data = header_data[h]
            _scatter(buf, starts[rows] + info["l3"][rows], data, info["l4"][rows])
    return buf, starts, ends


def build_ip_packets(layout: Layout, matrix: np.ndarray, payload_lengths: np.ndarray | None = None,
                     payload: str = "zero", rng: np.random.Generator | None = None) -> list[bytes]:
    """IP packets (bytes, starting at the IP header) for the rows of an nPrint ``matrix``.

    ``payload`` is ``"zero"`` (default) or ``"random"`` (uniform bytes from ``rng``). Rows with no
    network header give ``b""``."""
    buf, starts, ends = build_ip_buffer(layout, matrix, payload_lengths, payload, rng)
    raw = buf.tobytes()
    return [raw[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
