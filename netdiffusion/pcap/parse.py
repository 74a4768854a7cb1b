"""Vectorized link / network / transport parsing of a :class:`RecordBatch`.

Every step works on whole batches with numpy fancy indexing: a fixed-size window of bytes is
gathered per record (zeros past the captured length), and header fields are read from columns.

Rules (documented in docs/encode.md, each outcome counted by reason):

- link layers: Ethernet II (802.1Q / 802.1ad / QinQ tags skipped, up to 3), Linux cooked SLL and
  SLL2 (each also with a PPPoE session or an MPLS stack of up to 5 labels inside), raw IP (101, 12, 14, 228, 229), BSD null / loopback (0, 108), PPP and Cisco HDLC (9, 50,
  104; HDLC-like, Cisco or no framing, compressed protocol field). Other link types -> skipped
  as ``unsupported_linktype``; frames that are not IPv4 / IPv6 -> ``non_ip``.
- IPv4: header length < 20 or version mismatch -> ``bad_ip_header``; header not fully captured
  -> ``truncated_l3``; non-first fragments (offset > 0) -> ``ip_fragment`` (they carry no
  transport header); first fragments are encoded like any packet.
- IPv6: the fixed 40 bytes must be captured (else ``truncated_l3``); the transport header is read
  only when the next header is TCP / UDP / ICMP directly (as nPrint does).
- transport: TCP (data offset >= 5, else ``bad_l4_header``), UDP, ICMP (protocol 1, nPrint's icmp
  header). The fixed part must be captured (else ``truncated_l4``); TCP options cut by the snap
  length are kept as far as captured and the rest is absent (counted ``truncated_options``).
  Any other protocol (ICMPv6, IGMP, GRE, ESP, IPv6 extension headers...) -> the packet keeps its
  network header only (counted ``unknown_l4``) and forms flows by addresses + protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netdiffusion.pcap.reader import RecordBatch

L3_WINDOW = 60  # max IPv4 header
L4_WINDOW = 60  # max TCP header
LINK_WINDOW = 32

L3_NONE, L3_IPV4, L3_IPV6 = -1, 0, 1
L4_NONE, L4_TCP, L4_UDP, L4_ICMP = -1, 0, 1, 2
PROTO_OF_L4 = np.array([6, 17, 1], dtype=np.int64)

SKIP_REASONS = ("unsupported_linktype", "non_ip", "bad_ip_header", "truncated_l3", "ip_fragment",
                "bad_l4_header", "truncated_l4")
NOTE_REASONS = ("unknown_l4", "truncated_options")

_VLAN_TYPES = (0x8100, 0x88A8, 0x9100)


def gather(data: np.ndarray, starts: np.ndarray, available: np.ndarray, width: int) -> np.ndarray:
    """``(n, width)`` uint8: bytes at ``starts`` per row, zero past ``available`` bytes."""
    cols = np.arange(width, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    data = np.ascontiguousarray(data, dtype=np.uint8)  # a no-op for a batch's buffer
    if len(data) >= width:
        # rows of a zero-copy sliding window: one contiguous copy per row, no index matrix
        # (built with the ndarray constructor: sliding_window_view's checks cost more than the copy)
        windows = np.ndarray((len(data) - width + 1, width), np.uint8, buffer=data, strides=(1, 1))
        inside = (starts >= 0) & (starts <= len(data) - width)
        if inside.all():  # every window inside the buffer (all but the last batch's last records)
            out = windows[starts]
            edge = np.zeros(0, dtype=np.int64)
        else:
            out = np.empty((len(starts), width), dtype=np.uint8)
            out[inside] = windows[starts[inside]]
            edge = np.flatnonzero(~inside)
    else:
        out = np.empty((len(starts), width), dtype=np.uint8)
        edge = np.arange(len(starts))
    if len(edge):  # windows running past the buffer's end (only the last records)
        idx = np.clip(starts[edge, None] + cols[None, :], 0, max(len(data) - 1, 0))
        out[edge] = data[idx] if len(data) else 0
    available = np.asarray(available)
    short = np.flatnonzero(available < width)  # only these rows have bytes to zero (few, usually)
    if len(short):
        out[short] = np.where(cols[None, :] >= available[short, None], 0, out[short])
    return out


_L4_PARSE_BYTES = 13  # bytes 0..12 of a transport header: ports, ICMP type / identifier, TCP data offset


def _be16(window: np.ndarray, col: np.ndarray | int) -> np.ndarray:
    if isinstance(col, int):  # a fixed column: two column views, no fancy indexing
        return (window[:, col].astype(np.int64) << 8) | window[:, col + 1]
    rows = np.arange(window.shape[0])
    return (window[rows, col].astype(np.int64) << 8) | window[rows, np.asarray(col) + 1]


@dataclass
class Parsed:
    """Per-record parse results of one batch (all arrays length n = records)."""

    reason: np.ndarray  # int8 index into SKIP_REASONS, -1 = kept
    l3: np.ndarray  # L3_* kind
    l3_len: np.ndarray  # header bytes encoded
    l3_bytes: np.ndarray  # (n, 60) uint8
    l4: np.ndarray  # L4_* kind
    l4_len: np.ndarray
    proto: np.ndarray  # IP protocol / next header
    src_words: np.ndarray  # (n, 2) uint64: the source address's 16 bytes as big-endian words
    dst_words: np.ndarray
    sport: np.ndarray  # int64 (ICMP: query identifier, 0 for errors)
    dport: np.ndarray
    kind: np.ndarray  # int64 flow-key qualifier: ICMP type (request/reply paired) + 1, else 0
    notes: dict[str, int]
    l4_start: np.ndarray  # offset of the transport header in the batch's buffer
    l4_avail: np.ndarray  # its bytes captured (and inside the IP packet)
    data: np.ndarray  # the batch's buffer

    def l4_window(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """``(rows, 60)`` uint8 transport header bytes (zeros past what was captured), gathered
        only for the rows asked: the encoder needs them for the packets it keeps, which in long
        flows are a small part of those read (flow keys only need ports, read directly)."""
        return gather(self.data, self.l4_start[rows], self.l4_avail[rows], L4_WINDOW)

    @property
    def l4_bytes(self) -> np.ndarray:  # (n, 60) uint8
        return self.l4_window()

    @property
    def src(self) -> np.ndarray:  # (n, 16) uint8, IPv4 in the last 4 bytes
        return self.src_words.astype(">u8").view(np.uint8).reshape(-1, 16)

    @property
    def dst(self) -> np.ndarray:
        return self.dst_words.astype(">u8").view(np.uint8).reshape(-1, 16)


def _pppoe_mpls(batch: RecordBatch, etype: np.ndarray, start: np.ndarray, l3off: np.ndarray,
                kind: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IP inside PPPoE sessions (0x8864) and MPLS label stacks (0x8847 / 0x8848) for rows whose
    Ethernet type is ``etype`` with the payload at ``start``; other rows are returned unchanged.

    PPPoE: 6-byte session header, then the PPP protocol (0x0021 IPv4, 0x0057 IPv6). MPLS: up to
    5 labels to the bottom-of-stack bit, then IPv4 / IPv6 by the version nibble (what tshark
    guesses too); anything else (a pseudowire control word, a deeper stack) stays non-IP."""
    sel = np.flatnonzero((etype == 0x8864) | (etype == 0x8847) | (etype == 0x8848))
    if not len(sel):
        return l3off, kind
    at = start[sel]
    ext = gather(batch.data, batch.offset[sel] + at, np.maximum(batch.caplen[sel] - at, 0), 24)
    pppoe = etype[sel] == 0x8864
    ppp = _be16(ext, 6)
    bottom = (ext[:, 2:20:4] & 1) == 1  # (rows, 5) bottom-of-stack bits of labels 1..5
    labels = np.where(bottom.any(axis=1), bottom.argmax(axis=1) + 1, 0)
    nibble = ext[np.arange(len(sel)), 4 * labels] >> 4
    new = np.where(pppoe, np.where(ppp == 0x0021, L3_IPV4, np.where(ppp == 0x0057, L3_IPV6, L3_NONE)),
                   np.where(labels == 0, L3_NONE,
                            np.where(nibble == 4, L3_IPV4, np.where(nibble == 6, L3_IPV6, L3_NONE))))
    l3off, kind = l3off.copy(), kind.copy()
    l3off[sel] = at + np.where(pppoe, 8, 4 * labels)
    kind[sel] = new
    return l3off, kind


