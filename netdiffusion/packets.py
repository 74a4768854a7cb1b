"""nPrint rows -> IP packets (L3 header + L4 header + payload), vectorized over packets.

Decode uses this to rebuild captures from bits alone, and repair/serve use it to emit the packets
of generated flows. All bytes are assembled in one numpy buffer with per-packet offsets: one compiled
pass over the rows finds sizes and header bytes (into a compact array), a second copies the header
bytes into place; the only per-packet Python work is slicing the final buffer into ``bytes`` objects.

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

from netdiffusion.fields import ABSENT_WORD, HEADERS, Layout, absent_bytes, row_words, word_byte
from netdiffusion.jit import kernel

L3_HEADERS = ("ipv4", "ipv6")
L4_HEADERS = ("tcp", "udp", "icmp")


@kernel
def _sizes(words: np.ndarray, stride: int, l3: np.ndarray, l4: np.ndarray, length_fields: np.ndarray,
           payload_in: np.ndarray, l3_choice: np.ndarray, l4_choice: np.ndarray, l3_len: np.ndarray,
           l4_len: np.ndarray, payload: np.ndarray, heads: np.ndarray, width: int) -> None:
    """Per row: the network and transport header chosen, their bytes, and the payload bytes
    (``payload_in`` if it has a value per row, else what the L3 length field leaves); the header
    bytes themselves into ``heads`` (``width`` bytes per row: L3 from 0, L4 from ``width // 2``),
    so the matrix is read once (a second pass over its rows costs more than these copies).

    The header of a layer is the first of its candidates (``l3`` / ``l4``, :func:`_header_spec`)
    with a column of its fixed part not ABSENT; its bytes are :meth:`Layout.header_bytes`' length
    (leading words without an ABSENT column) raised to its fixed size: option words count only
    after a complete fixed part. ``length_fields``: per L3 candidate, :func:`_length_fields`.

    Written as one function with unsigned indices (uint64 throughout: numba makes uint64 + int64
    a float): a signed index costs a wraparound test per access, which stops loops from being
    vectorized, and a call to a helper taking arrays is not inlined (arguments pushed per call)."""
    given = payload_in.shape[0] == l3_choice.shape[0]
    half = np.uint64(width // 2)
    for i in range(l3_choice.shape[0]):
        row = np.uint64(i * stride)
        chosen = (-1, -1)
        sizes = (0, 0)
        for layer in range(2):
            spec = l3 if layer == 0 else l4
            if layer == 1 and chosen[0] < 0:
                break
            for h in range(spec.shape[0]):
                if spec[h, 0] < 0:
                    continue
                at = row + np.uint64(spec[h, 0])
                fixed, total = np.uint64(spec[h, 1]), np.uint64(spec[h, 2])
                if words[at] == ABSENT_WORD:  # absent as a whole, most likely: test every word
                    every = ABSENT_WORD
                    for j in range(np.uint64(1), fixed):
                        every &= words[at + j]
                    if every == ABSENT_WORD:
                        continue
                size = fixed
                if size < total and not absent_bytes(words[at + size]):  # options: after a complete fixed part
                    holes = np.uint64(0)
                    for j in range(fixed):
                        holes |= absent_bytes(words[at + j])
                    if not holes:
                        while size < total and not absent_bytes(words[at + size]):
                            size += np.uint64(1)
                to = np.uint64(i * width) + (half if layer else np.uint64(0))
                for j in range(size):
                    heads[to + j] = word_byte(words[at + j])
                if layer == 0:
                    chosen, sizes = (h, -1), (np.int64(size), 0)
                else:
                    chosen, sizes = (chosen[0], h), (sizes[0], np.int64(size))
                break
        c3, c4 = chosen
        n3, n4 = sizes
        l3_choice[i], l3_len[i], l4_choice[i], l4_len[i] = c3, n3, c4, n4
        if c3 < 0:
            payload[i] = 0
        elif given:
            payload[i] = max(payload_in[i], 0)
        else:
            col, bits = length_fields[c3, 0], length_fields[c3, 1]
            value = 0
            for c in range(col, col + bits):  # Layout.field_values: -1 if a bit is ABSENT
                b = np.int64(words[row + np.uint64(c >> 3)] >> np.uint64(8 * (c & 7))) & 0xFF
                if b == 0xFF:
                    value = -1
                    break
                value = (value << 1) | (1 if 1 <= b <= 127 else 0)
            after = max(value, 0) - (n3 if length_fields[c3, 2] else 0)  # bytes after the L3 header
            payload[i] = max(after - n4, 0)


@kernel
def _write_headers(heads: np.ndarray, width: int, l3_len: np.ndarray, l4_len: np.ndarray, starts: np.ndarray,
                   buf: np.ndarray) -> None:
    """Each row's L3 then L4 header bytes (from :func:`_sizes`' ``heads``) into ``buf`` at ``starts``."""
    half = np.uint64(width // 2)
    for i in range(starts.shape[0]):
        at = np.uint64(starts[i])
        src = np.uint64(i * width)
        n3 = np.uint64(l3_len[i])
        for j in range(n3):
            buf[at + j] = heads[src + j]
        at += n3
        src += half
        for j in range(np.uint64(l4_len[i])):
            buf[at + j] = heads[src + j]


@kernel
def _place(buf: np.ndarray, starts: np.ndarray, sizes: np.ndarray, data: np.ndarray) -> None:
    """``data``'s bytes, in order, into ``buf[starts[i] : starts[i] + sizes[i]]`` row after row."""
    k = 0
    for i in range(starts.shape[0]):
        a = starts[i]
        for j in range(sizes[i]):
            buf[a + j] = data[k]
            k += 1


