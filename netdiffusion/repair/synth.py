"""Repaired rows -> IP packets with correct L4 checksums -> Ethernet pcaps.

Packets are assembled by :func:`netdiffusion.packets.build_ip_buffer` (the one packet builder)
into one buffer, optionally with room before each packet for its pcap record and Ethernet headers;
here we compute the TCP/UDP/ICMP checksums over the bytes actually written (payload included:
zero or random) and patch them into the buffer and into the rows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from netdiffusion import bitwords as W
from netdiffusion.fields import IP_PROTO, Layout, row_words, word_byte
from netdiffusion.jit import kernel
from netdiffusion.packets import L4_HEADERS, build_ip_buffer
from netdiffusion.repair.engine import (
    AH_PROTO,
    ICMP_ERRORS_V4,
    ICMP_QUOTE_BYTES,
    ICMPV6_PROTO,
    IGMP_PROTO,
    IPV6_EXTENSION_PAYLOADS,
    SYNTHETIC_PAYLOAD_BYTES,
    fold_checksum,
)

_NONZERO_SPAN = 60 + 8 + 28  # longest TCP header, or ICMP header + quoted datagram (even)
L4_CKSUM = {"tcp": "tcp_cksum", "udp": "udp_cksum", "icmp": "icmp_cksum"}


@kernel
def _segment_sums(buf: np.ndarray, starts: np.ndarray, stops: np.ndarray, out: np.ndarray) -> None:
    """out[i]: sum of the big-endian 16-bit words of ``buf[starts[i]:stops[i]]`` (an odd last byte
    is the high byte of a word), 0 for an empty span."""
    for i in range(starts.shape[0]):
        a = np.uint64(starts[i])
        size = max(min(stops[i], buf.shape[0]) - starts[i], 0)
        total = 0
        for j in range(np.uint64(size // 2)):
            total += (np.int64(buf[a + np.uint64(2) * j]) << 8) | np.int64(buf[a + np.uint64(2) * j + np.uint64(1)])
        if size % 2:
            total += np.int64(buf[a + np.uint64(size - 1)]) << 8
        out[i] = total


@kernel
def _packed_word_sums(words: np.ndarray, stride: int, first: int, k: int, rows: np.ndarray, out: np.ndarray) -> None:
    """out[i]: sum of the big-endian 16-bit words of the ``k`` bytes (one per word, absent bits
    read as 0) of row ``rows[i]``: an address' share of a pseudo-header checksum."""
    for i in range(out.shape[0]):
        at = np.uint64(rows[i] * stride + first)
        total = 0
        for j in range(np.uint64(k // 2)):
            hi = word_byte(words[at + np.uint64(2) * j])
            lo = word_byte(words[at + np.uint64(2) * j + np.uint64(1)])
            total += (np.int64(hi) << 8) | np.int64(lo)
        out[i] = total


def _addr_sum(layout: Layout, m: np.ndarray, keys: tuple[str, str], rows: np.ndarray) -> np.ndarray:
    """Sum of the 16-bit words of two adjacent address fields (absent bits read as 0) of ``m[rows]``."""
    first, second = layout.field_slice(keys[0]), layout.field_slice(keys[1])
    if first.stop != second.start:
        raise ValueError(f"{keys}: not adjacent fields")
    rows = np.flatnonzero(rows) if rows.dtype == bool else np.asarray(rows, dtype=np.int64)
    out = np.empty(len(rows), dtype=np.int64)
    if len(rows):  # only these rows' words are read (IPv4 and IPv6 rows: one call each)
        words, stride, at = row_words(m, first.start, second.stop)
        _packed_word_sums(words, stride, at, (second.stop - first.start) // 8, rows, out)
    return out


def _quote_datagrams(layout: Layout, m: np.ndarray, is_: dict[str, np.ndarray], buf: np.ndarray,
                     l4_start: np.ndarray, ends: np.ndarray) -> None:
    """ICMPv4 errors carry the datagram that caused them: write a minimal IPv4+UDP quote.

    The quoted packet goes from the error's receiver to its sender (what triggered it)."""
    rows = np.flatnonzero(is_["icmp"] & is_["ipv4"])
    if not len(rows):
        return
    typ = layout.field_values(m[rows], "icmp_type")
    rows = rows[np.isin(typ, ICMP_ERRORS_V4) & (ends[rows] - l4_start[rows] >= 8 + ICMP_QUOTE_BYTES)]
    if not len(rows):
        return
    hdr, _ = layout.header_bytes(m[rows], "ipv4")
    src_f, dst_f = layout.field("ipv4_src"), layout.field("ipv4_dst")
    src = hdr[:, src_f.offset // 8 : src_f.offset // 8 + 4]
    dst = hdr[:, dst_f.offset // 8 : dst_f.offset // 8 + 4]
    inner_len = ends[rows] - l4_start[rows] - 8
    q = np.zeros((len(rows), ICMP_QUOTE_BYTES), dtype=np.int64)
    q[:, 0] = 0x45
    q[:, 2], q[:, 3] = (inner_len >> 8) & 0xFF, inner_len & 0xFF
    q[:, 8], q[:, 9] = 64, IP_PROTO["udp"]
    q[:, 12:16], q[:, 16:20] = dst, src
    ck = _words_checksum(q[:, :20])
    q[:, 10], q[:, 11] = ck >> 8, ck & 0xFF
    udp_len = inner_len - 20
    q[:, 20], q[:, 21] = 0xC0, 0x00  # ports 49152 -> 33434 (traceroute's)
    q[:, 22], q[:, 23] = 0x82, 0x9A
    q[:, 24], q[:, 25] = (udp_len >> 8) & 0xFF, udp_len & 0xFF
    pos = l4_start[rows, None] + 8 + np.arange(ICMP_QUOTE_BYTES)[None, :]
    buf[pos] = q.astype(np.uint8)


def _zero_bare_payloads(buf: np.ndarray, l4_start: np.ndarray, ends: np.ndarray, bare: np.ndarray) -> None:
    """Random payloads only behind a TCP/UDP/ICMP header: a row of another protocol (GRE, ESP, OSPF,
    VRRP, ...) keeps a zero payload, because its payload is that protocol's header to tshark, and
    random bytes there are malformed (measured for IGRP and VRRP at every length) where the zeros
    repair's protocol rules were measured with are not."""
    rows = np.flatnonzero(bare & (ends > l4_start))
    if not len(rows):
        return
    lengths = ends[rows] - l4_start[rows]
    first = np.repeat(l4_start[rows] - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
    buf[first + np.arange(int(lengths.sum()))] = 0


def _no_transport(layout: Layout, is_: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Rows that carry no nPrint transport header (their payload starts right after the IP header)."""
    bare = np.ones(n, dtype=bool)
    for h in L4_CKSUM:
        if h in layout.headers:
            bare &= ~is_[h]
    return bare


def _words_checksum(head: np.ndarray) -> np.ndarray:
    """Internet checksum of each row of ``head`` (int64 bytes, even width)."""
    return fold_checksum(((head[:, 0::2] << 8) | head[:, 1::2]).sum(axis=1))


def _bare_icmpv6(layout: Layout, m: np.ndarray, is_: dict[str, np.ndarray], buf: np.ndarray,
                 l4_start: np.ndarray, ends: np.ndarray,
                 values: Callable[[str], np.ndarray]) -> np.ndarray:
    """IPv6 rows with next header ICMPv6 but no nPrint L4 header (nPrint's icmp is ICMPv4, so real
    ICMPv6 packets encode as IPv6 only): their payload starts an echo request (type 128, code 0),
    whose checksum the caller fills in, instead of zero bytes tshark reports as a bad checksum.
    Returns those rows. Payload bytes only: no nPrint bit changes."""
    if "ipv6" not in layout.headers:
        return np.zeros(0, dtype=np.int64)
    rows = np.flatnonzero(is_["ipv6"] & _no_transport(layout, is_, len(m)))
    rows = rows[(values("ipv6_nh")[rows] == ICMPV6_PROTO) & (ends[rows] - l4_start[rows] >= 8)]
    if len(rows):
        for k, value in enumerate((128, 0, 0, 0)):  # type, code, checksum (filled in later)
            buf[l4_start[rows] + k] = value
    return rows


def _bare_ipv6_extensions(layout: Layout, m: np.ndarray, is_: dict[str, np.ndarray], buf: np.ndarray,
                          l4_start: np.ndarray, ends: np.ndarray,
                          values: Callable[[str], np.ndarray]) -> None:
    """IPv6 rows whose next header is an extension header nPrint does not encode (Hop-by-Hop,
    Fragment, Destination Options: real fragmented DNS carries a Fragment header): their payload
    starts with a minimal such header whose next header is 59 (No Next Header), instead of zero
    bytes tshark dissects as a chain of misplaced Hop-by-Hop headers (malformed). Payload bytes
    only: no nPrint bit changes (rows without room for it get next header 59 in repair)."""
    if "ipv6" not in layout.headers:
        return
    rows = np.flatnonzero(is_["ipv6"] & _no_transport(layout, is_, len(m)))
    nh = values("ipv6_nh")[rows]
    for value, header in IPV6_EXTENSION_PAYLOADS.items():
        sel = rows[(nh == value) & (ends[rows] - l4_start[rows] >= len(header))]
        for k, byte in enumerate(header):
            buf[l4_start[sel] + k] = byte


def _synthetic_payloads(layout: Layout, m: np.ndarray, is_: dict[str, np.ndarray], buf: np.ndarray,
                        l4_start: np.ndarray, ends: np.ndarray,
                        values: Callable[[str], np.ndarray]) -> None:
    """Rows of protocols nPrint has no header for, whose zero payload tshark reports as malformed:
    IGMP (2, IPv4) gets an IGMPv2 membership report for 224.0.0.251; IP-in-IP (4) and IPv6-in-IP
    (41) tunnels (nPrint encodes the outer header only) an inner IPv4 header (protocol 253, valid
    checksum) or IPv6 header (next header 59) spanning the rest of the packet, from 192.0.2.1 to
    192.0.2.2 / 2001:db8::1 to 2001:db8::2 (documentation prefixes); AH (51) an Authentication
    Header without ICV whose next header is 59. Payload bytes only: no nPrint
    bit changes (rows too short for them get protocol 253 / next header 59 in repair)."""
    bare = _no_transport(layout, is_, len(m))
    proto = np.full(len(m), -1, dtype=np.int64)
    if "ipv4" in layout.headers:
        proto = np.where(is_["ipv4"], values("ipv4_proto"), proto)
    if "ipv6" in layout.headers:
        proto = np.where(is_["ipv6"], values("ipv6_nh"), proto)
    inner_len = ends - l4_start
    for number, size in SYNTHETIC_PAYLOAD_BYTES.items():
        sel = np.flatnonzero(bare & (proto == number) & (inner_len >= size))
        if not len(sel):
            continue
        n = inner_len[sel]
        head = np.zeros((len(sel), size), dtype=np.int64)
        if number == IGMP_PROTO:  # the rest of the message is zero: the checksum covers it as is
            head[:, 0], head[:, 4:8] = 0x16, (224, 0, 0, 251)
            ck = _words_checksum(head)
            head[:, 2], head[:, 3] = ck >> 8, ck & 0xFF
        elif number == 4:
            head[:, 0] = 0x45
            head[:, 2], head[:, 3] = n >> 8 & 0xFF, n & 0xFF
            head[:, 8], head[:, 9] = 64, 253
            head[:, 12:16] = (192, 0, 2, 1)
            head[:, 16:20] = (192, 0, 2, 2)
            ck = _words_checksum(head)
            head[:, 10], head[:, 11] = ck >> 8, ck & 0xFF
        elif number == AH_PROTO:  # next header 59, length 1 (12 bytes, no ICV), SPI 256, sequence 1
            head[:, 0], head[:, 1], head[:, 6], head[:, 11] = 59, 1, 1, 1
        else:
            inner_payload = n - size
            head[:, 0] = 0x60
            head[:, 4], head[:, 5] = inner_payload >> 8 & 0xFF, inner_payload & 0xFF
            head[:, 6], head[:, 7] = 59, 64
            head[:, 8:12] = (0x20, 0x01, 0x0D, 0xB8)
            head[:, 23] = 1
            head[:, 24:28] = (0x20, 0x01, 0x0D, 0xB8)
            head[:, 39] = 2
        buf[l4_start[sel, None] + np.arange(size)[None, :]] = head.astype(np.uint8)


def build_packets(layout: Layout, m: np.ndarray, is_: dict[str, np.ndarray], payload: np.ndarray,
                  payload_mode: str = "zero", rng: np.random.Generator | None = None,
                  gap_before: np.ndarray | None = None, changed_bits: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """IP packets of repaired rows as one buffer with offsets; L4 checksums fixed in ``m`` too.

    Returns ``(buffer, starts, ends, zero_from, changed)``: ``buffer[zero_from[i]:ends[i]]`` is
    known to be all zeros (zero payloads), so a writer may leave it as a hole; ``changed``: per L4
    checksum field, the rows whose checksum bits changed (only fields where some did), and each
    row's number of changed bits is added to ``changed_bits`` when given (the repair report's
    ``l4_checksum`` rule: counted as written, in the same pass). ``gap_before`` as in
    :func:`build_ip_buffer`."""
    n = len(m)
    cache: dict[str, np.ndarray] = {}

    def values(key: str) -> np.ndarray:  # field values of every row, each field read once
        if key not in cache:
            cache[key] = layout.field_values(m, key)
        return cache[key]

    info: dict[str, np.ndarray] = {}
    buf, starts, ends = build_ip_buffer(layout, m, payload_lengths=payload, payload=payload_mode, rng=rng,
                                        gap_before=gap_before, info=info)
    # the checksums are computed with their own field as zero: zero those bytes as written (repaired
    # rows: the fixed part of each header of is_ is complete, so this is the same as zeroing the
    # field's bits before the bytes are built)
    for i, h in enumerate(L4_HEADERS):
        if h in L4_CKSUM and h in layout.headers:
            off = layout.field(L4_CKSUM[h]).offset // 8
            rows = np.flatnonzero(is_[h] & (info["l4_choice"] == i))
            at = starts[rows] + info["l3"][rows] + off
            for k in (0, 1):
                buf[at[info["l4"][rows] > off + k] + k] = 0
    l3_len = np.zeros(n, dtype=np.int64)
    if "ipv4" in layout.headers:
        v4 = is_["ipv4"]
        l3_len[v4] = values("ipv4_hl")[v4] * 4
    if "ipv6" in layout.headers:
        l3_len[is_["ipv6"]] = 40
    l4_start = starts + l3_len
    if payload_mode == "random":
        _zero_bare_payloads(buf, l4_start, ends, _no_transport(layout, is_, n))
    if "icmp" in layout.headers and "ipv4" in layout.headers:
        _quote_datagrams(layout, m, is_, buf, l4_start, ends)
    icmpv6 = _bare_icmpv6(layout, m, is_, buf, l4_start, ends, values)
    _bare_ipv6_extensions(layout, m, is_, buf, l4_start, ends, values)
    _synthetic_payloads(layout, m, is_, buf, l4_start, ends, values)
    # zero payloads: only the L4 header (<= 60 bytes) and an ICMP quote can be non-zero
    stops = np.minimum(ends, l4_start + _NONZERO_SPAN) if payload_mode == "zero" else ends
    total = np.empty(n, dtype=np.int64)
    _segment_sums(buf, l4_start, stops, total)
    seg_len = ends - l4_start
    pseudo = np.zeros(n, dtype=np.int64)
    if "ipv4" in layout.headers:
        v4 = is_["ipv4"]
        proto = values("ipv4_proto")[v4]
        l4_len = seg_len[v4]
        if "udp" in layout.headers:
            # a first fragment (MF set): the checksum covers the whole datagram, whose length is
            # the UDP length field; its bytes beyond this packet are zero payload (sum 0)
            frag = (values("ipv4_mfbit")[v4] == 1) & is_["udp"][v4]
            l4_len = np.where(frag, values("udp_len")[v4], l4_len)
        pseudo[v4] = _addr_sum(layout, m, ("ipv4_src", "ipv4_dst"), v4) + np.where(proto == IP_PROTO["icmp"], 0,
                                                                                   proto + l4_len)
    if "ipv6" in layout.headers:
        v6 = is_["ipv6"]
        nh = values("ipv6_nh")[v6]
        pseudo[v6] = (_addr_sum(layout, m, ("ipv6_src", "ipv6_dst"), v6)
                      + (seg_len[v6] >> 16) + (seg_len[v6] & 0xFFFF) + nh)
    if len(icmpv6):
        ck = fold_checksum(total[icmpv6] + pseudo[icmpv6])
        buf[l4_start[icmpv6] + 2] = ck >> 8
        buf[l4_start[icmpv6] + 3] = ck & 0xFF
    changed: dict[str, np.ndarray] = {}
    counts = changed_bits if changed_bits is not None else np.zeros(n, dtype=np.int64)
    for h, key in L4_CKSUM.items():
        if h not in layout.headers:
            continue
        if layout.field(key).width != 16:
            raise ValueError(f"{key}: a 16-bit checksum field expected")
        rows = np.flatnonzero(is_[h])
        if not len(rows):
            continue
        ck = fold_checksum(total[rows] + pseudo[rows])
        if h == "icmp":
            v4_icmp = values("ipv4_proto")[rows] == IP_PROTO["icmp"] \
                if "ipv4" in layout.headers else np.zeros(len(rows), dtype=bool)
            ck = np.where(v4_icmp, fold_checksum(total[rows]), ck)
        if h == "udp":
            ck = np.where(ck == 0, 0xFFFF, ck)
        rows_changed = np.zeros((1, n), dtype=bool)
        start = layout.field_slice(key).start
        if W.put(W.words_of(m), np.ascontiguousarray(rows, dtype=np.int64), len(rows) == n,
                 np.array([start], dtype=np.int64), np.array([16], dtype=np.int64),
                 np.ascontiguousarray(ck, dtype=np.int64).reshape(-1, 1), False,
                 counts, rows_changed, np.zeros(1, dtype=np.int64))[0]:
            changed[key] = rows_changed[0]
        off = l4_start[rows] + layout.field(key).offset // 8
        buf[off] = ck >> 8
        buf[off + 1] = ck & 0xFF
    zero_from = np.minimum(ends, l4_start + _NONZERO_SPAN) if payload_mode == "zero" else ends
    return buf, starts, ends, zero_from, changed