def _link_offsets(batch: RecordBatch, link: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(l3 offset from frame start, L3 kind expected, supported link mask) per record, from each
    frame's first ``LINK_WINDOW`` bytes (``link``)."""
    n = len(batch)
    l3off = np.zeros(n, dtype=np.int64)
    kind = np.full(n, L3_NONE, dtype=np.int64)
    supported = np.ones(n, dtype=bool)
    lt = batch.linktype
    rows = np.arange(n)
    first_nibble = link[:, 0] >> 4
    # a pcap batch has one link type: then every "which link type" mask is a constant
    single = int(lt[0]) if n and lt[0] == lt[-1] and (lt == lt[0]).all() else None

    def of_type(*codes: int) -> np.ndarray:
        if single is not None:
            return np.full(n, single in codes)
        return np.isin(lt, codes)

    eth = of_type(1)
    if eth.any():
        off = np.full(n, 12, dtype=np.int64)
        etype = _be16(link, 12)
        for _ in range(3):
            tagged = eth & ((etype == 0x8100) | (etype == 0x88A8) | (etype == 0x9100))  # _VLAN_TYPES
            if not tagged.any():
                break
            off = np.where(tagged, off + 4, off)
            etype = np.where(tagged, _be16(link, np.minimum(off, LINK_WINDOW - 2)), etype)
        l3off = np.where(eth, off + 2, l3off)
        kind = np.where(eth & (etype == 0x0800), L3_IPV4, kind)
        kind = np.where(eth & (etype == 0x86DD), L3_IPV6, kind)
        l3off, kind = _pppoe_mpls(batch, np.where(eth, etype, 0), off + 2, l3off, kind)

    sll = of_type(113)
    if sll.any():
        proto = _be16(link, 14)
        l3off = np.where(sll, 16, l3off)
        kind = np.where(sll & (proto == 0x0800), L3_IPV4, kind)
        kind = np.where(sll & (proto == 0x86DD), L3_IPV6, kind)
        l3off, kind = _pppoe_mpls(batch, np.where(sll, proto, 0), np.full(n, 16), l3off, kind)
    sll2 = of_type(276)
    if sll2.any():
        proto = _be16(link, 0)
        l3off = np.where(sll2, 20, l3off)
        kind = np.where(sll2 & (proto == 0x0800), L3_IPV4, kind)
        kind = np.where(sll2 & (proto == 0x86DD), L3_IPV6, kind)
        l3off, kind = _pppoe_mpls(batch, np.where(sll2, proto, 0), np.full(n, 20), l3off, kind)

    raw = of_type(101, 12, 14)
    raw4, raw6 = of_type(228), of_type(229)
    if raw.any() or raw4.any() or raw6.any():
        kind = np.where(raw & (first_nibble == 4), L3_IPV4, kind)
        kind = np.where(raw & (first_nibble == 6), L3_IPV6, kind)
        kind = np.where(raw4, L3_IPV4, kind)
        kind = np.where(raw6, L3_IPV6, kind)

    null = of_type(0, 108)
    if null.any():
        le = link[:, 0].astype(np.int64) | (link[:, 1].astype(np.int64) << 8)
        be = (link[:, 2].astype(np.int64) << 8) | link[:, 3]
        family = np.where(lt == 108, be, np.where(le != 0, le, be))
        l3off = np.where(null, 4, l3off)
        kind = np.where(null & (family == 2), L3_IPV4, kind)
        kind = np.where(null & np.isin(family, (10, 23, 24, 26, 28, 30)), L3_IPV6, kind)

    # PPP (9), PPP in HDLC framing (50), Cisco HDLC (104). A frame starts with ff 03 (PPP in
    # HDLC-like framing, RFC 1662), 0f/8f 00 (Cisco HDLC: an Ethernet type follows; also found
    # under 9 and 50, as tshark and libpcap accept) or, for PPP without framing, the PPP protocol
    # directly: 2 bytes, or 1 when compressed (odd first byte). IPv4 is PPP protocol 0x21, IPv6 0x57.
    ppp = of_type(9, 50, 104)
    if ppp.any():
        b0, b1 = link[:, 0], link[:, 1]
        cisco = (lt == 104) | (((b0 == 0x0F) | (b0 == 0x8F)) & (b1 == 0x00))
        start = np.where(cisco | ((b0 == 0xFF) & (b1 == 0x03)), 2, 0)
        first = link[rows, start]
        short = ~cisco & (first & 1 == 1)
        proto = np.where(short, first, _be16(link, start))
        l3off = np.where(ppp, start + np.where(short, 1, 2), l3off)
        kind = np.where(ppp & np.where(cisco, proto == 0x0800, proto == 0x21), L3_IPV4, kind)
        kind = np.where(ppp & np.where(cisco, proto == 0x86DD, proto == 0x57), L3_IPV6, kind)
        # MPLS: PPP protocols 0x0281 / 0x0283 (RFC 3032), as Ethernet types 0x8847 / 0x8848 under
        # Cisco HDLC (tcpdump's mpls-traceroute.pcap: half its packets were counted non-IP)
        mpls = np.where(proto == 0x0281, 0x8847, np.where(proto == 0x0283, 0x8848, 0))
        etype = np.where(ppp, np.where(cisco, proto, np.where(short, 0, mpls)), 0)
        l3off, kind = _pppoe_mpls(batch, etype, start + 2, l3off, kind)

    supported = eth | sll | sll2 | raw | null | ppp | raw4 | raw6
    del rows
    return l3off, kind, supported


_ETHERNET = 14  # bytes of an untagged Ethernet header


def _address_words(l3win: np.ndarray, v4: np.ndarray, v6: np.ndarray, at4: int, at6: int) -> np.ndarray:
    """``(n, 2)`` uint64: each packet's address as 16 big-endian bytes read as two numbers (IPv6
    from ``at6``; IPv4 from ``at4`` in the low word; 0 otherwise). Flow keys compare and hash
    these words; :attr:`Parsed.src` gives the bytes."""
    words = np.zeros((len(l3win), 2), dtype=np.uint64)
    hi, lo = l3win[:, at6:at6 + 8].view(">u8")[:, 0], l3win[:, at6 + 8:at6 + 16].view(">u8")[:, 0]
    four = l3win[:, at4:at4 + 4].view(">u4")[:, 0]
    if v6.all():  # one-family batches (the usual case): plain copies, no select
        words[:, 0], words[:, 1] = hi, lo
    elif v4.all():
        words[:, 1] = four
    else:
        words[:, 0] = np.where(v6, hi, 0)
        words[:, 1] = np.where(v6, lo, np.where(v4, four, 0))
    return words


def parse_batch(batch: RecordBatch) -> Parsed:
    """Parse link, network and transport headers of every record in ``batch``."""
    n = len(batch)
    reason = np.full(n, -1, dtype=np.int8)

    def skip(mask: np.ndarray, name: str) -> None:
        reason[mask & (reason < 0)] = SKIP_REASONS.index(name)

    # one gather serves the link header and, behind a plain 14-byte Ethernet header (the common
    # case), the network header too; other rows get their own network-header gather
    frame = gather(batch.data, batch.offset, batch.caplen, _ETHERNET + L3_WINDOW)
    l3off, l3, supported = _link_offsets(batch, frame[:, :LINK_WINDOW])
    skip(~supported, "unsupported_linktype")
    skip(l3 == L3_NONE, "non_ip")
    l3avail = np.maximum(batch.caplen - l3off, 0)
    elsewhere = np.flatnonzero(l3off != _ETHERNET)
    if len(elsewhere) == n:
        l3win = gather(batch.data, batch.offset + l3off, l3avail, L3_WINDOW)
    else:
        l3win = frame[:, _ETHERNET:]
        if len(elsewhere):
            l3win = l3win.copy()
            l3win[elsewhere] = gather(batch.data, batch.offset[elsewhere] + l3off[elsewhere], l3avail[elsewhere],
                                      L3_WINDOW)
    version = l3win[:, 0] >> 4
    v4 = l3 == L3_IPV4
    v6 = l3 == L3_IPV6
    skip(v4 & (version != 4), "bad_ip_header")
    skip(v6 & (version != 6), "bad_ip_header")

    ihl = (l3win[:, 0] & 0x0F).astype(np.int64) * 4
    l3_len = np.where(v4, ihl, np.where(v6, 40, 0))
    skip(v4 & (ihl < 20), "bad_ip_header")
    skip((v4 | v6) & (l3avail < np.maximum(l3_len, 1)), "truncated_l3")
    total4 = _be16(l3win, 2)
    frag_off = _be16(l3win, 6) & 0x1FFF
    skip(v4 & (frag_off > 0), "ip_fragment")
    proto = np.where(v4, l3win[:, 9], np.where(v6, l3win[:, 6], -1)).astype(np.int64)
    plen6 = _be16(l3win, 4)

    # bytes of the transport header available: captured, and inside the IP packet when its
    # length field is sane (TSO captures carry ip.len 0; then the capture decides)
    l4avail = l3avail - l3_len
    inside = np.where(v4 & (total4 >= l3_len), total4 - l3_len, np.where(v6 & (plen6 > 0), plen6, l4avail))
    l4avail = np.maximum(np.minimum(l4avail, inside), 0)
    l4 = np.full(n, L4_NONE, dtype=np.int64)
    l4 = np.where(proto == 6, L4_TCP, l4)
    l4 = np.where(proto == 17, L4_UDP, l4)
    l4 = np.where(proto == 1, L4_ICMP, l4)
    l4 = np.where(reason < 0, l4, L4_NONE)
    # the few transport bytes parsing needs (ports / ICMP type and identifier, TCP data offset),
    # read directly; whole header windows are gathered later, only for the packets kept
    l4start = batch.offset + l3off + l3_len
    l4win = gather(batch.data, l4start, l4avail, _L4_PARSE_BYTES)
    doff = (l4win[:, 12] >> 4).astype(np.int64) * 4
    fixed = np.where(l4 == L4_TCP, 20, np.where(l4 >= 0, 8, 0))
    skip((l4 >= 0) & (l4avail < fixed), "truncated_l4")
    skip((l4 == L4_TCP) & (doff < 20) & (l4avail >= 20), "bad_l4_header")
    l4_len = np.where(l4 == L4_TCP, np.minimum(doff, l4avail), fixed)

    kept = reason < 0
    notes = {
        "unknown_l4": int((kept & (l4 == L4_NONE)).sum()),
        "truncated_options": int((kept & (l4 == L4_TCP) & (doff > l4avail)).sum()),
    }

    # addresses as two big-endian words each: a handful of 1-D operations, no row-wise byte copies
    src, dst = _address_words(l3win, v4, v6, 12, 8), _address_words(l3win, v4, v6, 16, 24)
    sport = np.zeros(n, dtype=np.int64)
    dport = np.zeros(n, dtype=np.int64)
    ported = (l4 == L4_TCP) | (l4 == L4_UDP)
    sport = np.where(ported, _be16(l4win, 0), sport)
    dport = np.where(ported, _be16(l4win, 2), dport)
    # ICMP: queries pair by identifier (request and reply share a key), errors by type
    kind = np.zeros(n, dtype=np.int64)
    icmp = l4 == L4_ICMP
    if icmp.any():
        itype = l4win[:, 0].astype(np.int64)
        query = np.isin(itype, (0, 8, 13, 14, 15, 16, 17, 18))
        # request/reply share a key: echo 8/0 -> 8, timestamp 13/14 -> 13, info 15/16, mask 17/18
        pair = np.where(np.isin(itype, (0, 8)), 8, itype - (itype % 2 == 0))
        ident = np.where(query, _be16(l4win, 4), 0)
        sport = np.where(icmp, ident, sport)
        dport = np.where(icmp, ident, dport)
        kind = np.where(icmp, np.where(query, pair, itype) + 1, kind)  # +1: never 0 for ICMP

    return Parsed(reason=reason, l3=np.where(kept, l3, L3_NONE), l3_len=np.where(kept, l3_len, 0),
                  l3_bytes=l3win, l4=np.where(kept, l4, L4_NONE), l4_len=np.where(kept & (l4 >= 0), l4_len, 0),
                  proto=proto, src_words=src, dst_words=dst, sport=sport, dport=dport, kind=kind,
                  notes=notes, l4_start=l4start, l4_avail=l4avail, data=batch.data)