def _header_spec(layout: Layout, candidates: tuple[str, ...]) -> np.ndarray:
    """Per candidate header: ``(first word, fixed words, words)`` in a row read as uint64 words
    (8 columns each, one header byte), first word -1 where ``layout`` lacks it."""
    spec = np.full((len(candidates), 3), -1, dtype=np.int64)
    for i, h in enumerate(candidates):
        if h in layout.headers:
            spec[i] = (layout.header_slice(h).start // 8, HEADERS[h].min_bits // 8, HEADERS[h].bytes)
    return spec


def _length_fields(layout: Layout) -> np.ndarray:
    """Per L3 candidate: column and width of its length field, and 1 where that length counts the
    L3 header itself (IPv4 total length) or 0 where it does not (IPv6 payload length)."""
    out = np.zeros((len(L3_HEADERS), 3), dtype=np.int64)
    for i, (h, key, counts_header) in enumerate((("ipv4", "ipv4_tl", 1), ("ipv6", "ipv6_len", 0))):
        if h in layout.headers:
            sl = layout.field_slice(key)
            out[i] = (sl.start, sl.stop - sl.start, counts_header)
    return out


def packet_lengths(layout: Layout, matrix: np.ndarray,
                   payload_lengths: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-row byte lengths implied by the bits: ``l3``, ``l4``, ``payload`` and header choices,
    and ``heads``: the header bytes (:func:`_sizes`).

    One compiled pass over the rows (each reads only the words it needs: most rows stop at the
    first word of each header's presence test and at the first absent option byte)."""
    n = matrix.shape[0]
    if payload_lengths is None:
        given = np.zeros(0, dtype=np.int64)
    else:
        given = np.ascontiguousarray(payload_lengths, dtype=np.int64).reshape(-1)
        if given.shape[0] != n:
            raise ValueError(f"{n} rows but {given.shape[0]} payload lengths")
    out = {k: np.empty(n, dtype=np.int64) for k in ("l3", "l4", "payload", "l3_choice", "l4_choice")}
    width = 2 * max(HEADERS[h].bytes for h in L3_HEADERS + L4_HEADERS)
    out["heads"] = np.empty((n, width), dtype=np.uint8)
    if n:
        words, stride, _ = row_words(matrix, 0, layout.width)
        _sizes(words, stride, _header_spec(layout, L3_HEADERS), _header_spec(layout, L4_HEADERS),
               _length_fields(layout), given, out["l3_choice"], out["l4_choice"], out["l3"], out["l4"],
               out["payload"], out["heads"].reshape(-1), width)
    return out


def build_ip_buffer(layout: Layout, matrix: np.ndarray, payload_lengths: np.ndarray | None = None,
                    payload: str = "zero", rng: np.random.Generator | None = None,
                    gap_before: np.ndarray | None = None, info: dict[str, np.ndarray] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IP packets of ``matrix``'s rows in one uint8 buffer: ``(buffer, starts, ends)``.

    Packet ``i`` is ``buffer[starts[i]:ends[i]]``. ``gap_before`` (bytes per row, optional) leaves
    that many zero bytes before each packet, e.g. for pcap record and Ethernet headers, so a
    writer can fill them in place instead of copying every packet. The bytes (random payloads
    included, same ``rng`` draws) are those of :func:`build_ip_packets`. ``info`` (optional) gets
    :func:`packet_lengths`' arrays: where each packet's headers are and which they are."""
    if payload not in ("zero", "random"):
        raise ValueError(f"payload must be 'zero' or 'random', not {payload!r}")
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[1] != layout.width:
        raise ValueError(f"matrix shape {matrix.shape} does not match layout width {layout.width}")
    n = matrix.shape[0]
    info = {} if info is None else info
    info.update(packet_lengths(layout, matrix, payload_lengths))
    sizes = info["l3"] + info["l4"] + info["payload"]
    gap = np.zeros(n, dtype=np.int64) if gap_before is None else np.asarray(gap_before, dtype=np.int64)
    ends = np.cumsum(sizes + gap)
    starts = ends - sizes
    total = int(ends[-1]) if n else 0
    if payload == "random":
        rng = rng if rng is not None else np.random.default_rng()
        draws = rng.integers(0, 256, size=int(sizes.sum()), dtype=np.uint8)
        if gap_before is None or not gap.any():
            buf = draws
        else:  # the same draws as without gaps, each packet's share moved to its place
            buf = np.zeros(total, dtype=np.uint8)
            _place(buf, starts, sizes, draws)
    else:
        buf = np.zeros(total, dtype=np.uint8)
    if not n:
        return buf, starts, ends
    heads = info["heads"]
    _write_headers(heads.reshape(-1), heads.shape[1], info["l3"], info["l4"], starts, buf)
    return buf, starts, ends


def build_ip_packets(layout: Layout, matrix: np.ndarray, payload_lengths: np.ndarray | None = None,
                     payload: str = "zero", rng: np.random.Generator | None = None) -> list[bytes]:
    """IP packets (bytes, starting at the IP header) for the rows of an nPrint ``matrix``.

    ``payload`` is ``"zero"`` (default) or ``"random"`` (uniform bytes from ``rng``). Rows with no
    network header give ``b""``."""
    buf, starts, ends = build_ip_buffer(layout, matrix, payload_lengths, payload, rng)
    raw = buf.tobytes()
    return [raw[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
