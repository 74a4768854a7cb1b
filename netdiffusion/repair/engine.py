"""Bit-level protocol repair of nPrint rows, vectorized over all packets of many flows.

The input is a matrix of rows sorted by flow then packet position (``flow`` gives each row's dense
flow index). Rules run in dependency order; every write goes through :meth:`Repairer._put` which
counts, per packet, how many bits each rule changed and which fields changed, so the report can
say exactly what repair did. Rules only rewrite what is invalid: real traffic passes unchanged
(see ``docs/repair.md`` for the precise list and the decisions behind it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from netdiffusion import bitwords as W
from netdiffusion.fields import ABSENT, HEADERS, IP_PROTO, Layout, bytes_to_bits, packed_bytes, row_counts
from netdiffusion.repair import groups as G
from netdiffusion.repair import tcp as T

L3 = ("ipv4", "ipv6")
L4 = ("tcp", "udp", "icmp")
ICMPV6_PROTO = 58
IPV6_NO_NEXT_HEADER = 59  # RFC 8200 §4.7
IGMP_PROTO = 2  # IPv4 only
# IPv6 extension headers and IPv6-only protocols: never real after an IPv4 header, and tshark
# dissects a zero payload behind them as a malformed Hop-by-Hop chain (HOPOPT, Routing, Fragment,
# ICMPv6, Destination Options, Mobility, HIP, Shim6)
IPV6_ONLY_PROTOS = (0, 43, 44, 58, 60, 135, 139, 140)
# protocols whose all-zero payload (8 or 100 bytes) `validate`'s tshark reports as malformed or as
# an expert error, and which repair has no message for (DCCP, XTP, DSR, AH, SWIPE, NARP, EIGRP,
# AX.25, UDP-Lite): a row of them without a transport header gets protocol 253 / next header 59
ZERO_PAYLOAD_MALFORMED = (33, 36, 48, 51, 53, 54, 88, 93, 136)
# protocols without an nPrint header whose payload the packet builder starts with a message of
# this many bytes: an IGMPv2 membership report (IPv4 only), or an inner IPv4 / IPv6 header for
# IP-in-IP (4) and IPv6-in-IP (41) tunnels; rows with less payload get protocol 253 / next header 59
SYNTHETIC_PAYLOAD_BYTES = {IGMP_PROTO: 8, 4: 20, 41: 40}
# protocols whose zero payload `validate`'s tshark calls malformed when shorter than this many bytes
# (their fixed header): IGRP, ESP, OSPF, EtherIP, PIM, IPComp, VRRP, Ethernet (143), NCS heartbeat
# (224); measured for 0-40 zero bytes behind IPv4 and IPv6 (scripts/proto_min_sizes.py). Real packets are
# never that short; corrupted IP lengths are: such rows get protocol 253 / next header 59
SHORT_PAYLOAD_MALFORMED = {9: 12, 50: 8, 89: 14, 97: 16, 103: 4, 108: 4, 112: 8, 143: 14, 224: 12}
# the 8 bytes that start the payload of an IPv6 row whose next header is one of these extension
# headers (nPrint does not encode them): a minimal header of that kind whose next header is 59
IPV6_EXTENSION_PAYLOADS = {
    0: (IPV6_NO_NEXT_HEADER, 0, 1, 4, 0, 0, 0, 0),  # Hop-by-Hop: PadN over 6 bytes
    44: (IPV6_NO_NEXT_HEADER, 0, 0, 0, 0, 0, 0, 0),  # Fragment: offset 0, last, id 0
    60: (IPV6_NO_NEXT_HEADER, 0, 1, 4, 0, 0, 0, 0),  # Destination Options: PadN
}

# TCP option kind -> (min length, max length, SYN only); anything else ends the option list.
TCP_OPTIONS: dict[int, tuple[int, int, bool]] = {
    2: (4, 4, True),  # MSS
    3: (3, 3, True),  # window scale
    4: (2, 2, True),  # SACK permitted
    5: (10, 34, False),  # SACK blocks (8 bytes each)
    8: (10, 10, False),  # timestamps
}
TCP_WSCALE, TCP_MAX_WSCALE = 3, 14  # window scale option: its shift (byte 2) is at most 14 (RFC 7323)
TCP_TIMESTAMPS = 8  # TSval at byte 2, TSecr at byte 6
# IPv4 options kept: router alert (RFC 2113); EOL/NOP are always allowed.
IPV4_OPTIONS: dict[int, tuple[int, int, bool]] = {148: (4, 4, False)}
# ICMP type -> valid codes for types whose body needs nothing beyond the 8-byte header.
ICMP_TYPES_V4 = {0: (0,), 8: (0,), 3: tuple(range(16)), 4: (0,), 5: (0, 1, 2, 3), 11: (0, 1), 12: (0, 1, 2)}
# error messages quote the offending datagram: repair writes a minimal IPv4+UDP quote (28 bytes)
ICMP_ERRORS_V4 = (3, 4, 5, 11, 12)
ICMP_QUOTE_BYTES = 28
ICMP_TYPES_V6 = {128: (0,), 129: (0,)}

Arr = np.ndarray

RULES = ("stack", "options", "ipv4", "ipv6", "tcp_fields", "udp", "icmp", "endpoints", "lengths",
         "tcp_flags", "tcp_seq", "tcp_ack", "tcp_window", "tcp_options", "ip_id", "ipv4_checksum", "l4_checksum")

@dataclass
class RepairConfig:
    """Tunable rules. Defaults follow the paper where it is specific and the RFCs elsewhere."""

    stack: str = "flow"  # "flow": highest share of non-absent bits summed over the flow; "packet": per row
    min_share: float = 0.5  # an L4 header needs at least this share of present bits (else none)
    padding_share: float = 0.5  # rows whose best L3 share is below this are padding, not packets
    mtu: int = 1500  # IP packet size limit; real GRO/TSO captures need 65535
    default_ttl: int = 64
    anonymize: bool = False
    private_v4: str = "10.0.0.0/8"
    private_v6: str = "fd00::/8"
    gaps: str = "close"  # "close": no segment may be missing; "keep": keep confirmed capture gaps
    ack_window: int = 1 << 24  # how far behind the peer's first sequence an early ACK may point
    ip_id_step_max: int = 4096  # an IP ID counter step larger than this (both sides) is an outlier
    default_iat_ns: int = 1_000_000  # mean inter-arrival when the dataset has no usable timestamps
    seed: int = 0

    @classmethod
    def from_rules(cls, **rules: object) -> RepairConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(rules) - known
        if unknown:
            raise ValueError(f"unknown repair rule option(s) {sorted(unknown)}; known: {sorted(known)}")
        cfg = cls(**rules)  # type: ignore[arg-type]
        if cfg.gaps not in ("close", "keep"):
            raise ValueError(f"gaps must be 'close' or 'keep', not {cfg.gaps!r}")
        if cfg.stack not in ("flow", "packet"):
            raise ValueError(f"stack must be 'flow' or 'packet', not {cfg.stack!r}")
        # IPv6's minimum link MTU (RFC 8200 §5; below it a tunnel row's inner header was cut into a
        # malformed packet) up to the largest IPv4 total length
        if not 1280 <= cfg.mtu <= 65535:
            raise ValueError(f"mtu must be between 1280 and 65535, not {cfg.mtu}")
        return cfg


@dataclass
class RepairResult:
    """Repaired rows (padding rows removed) and per-packet accounting of what changed."""

    matrix: np.ndarray
    keep: np.ndarray  # rows of the input that are packets (the rest were padding)
    flow: np.ndarray  # dense flow index per kept row
    direction: np.ndarray
    payload: np.ndarray  # payload bytes per kept row
    timestamp: np.ndarray  # ns since the flow's first packet, non-decreasing per flow
    bits: dict[str, np.ndarray] = field(default_factory=dict)  # rule -> bits changed per row
    fields: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (rule, field) -> changed
    timestamps_generated: np.ndarray | None = None  # per flow: default timing used


def _pack_rows(flags: np.ndarray) -> np.ndarray:
    """Each row of a 2-D bool array (at most 62 wide) as the integer its bits spell, first bit
    most significant (int64)."""
    width = flags.shape[1]
    packed = np.packbits(flags, axis=1)  # trailing bits of the last byte are 0
    nb = packed.shape[1]
    if nb in (1, 2, 4, 8):  # one big-endian word per row
        values = packed.view(f">u{nb}")[:, 0].astype(np.int64)
    else:
        values = packed[:, 0].astype(np.int64)
        for j in range(1, nb):
            values = (values << 8) | packed[:, j]
    return values >> (8 * nb - width) if width % 8 else values


def _bits_to_values(bits: np.ndarray) -> np.ndarray:
    """Big-endian value of each row of 1/0/-1 bits (<= 62 wide); -1 where any bit is absent
    (negative); a bit counts as set where it is positive."""
    if bits.shape[1] == 1:  # 1 / 0 / -1 for a positive / zero / negative bit: its sign
        return np.sign(bits[:, 0]).astype(np.int64)
    values = _pack_rows(bits > 0)
    values[_pack_rows(bits < 0) != 0] = -1
    return values


def _words(bits: np.ndarray) -> np.ndarray:
    """Rows of 0/1 bits -> int64 32-bit words (for address keys)."""
    return np.packbits(bits > 0, axis=1).view(">u4").astype(np.int64)


def _private_hosts(prefix: str, v6: bool, index: np.ndarray) -> np.ndarray:
    """Bits of host ``index`` (>= 1) inside a private prefix, as (n, 32|128) int8."""
    import ipaddress

    net = ipaddress.ip_network(prefix, strict=False)
    width = 128 if v6 else 32
    if (net.version == 6) != v6:
        raise ValueError(f"{prefix} is not an IPv{6 if v6 else 4} prefix")
    host_bits = min(width - net.prefixlen, 62)
    size = (1 << host_bits) - 2
    host = (np.asarray(index, dtype=np.int64) % max(size, 1)) + 1
    base = int(net.network_address)
    out = np.zeros((len(host), width), dtype=np.int8)
    for i in range(width):
        out[:, i] = (base >> (width - 1 - i)) & 1
    shifts = np.arange(host_bits - 1, -1, -1, dtype=np.int64)
    out[:, width - host_bits:] = ((host[:, None] >> shifts) & 1).astype(np.int8)
    return out


def _bad_source(words: np.ndarray, v6: bool) -> np.ndarray:
    """Addresses that may not send: unspecified, loopback, multicast, reserved/broadcast."""
    if v6:
        top = words[:, 0]
        zero_hi = (words[:, :3] == 0).all(axis=1)
        return ((top >> 24) == 0xFF) | (zero_hi & (words[:, 3] <= 1))
    a = words[:, 0]
    first = a >> 24
    return (first == 0) | (first == 127) | (first >= 224)


PORT_FIELDS = {"tcp": ("tcp_sprt", "tcp_dprt"), "udp": ("udp_sport", "udp_dport")}


def _loopback(words: np.ndarray, v6: bool) -> np.ndarray:
    """127.0.0.0/8 and ::1: fine in a conversation held entirely on one host (captures on ``lo``)."""
    if v6:
        return (words[:, :3] == 0).all(axis=1) & (words[:, 3] == 1)
    return (words[:, 0] >> 24) == 127


def _bad_destination(words: np.ndarray, v6: bool) -> np.ndarray:
    """Addresses nothing can be sent to: unspecified, loopback (multicast/broadcast are fine)."""
    if v6:
        zero_hi = (words[:, :3] == 0).all(axis=1)
        return zero_hi & (words[:, 3] <= 1)
    first = words[:, 0] >> 24
    return (first == 0) | (first == 127)


class Repairer:
    """Applies the rules to one batch of flows; see :func:`repair_matrix`."""

    def __init__(self, layout: Layout, matrix: np.ndarray, flow: np.ndarray, cfg: RepairConfig,
                 copy: bool = True) -> None:
        if not set(L3) & set(layout.headers):
            raise ValueError(f"the layout ({', '.join(layout.headers)}) has no network header ({' or '.join(L3)}): "
                             "no packet can be built")
        self.layout = layout
        matrix = np.asarray(matrix)
        copy = copy or matrix.dtype != np.int8 or not matrix.flags.writeable  # e.g. a read-only Arrow buffer
        self.m = np.array(matrix, dtype=np.int8, copy=True) if copy else matrix
        self.flow = np.asarray(flow, dtype=np.int64)
        self.cfg = cfg
        self.n = self.m.shape[0]
        self.nflows = int(self.flow.max()) + 1 if self.n else 0
        self.bits: dict[str, np.ndarray] = {r: np.zeros(self.n, dtype=np.int64) for r in RULES}
        self.fields: dict[tuple[str, str], np.ndarray] = {}

    # -- accounting -------------------------------------------------------------------------------
    def _put_bits(self, rule: str, key: str, rows: np.ndarray, cols: slice, new: np.ndarray) -> None:
        if not len(rows):
            return
        every = len(rows) == self.n  # rows are sorted and unique: all of them, read as a view
        old = self.m[:, cols] if every else self.m[rows, cols]
        counts = row_counts(old != new)
        changed = counts > 0
        if changed.any():
            self.bits[rule][rows] += counts
            mask = self.fields.setdefault((rule, key), np.zeros(self.n, dtype=bool))
            mask[rows[changed]] = True
            if changed.all():
                self.m[slice(None) if every else rows, cols] = new
            else:  # only the rows that change (e.g. blanking headers that are mostly absent already)
                new = np.broadcast_to(new, old.shape)
                self.m[rows[changed], cols] = new[changed]

    def _record(self, rule: str, key: str, rows: np.ndarray, counts: np.ndarray) -> None:
        """Count ``counts`` changed bits of ``rule`` at ``rows`` (the bits are written by the caller)."""
        changed = counts > 0
        if changed.any():
            self.bits[rule][rows] += counts
            mask = self.fields.setdefault((rule, key), np.zeros(self.n, dtype=bool))
            mask[rows[changed]] = True

    def _put(self, rule: str, key: str, rows: np.ndarray, values: np.ndarray | int) -> None:
        """Write integer ``values`` into field ``key`` of ``rows``, counting changed bits.

        Same accounting as :meth:`_put_bits` with the field's bits, but compared as integers: the
        bits equal to 1 and those equal to 0 are packed into one integer each per row, and only the
        rows that change get their bits built and written."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        if not len(rows):
            return
        f = self.layout.field(key)
        sl = self.layout.field_slice(f)
        full = (1 << f.width) - 1
        new = np.broadcast_to(np.asarray(values, dtype=np.int64), (len(rows),)) & full  # the bits written
        every = len(rows) == self.n  # rows are sorted and unique: all of them, read as a view
        if f.width == 1:
            counts = ((self.m[:, sl.start] if every else self.m[rows, sl.start]) != new).astype(np.int64)
            blk = None
        elif self._words_ok(sl):
            blk, a0, k = W.block(self.m, None if every else rows, sl)
            at0, at1 = sl.start - a0, sl.stop - a0
            new_words = W.spread(new, at0, at1, k)
            counts = W.differing(blk, new_words, at0, at1)
        else:
            old = self.m[:, sl] if every else self.m[rows, sl]
            same = (_pack_rows(old == 1) & new) | (_pack_rows(old == 0) & ~new & full)
            counts = f.width - np.bitwise_count(same).astype(np.int64)
            blk = None
        changed = counts > 0
        if not changed.any():
            return
        self.bits[rule][rows] += counts
        mask = self.fields.setdefault((rule, key), np.zeros(self.n, dtype=bool))
        at = rows[changed]
        mask[at] = True
        if blk is not None:  # the changed rows' words with the field replaced
            self.m[at, a0 : a0 + 8 * k] = W.merged(blk[changed], [w[changed] for w in new_words], at0, at1)
            return
        shifts = np.arange(f.width - 1, -1, -1, dtype=np.int64)
        self.m[at, sl] = ((new[changed][:, None] >> shifts) & 1).astype(np.int8)

    def _words_ok(self, sl: slice) -> bool:
        """Whether the field at columns ``sl`` can be read a word (8 columns) at a time."""
        return W.usable(self.m) and sl.stop - (sl.start - sl.start % 8) <= 64

    def _get(self, key: str, rows: np.ndarray | None = None) -> np.ndarray:
        """Field values (int64, -1 where absent), reading only the field's columns."""
        f = self.layout.field(key)
        sl = self.layout.field_slice(f)
        if f.width > 1 and self._words_ok(sl):
            blk, a0, _ = W.block(self.m, rows, sl)
            return W.values(blk, sl.start - a0, sl.stop - a0)
        bits = self.m[:, sl] if rows is None else self.m[rows, sl]
        return _bits_to_values(bits)

    def has(self, header: str) -> bool:
        return header in self.layout.headers

    # -- rules ------------------------------------------------------------------------------------
    def run(self, timestamp: np.ndarray) -> RepairResult:
        keep = self.drop_padding()
        self.stack()
        self.options_structure()
        self.fixed_fields()
        self.endpoints()
        self.payload = self.payload_lengths()
        self.ts, generated = self.timestamps(timestamp[keep])
        if self.has("icmp"):
            self.icmp_types()
        if self.has("tcp"):
            self.tcp_state()
        self.lengths()
        self.ip_id()
        self.ipv4_checksum()
        return RepairResult(self.m, keep, self.flow, self.direction, self.payload, self.ts,
                            self.bits, self.fields, generated)

    def drop_padding(self) -> np.ndarray:
        """Rows with (almost) no network-layer bits are padding the model emitted, not packets."""
        l3 = [h for h in L3 if self.has(h)]
        # present bits of each header's fixed part (Layout.present_share's numbers, kept as counts:
        # the stack rule's blanking counts its changes from them)
        present = np.empty((self.n, len(self.layout.headers)), dtype=np.int64)
        share = np.empty((self.n, len(self.layout.headers)), dtype=np.float32)
        for i, h in enumerate(self.layout.headers):
            s = self.layout.header_slice(h)
            fixed = HEADERS[h].min_bits
            present[:, i] = row_counts(self.m[:, s.start : s.start + fixed] != ABSENT)
            share[:, i] = present[:, i] / fixed
        idx = [self.layout.headers.index(h) for h in l3]
        best = share[:, idx].max(axis=1) if idx else np.zeros(self.n)
        keep = best >= self.cfg.padding_share
        self._share = share[keep]  # reused by the stack decision
        self._present = present[keep]
        if not keep.all():
            self.m, self.flow = self.m[keep], self.flow[keep]
            self.n = self.m.shape[0]
            self.bits = {r: v[keep] for r, v in self.bits.items()}
        return keep

    def stack(self) -> None:
        """Choose L3/L4 per packet (or per flow) by share of present bits; blank the rest."""
        layout, n = self.layout, self.n
        share = self._share.astype(np.float64)
        if self.cfg.stack == "flow" and n:
            sums = np.zeros((self.nflows, share.shape[1]))
            np.add.at(sums, self.flow, share)
            counts = np.bincount(self.flow, minlength=self.nflows)[:, None]
            share = (sums / np.maximum(counts, 1))[self.flow]
        col = {h: i for i, h in enumerate(layout.headers)}
        l3_cands = [h for h in L3 if h in col]
        l4_cands = [h for h in L4 if h in col]
        l3s = np.stack([share[:, col[h]] for h in l3_cands], axis=1)
        self.l3 = np.array(l3_cands)[np.argmax(l3s, axis=1)] if n else np.array([], dtype="<U4")
        if l4_cands:
            l4s = np.stack([share[:, col[h]] for h in l4_cands], axis=1)
            best = np.argmax(l4s, axis=1)
            self.l4 = np.where(l4s.max(axis=1) >= self.cfg.min_share, np.array(l4_cands)[best], "")
        else:
            self.l4 = np.full(n, "", dtype="<U4")
        self.is_ = {h: (self.l3 == h) if h in L3 else (self.l4 == h) for h in layout.headers}
        # blank the headers a row does not carry, and give the absent bits of the fixed part of
        # those it does carry the value 0; the changes are counted from the presence counts of
        # drop_padding (nothing has written these columns since), so only changed rows are read
        for i, h in enumerate(layout.headers):
            hs = layout.header_slice(h)
            fixed = HEADERS[h].min_bits
            key = f"{h}_header"
            off = np.flatnonzero(~self.is_[h])
            counts = self._present[off, i]
            if hs.stop - hs.start > fixed and len(off):  # the options part counts too
                counts = counts + row_counts(self.m[off, hs.start + fixed : hs.stop] != ABSENT)
            self._record("stack", key, off, counts)
            self.m[off[counts > 0], hs] = ABSENT
            on = np.flatnonzero(self.is_[h])
            counts = fixed - self._present[on, i]
            self._record("stack", key, on, counts)
            at = on[counts > 0]
            if len(at):
                block = self.m[at, hs.start : hs.start + fixed]
                block += block == ABSENT  # -1 -> 0, every other value as it is
                self.m[at, hs.start : hs.start + fixed] = block

    def _walk_options(self, header: str, rows: np.ndarray, allowed: dict[int, tuple[int, int, bool]]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
        """Parse option bytes (vectorized TLV walk); cut at the first malformed option.

        Returns ``(data, length, kind_at, current)``: repaired option bytes, option length in bytes
        (a multiple of 4), the option kind at each option's first byte (-1 elsewhere), and the rows'
        option bits with their bytes and present length as read (for :meth:`_write_options`)."""
        opt = self.layout.field(f"{header}_opt")
        sl = self.layout.field_slice(opt)
        nb = opt.width // 8
        cur = self.m[rows, sl]
        data, run = packed_bytes(cur)
        current = (cur, data.copy(), run)  # what _write_options compares against (no write between)
        length = (run // 4) * 4
        kind_at = np.full((len(rows), nb + 1), -1, dtype=np.int16)
        pos = np.zeros(len(rows), dtype=np.int64)
        cut = length.copy()  # where the valid list ends (zero padding from here to the word end)
        active = length > 0
        ar = np.arange(len(rows))
        dpad = np.concatenate([data, np.zeros((len(rows), 2), dtype=np.uint8)], axis=1)
        for _ in range(nb):
            if not active.any():
                break
            r = ar[active]
            p = pos[r]
            kind = dpad[r, p].astype(np.int64)
            eol = kind == 0
            cut[r[eol]] = p[eol] + 1
            nop = kind == 1
            kind_at[r[nop | eol], p[nop | eol]] = kind[nop | eol]
            other = ~(eol | nop)
            ln = dpad[r, p + 1].astype(np.int64)
            ok = np.zeros(len(r), dtype=bool)
            for k, (lo, hi, _) in allowed.items():
                sel = other & (kind == k) & (ln >= lo) & (ln <= hi)
                if k == 5:
                    sel &= (ln - 2) % 8 == 0
                ok |= sel
            ok &= p + ln <= length[r]
            bad = other & ~ok
            cut[r[bad]] = p[bad]
            kind_at[r[ok], p[ok]] = kind[ok]
            newpos = p + np.where(nop, 1, np.where(ok, ln, 0))
            pos[r] = newpos
            still = ~eol & ~bad & (newpos < length[r])
            active[r[~still]] = False
        new_len = np.where(cut < length, ((cut + 3) // 4) * 4, length)
        new_len = np.minimum(new_len, length)
        cols = np.arange(nb)
        pad = (cols[None, :] >= cut[:, None]) & (cols[None, :] < new_len[:, None])
        data[pad] = 0
        kind_at = kind_at[:, :nb]
        kind_at[cols[None, :] >= cut[:, None]] = -1
        return data, new_len, kind_at, current

    def _write_options(self, rule: str, header: str, rows: np.ndarray, data: np.ndarray,
                       length: np.ndarray, current: tuple | None = None) -> None:
        """``current``: the rows' option bits, bytes and present length if already read."""
        opt = self.layout.field(f"{header}_opt")
        sl = self.layout.field_slice(opt)
        # only rows whose option bytes or length differ need their 320 bits rewritten
        nb = opt.width // 8
        if current is None:
            cur = self.m[rows, sl]
            cur_data, cur_len = packed_bytes(cur)
        else:
            cur, cur_data, cur_len = current
        cols = np.arange(nb)[None, :]
        # any present bit past the new length (lengths are whole bytes: test 8 bits at a time)
        some_bit = np.ascontiguousarray(cur != ABSENT).view(np.uint64) != 0
        stray = (some_bit & (cols >= length[:, None])).any(axis=1)
        differs = ((cur_data != data) & (cols < length[:, None])).any(axis=1) | (cur_len != length) | stray
        rows, data, length = rows[differs], data[differs], length[differs]
        if not len(rows):
            return
        self._put_bits(rule, opt.key, rows, self.layout.field_slice(opt), bytes_to_bits(data, length))

    def options_structure(self) -> None:
        """Keep the well-formed prefix of IPv4/TCP options (known kinds, valid lengths)."""
        self.opt_len: dict[str, np.ndarray] = {}
        self.opt_kind: dict[str, np.ndarray] = {}
        self.opt_data: dict[str, np.ndarray] = {}
        for h, allowed in (("ipv4", IPV4_OPTIONS), ("tcp", TCP_OPTIONS)):
            if not self.has(h):
                continue
            rows = np.flatnonzero(self.is_[h])
            data, length, kind_at, current = self._walk_options(h, rows, allowed)
            self._write_options("options", h, rows, data, length, current)
            full = np.zeros(self.n, dtype=np.int64)
            full[rows] = length
            self.opt_len[h] = full
            self.opt_kind[h] = kind_at
            self.opt_data[h] = data

    def fixed_fields(self) -> None:
        """Header fields with one valid value (or range) regardless of the flow."""
        cfg = self.cfg
        proto = np.full(self.n, -1, dtype=np.int64)
        for h in L4:
            if self.has(h):
                proto[self.is_[h]] = IP_PROTO[h]
        self.first_fragment = np.zeros(self.n, dtype=bool)  # rows are final here (padding dropped)
        if self.has("ipv4"):
            v4 = self.is_["ipv4"]
            self._put("ipv4", "ipv4_ver", v4, 4)
            self._put("ipv4", "ipv4_rbit", v4, 0)
            self.first_fragment = self._first_fragments(v4)
            self._put("ipv4", "ipv4_mfbit", v4 & ~self.first_fragment, 0)
            self._put("ipv4", "ipv4_foff", v4, 0)
            ttl = self._get("ipv4_ttl")
            self._put("ipv4", "ipv4_ttl", v4 & (ttl <= 0), cfg.default_ttl)
            has_l4 = v4 & (proto >= 0)
            self._put("ipv4", "ipv4_proto", has_l4, proto[has_l4])
            cur = self._get("ipv4_proto")
            clash = v4 & (proto < 0) & np.isin(cur, [*IP_PROTO.values(), *IPV6_ONLY_PROTOS, *ZERO_PAYLOAD_MALFORMED])
            v4_payload = self._get("ipv4_tl") - 4 * self._get("ipv4_hl")
            clash |= v4 & (proto < 0) & self._too_short(cur, v4_payload)
            clash |= v4 & (proto < 0) & (v4_payload > 0) & self._too_short(cur, v4_payload, SHORT_PAYLOAD_MALFORMED)
            self._put("ipv4", "ipv4_proto", clash, 253)  # RFC 3692 experimental: no L4 header follows
        if self.has("ipv6"):
            v6 = self.is_["ipv6"]
            self._put("ipv6", "ipv6_ver", v6, 6)
            hl = self._get("ipv6_hl")
            self._put("ipv6", "ipv6_hl", v6 & (hl <= 0), cfg.default_ttl)
            nh = np.where(proto == IP_PROTO["icmp"], ICMPV6_PROTO, proto)
            has_l4 = v6 & (proto >= 0)
            self._put("ipv6", "ipv6_nh", has_l4, nh[has_l4])
            # a next header we would have encoded (TCP/UDP/ICMP) but no such header follows: tshark
            # would dissect the zero payload as one ("bogus TCP header length"); IGMP does not
            # exist over IPv6 (MLD is ICMPv6). ICMPv6 and other protocols nPrint does not encode
            # stay as generated (real rows carry them).
            cur = self._get("ipv6_nh")
            clash = v6 & (proto < 0) & np.isin(cur, [*IP_PROTO.values(), IGMP_PROTO, *ZERO_PAYLOAD_MALFORMED,
                                                     43, 140])  # Routing, Shim6: malformed when zero
            # the extension headers the packet builder writes need their 8 payload bytes too
            sizes = {**SHORT_PAYLOAD_MALFORMED, **SYNTHETIC_PAYLOAD_BYTES,
                     **{nh: len(b) for nh, b in IPV6_EXTENSION_PAYLOADS.items()}}
            clash |= v6 & (proto < 0) & self._too_short(cur, self._get("ipv6_len"), sizes)
            self._put("ipv6", "ipv6_nh", clash, IPV6_NO_NEXT_HEADER)
        if self.has("tcp"):
            t = self.is_["tcp"]
            self._put("tcp_fields", "tcp_res", t, 0)

    def icmp_types(self) -> None:
        """ICMP type/code pairs that exist and need no quoted datagram (echo request / reply)."""
        rows = np.flatnonzero(self.is_["icmp"])
        if not len(rows):
            return
        v6 = self.l3[rows] == "ipv6"
        typ = self._get("icmp_type", rows)
        code = self._get("icmp_code", rows)
        new_t, new_c = typ.copy(), code.copy()
        for is6, table, req in ((False, ICMP_TYPES_V4, 8), (True, ICMP_TYPES_V6, 128)):
            sel = v6 == is6
            known = np.isin(typ, list(table)) & sel
            if not is6:
                known &= ~(np.isin(typ, ICMP_ERRORS_V4) & (self.payload[rows] < ICMP_QUOTE_BYTES))
            new_t[sel & ~known] = req  # direction is not known yet; requests are always valid
            for t_, codes in table.items():
                bad_code = sel & (new_t == t_) & ~np.isin(code, codes)
                new_c[bad_code] = codes[0]
            new_c[sel & ~known] = 0
        self._put("icmp", "icmp_type", rows, new_t)
        self._put("icmp", "icmp_code", rows, new_c)

    # -- flow-level -------------------------------------------------------------------------------
    def endpoints(self) -> None:
        """Two endpoints per flow (majority vote or anonymized) and each packet's direction."""
        self.direction = np.zeros(self.n, dtype=np.int8)
        pos = G.rank(self.flow)
        for h in L3:
            if not self.has(h):
                continue
            rows = np.flatnonzero(self.is_[h])
            if not len(rows):
                continue
            v6 = h == "ipv6"
            src_sl = self.layout.field_slice(f"{h}_src")
            dst_sl = self.layout.field_slice(f"{h}_dst")
            src = np.clip(self.m[rows, src_sl], 0, 1)
            dst = np.clip(self.m[rows, dst_sl], 0, 1)
            src_words, dst_words = _words(src), _words(dst)
            both = np.concatenate([src_words, dst_words])
            if both.shape[1] == 1:  # IPv4: one word per address; a 1-D unique is much faster (same order)
                u1, inv = np.unique(both[:, 0], return_inverse=True)
                uniq = u1[:, None]
            else:
                uniq, inv = np.unique(both, axis=0, return_inverse=True)
            inv = inv.reshape(-1)
            fl = self.flow[rows]
            top1, top2, has2 = G.mode(inv, np.concatenate([fl, fl]), self.nflows)
            # a flow with one distinct address: its second endpoint is that address with the last bit flipped
            a_bits = np.unpackbits(uniq.astype(">u4").view(np.uint8), axis=1).astype(np.int8)
            ep_a = a_bits[top1]
            ep_b = a_bits[top2].copy()
            single = ~has2
            ep_b[single] = ep_a[single]
            # direction: which assignment is closer in Hamming distance (bits differing between
            # 0/1 rows: set bits of their packed words' XOR)
            A, B = _words(ep_a)[fl], _words(ep_b)[fl]

            def distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
                return np.bitwise_count(x ^ y).sum(axis=1, dtype=np.int64)
            d0 = distance(src_words, A) + distance(dst_words, B)
            d1 = distance(src_words, B) + distance(dst_words, A)
            direction = (d1 < d0).astype(np.int8)
            # one address for both ends (a host talking to itself): the ports tell the ends apart
            directed = self._port_direction(rows, fl, (ep_a == ep_b).all(axis=1), direction)
            # the flow's first packet of this family is the initiator's
            first = G.starts(fl)
            swap = np.zeros(self.nflows, dtype=bool)
            swap[fl[first]] = direction[first] == 1
            ep_a2 = np.where(swap[:, None], ep_b, ep_a)
            ep_b2 = np.where(swap[:, None], ep_a, ep_b)
            direction ^= swap[fl].astype(np.int8)
            ep_a, ep_b = ep_a2, ep_b2
            responds = np.zeros(self.nflows, dtype=bool)
            responds[fl[direction == 1]] = True
            flows_here = np.unique(fl)
            if self.cfg.anonymize:
                prefix = self.cfg.private_v6 if v6 else self.cfg.private_v4
                ep_a[flows_here] = _private_hosts(prefix, v6, 2 * flows_here + 1 + 2 * self.cfg.seed)
                ep_b[flows_here] = _private_hosts(prefix, v6, 2 * flows_here + 2 + 2 * self.cfg.seed)
            else:
                wa, wb = _words(ep_a), _words(ep_b)
                bad_a = _bad_source(wa, v6)
                on_host = _loopback(wa, v6) & _loopback(wb, v6)
                tcp_flow = np.zeros(self.nflows, dtype=bool)
                if self.has("tcp"):
                    tcp_flow[self.flow[self.is_["tcp"]]] = True
                # the unspecified address sends DHCP discovers (0.0.0.0), IPv6 duplicate address
                # detection and MLD reports (::): never TCP
                bad_a &= ~(~tcp_flow & (wa == 0).all(axis=1))
                bad_b = np.where(responds, _bad_source(wb, v6), _bad_destination(wb, v6))
                bad_b |= tcp_flow & _bad_source(wb, v6)
                prefix = self.cfg.private_v6 if v6 else self.cfg.private_v4
                fix_a = np.flatnonzero(bad_a & ~on_host)
                fix_b = np.flatnonzero(bad_b & ~on_host)
                if len(fix_a):
                    ep_a[fix_a] = _private_hosts(prefix, v6, 2 * fix_a + 1)
                if len(fix_b):
                    ep_b[fix_b] = _private_hosts(prefix, v6, 2 * fix_b + 2)
            # a host may send to itself; it answers itself only where the ports tell the ends apart
            same = (ep_a == ep_b).all(axis=1) & responds & ~directed
            ep_b[same, -1] ^= 1
            self.same_host = getattr(self, "same_host", np.zeros(self.nflows, dtype=bool))
            self.same_host[flows_here] |= (ep_a == ep_b).all(axis=1)[flows_here]
            dirb = direction.astype(bool)
            new_src = np.where(dirb[:, None], ep_b[fl], ep_a[fl])
            new_dst = np.where(dirb[:, None], ep_a[fl], ep_b[fl])
            self._put_bits("endpoints", f"{h}_src", rows, src_sl, new_src)
            self._put_bits("endpoints", f"{h}_dst", rows, dst_sl, new_dst)
            self.direction[rows] = direction
        del pos
        for h, (sp, dp) in PORT_FIELDS.items():
            if not self.has(h):
                continue
            rows = np.flatnonzero(self.is_[h])
            if not len(rows):
                continue
            fl = self.flow[rows]
            d = self.direction[rows].astype(bool)
            s, t = self._get(sp, rows), self._get(dp, rows)
            client = np.where(d, t, s)
            server = np.where(d, s, t)
            pa = G.mode(client, fl, self.nflows)[0]
            pb = G.mode(server, fl, self.nflows)[0]
            idx = np.arange(self.nflows)
            pa = np.where(pa <= 0, 49152 + idx % 16384, pa)
            pb = np.where(pb <= 0, 1024 + idx % 1024, pb)
            same_host = getattr(self, "same_host", np.zeros(self.nflows, dtype=bool))
            pb = np.where((pb == pa) & same_host, np.where(pa == 65535, 1024, pa + 1), pb)
            self._put("endpoints", sp, rows, np.where(d, pb[fl], pa[fl]))
            self._put("endpoints", dp, rows, np.where(d, pa[fl], pb[fl]))

    def _port_direction(self, rows: np.ndarray, fl: np.ndarray, same_address: np.ndarray,
                        direction: np.ndarray) -> np.ndarray:
        """Directions (in place) of the TCP/UDP ``rows`` of flows whose two ends have one address.

        The flow's first packet with both ports names the initiator's (source, destination)
        ports; a packet whose ports are closer to those swapped goes the other way. Returns the
        flows so directed (those whose two ports differ)."""
        directed = np.zeros(self.nflows, dtype=bool)
        sel = np.flatnonzero(same_address[fl])
        if not len(sel):
            return directed
        r = rows[sel]
        sport = np.full(len(r), -1, dtype=np.int64)
        dport = np.full(len(r), -1, dtype=np.int64)
        for h, (sp, dp) in PORT_FIELDS.items():
            if self.has(h):
                on = self.is_[h][r]
                if on.any():
                    sport[on], dport[on] = self._get(sp, r[on]), self._get(dp, r[on])
        ok = np.flatnonzero((sport >= 0) & (dport >= 0))
        if not len(ok):
            return directed
        f = fl[sel]
        firsts = ok[G.starts(f[ok])]
        first_s = np.zeros(self.nflows, dtype=np.int64)
        first_d = np.zeros(self.nflows, dtype=np.int64)
        first_s[f[firsts]], first_d[f[firsts]] = sport[firsts], dport[firsts]
        directed[f[firsts]] = sport[firsts] != dport[firsts]
        ok = ok[directed[f[ok]]]
        s, d, fs, fd = sport[ok], dport[ok], first_s[f[ok]], first_d[f[ok]]
        same_way = np.bitwise_count(s ^ fs) + np.bitwise_count(d ^ fd)
        other_way = np.bitwise_count(s ^ fd) + np.bitwise_count(d ^ fs)
        direction[sel[directed[f]]] = 0
        direction[sel[ok]] = (other_way < same_way).astype(np.int8)
        return directed

    @staticmethod
    def _too_short(proto: np.ndarray, payload: np.ndarray,
                   sizes: dict[int, int] = SYNTHETIC_PAYLOAD_BYTES) -> np.ndarray:
        """Rows whose payload cannot hold the message the packet builder writes for their protocol
        (``sizes``: protocol number -> bytes of that message)."""
        short = np.zeros(len(proto), dtype=bool)
        for number, size in sizes.items():
            short |= (proto == number) & (payload < size)
        return short

    def _first_fragments(self, v4: np.ndarray) -> np.ndarray:
        """IPv4 rows kept as the first fragment of a longer UDP datagram (RFC 791: MF set, offset 0).

        Real captures hold them (encode skips the later fragments, which carry no UDP header):
        kept only where the UDP length says the datagram is longer than this packet and fits an
        IP packet, the one field that can show it; everywhere else MF is cleared. The UDP
        checksum then covers the whole datagram, whose bytes beyond this packet are zero payload."""
        first = np.zeros(self.n, dtype=bool)
        if not self.has("udp"):
            return first
        rows = np.flatnonzero(v4 & self.is_["udp"])
        if not len(rows):
            return first
        mf, off = self._get("ipv4_mfbit", rows), self._get("ipv4_foff", rows)
        here = self._get("ipv4_tl", rows) - 4 * self._get("ipv4_hl", rows)  # UDP bytes in this packet
        udp_len = self._get("udp_len", rows)
        first[rows] = (mf == 1) & (off == 0) & (here >= 8) & (udp_len > here) & (udp_len <= 65515)
        return first

    def header_lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """L3 and L4 header bytes per row after option repair."""
        l3 = np.zeros(self.n, dtype=np.int64)
        l4 = np.zeros(self.n, dtype=np.int64)
        for h in L3 + L4:
            if self.has(h):
                extra = self.opt_len.get(h, 0)
                size = HEADERS[h].min_bits // 8 + extra
                target = l3 if h in L3 else l4
                target[self.is_[h]] = np.broadcast_to(size, (self.n,))[self.is_[h]]
        return l3, l4

    def payload_lengths(self) -> np.ndarray:
        """Payload bytes implied by the generated IP length, within the MTU."""
        l3, l4 = self.header_lengths()
        total = np.zeros(self.n, dtype=np.int64)
        if self.has("ipv4"):
            v4 = self.is_["ipv4"]
            total[v4] = np.maximum(self._get("ipv4_tl")[v4], 0)
        if self.has("ipv6"):
            v6 = self.is_["ipv6"]
            total[v6] = np.maximum(self._get("ipv6_len")[v6], 0) + l3[v6]
        payload = np.maximum(total - l3 - l4, 0)
        return np.minimum(payload, np.maximum(self.cfg.mtu - l3 - l4, 0))

    def tcp_state(self) -> None:
        """TCP flags, sequence and acknowledgement numbers per connection (see docs/repair.md).

        A connection is a flow's TCP packets of one address family (with ``stack="packet"`` a
        flow can hold an IPv4 and an IPv6 conversation)."""
        t = np.flatnonzero(self.is_["tcp"])
        if not len(t):
            return
        nflows = self.nflows
        self.nflows = 2 * nflows  # connection ids: flow * 2 + (IPv6)
        try:
            self._tcp_state(t)
        finally:
            self.nflows = nflows

    def _tcp_state(self, t: np.ndarray) -> None:
        """Flags (the ``tcp_flags`` rule, :func:`netdiffusion.repair.tcp.tcp_flags`), then options,
        sequence and acknowledgement numbers.

        Handshake only where a connection starts at a connection start (first packet SYN without
        ACK): the client's packets before the server speaks are SYNs, the server's first packet the
        SYN-ACK (RST-ACK when it refuses), a capture starting at the SYN-ACK keeps it; everywhere
        else SYN is cleared and ACK set, no payload on handshake segments; FIN only where no later
        segment of the direction carries data beyond it (later FINs repeat the first), RST only
        where the direction sends nothing after it, URG only with 0 < urgent pointer <= payload."""
        get = lambda k: self._get(k, t)  # noqa: E731
        ft = self.flow[t] * 2 + (self.l3[t] == "ipv6")
        dt = self.direction[t].astype(np.int64)
        seq = get("tcp_seq")
        syn, fin, rst, ackf, urg, urp, payload, phase_c, synack, og = T.tcp_flags(
            ft, dt, get("tcp_syn"), get("tcp_ackf"), get("tcp_fin"), get("tcp_rst"), self.payload[t], seq,
            get("tcp_urg"), get("tcp_urp"), self.nflows)
        self._put("tcp_flags", "tcp_syn", t, syn)
        self._put("tcp_flags", "tcp_fin", t, fin)
        self._put("tcp_flags", "tcp_rst", t, rst)
        self._put("tcp_flags", "tcp_ackf", t, ackf)
        self._put("tcp_flags", "tcp_urg", t, urg)
        self._put("tcp_flags", "tcp_urp", t, urp)
        self.payload[t] = payload
        self._tcp_options(t, syn, phase_c)
        self._tcp_seq_ack(t, ft, dt, og, seq, syn, fin, rst, ackf, payload, phase_c, synack)

    def _tcp_seq_ack(self, t: Arr, ft: Arr, dt: Arr, og: Arr, seq: Arr, syn: Arr, fin: Arr, rst: Arr, ackf: Arr,
                     payload: Arr, phase_c: Arr, synack: Arr) -> None:
        """Sequence numbers per direction, then acknowledgements against what the peer sent
        (:func:`netdiffusion.repair.tcp.tcp_seq_ack`; the rules are in docs/repair.md).

        ``t`` are the TCP rows in flow order, ``ft``/``dt`` their connection and direction,
        ``og`` the order grouping them by (connection, direction); ``seq`` the generated sequence
        numbers, the other arrays the new flags and payload lengths."""
        new_seq, ack, payload, fixed = T.tcp_seq_ack(
            ft, dt, og, seq, self._get("tcp_ackn", t), syn, fin, rst, ackf, payload, phase_c, synack, self.ts[t],
            self.nflows, self.cfg.gaps == "close", int(self.cfg.ack_window))
        if fixed:  # corrupted payload lengths, replaced by what the sequence numbers imply
            self.payload[t] = payload
        self._put("tcp_seq", "tcp_seq", t, new_seq)
        self._put("tcp_ack", "tcp_ackn", t, ack)
        self._tcp_zero_window_probes(t, ft, dt, og, new_seq, rst, syn, fin, payload)
        self._tcp_timestamps(t, ft, dt, og, rst, phase_c)

    def _tcp_zero_window_probes(self, t: Arr, ft: Arr, dt: Arr, og: Arr, seq: Arr, rst: Arr, syn: Arr,
                                fin: Arr, payload: Arr) -> None:
        """No zero window before a 1-byte segment whose byte the sender then treats as sent.

        Wireshark calls a 1-byte in-order segment sent while the peer's last advertised window is 0
        a zero-window probe and does not advance the sequence past it, so when the next segment of
        that direction starts one byte later it reports "previous segment not captured" and the
        peer's ACK "ACKed unseen segment". Generated windows can be 0 anywhere: such a zero window
        gets the last non-zero window its direction advertised (1 if none). Real probes, whose next
        segment resends the same byte, are left alone (:func:`netdiffusion.repair.tcp.tcp_zero_window`)."""
        if len(t) < 3:
            return
        fix, value = T.tcp_zero_window(ft, dt, og, seq, self._get("tcp_wsize", t), rst, syn, fin, payload)
        fix = np.flatnonzero(fix)
        if len(fix):
            self._put("tcp_window", "tcp_wsize", t[fix], value[fix])

    def _tcp_options(self, t: np.ndarray, syn: np.ndarray, phase_c: np.ndarray) -> None:
        """SYN-only options become NOPs elsewhere; window scale at most 14."""
        rows_all = np.flatnonzero(self.is_["tcp"])
        assert np.array_equal(rows_all, t)
        syn_only = [(k, lo) for k, (lo, _hi, only) in TCP_OPTIONS.items() if only]
        length = self.opt_len["tcp"][t]
        data, moved = T.tcp_option_rules(self.opt_kind["tcp"], self.opt_data["tcp"], length, syn,
                                         np.array([k for k, _ in syn_only], dtype=np.int64),
                                         np.array([lo for _, lo in syn_only], dtype=np.int64),
                                         TCP_WSCALE, 2, TCP_MAX_WSCALE)
        moved = np.flatnonzero(moved)
        if len(moved):
            self._write_options("tcp_options", "tcp", t[moved], data[moved], length[moved])
        self.opt_data["tcp"] = data

    def _tcp_timestamps(self, t: Arr, ft: Arr, dt: Arr, og: Arr, rst: Arr, phase_c: Arr) -> None:
        """TSval non-decreasing per direction; a connection-opening SYN echoes no TSecr (RFC 7323).
        RSTs need not carry timestamps (RFC 7323 5.2): theirs stay."""
        length = self.opt_len["tcp"][t]
        data, moved = T.tcp_timestamp_rules(self.opt_kind["tcp"], self.opt_data["tcp"], length, rst, og, ft * 2 + dt,
                                            phase_c, TCP_TIMESTAMPS, 2, 6)
        moved = np.flatnonzero(moved)
        if len(moved):
            self._write_options("tcp_options", "tcp", t[moved], data[moved], length[moved])

    def lengths(self) -> None:
        """Length fields that must agree with the headers and payload actually written."""
        l3, l4 = self.header_lengths()
        if self.has("ipv4"):
            v4 = self.is_["ipv4"]
            self._put("lengths", "ipv4_hl", v4, l3[v4] // 4)
            self._put("lengths", "ipv4_tl", v4, (l3 + l4 + self.payload)[v4])
        if self.has("ipv6"):
            v6 = self.is_["ipv6"]
            self._put("lengths", "ipv6_len", v6, (l4 + self.payload)[v6])
        if self.has("tcp"):
            tcp = self.is_["tcp"]
            self._put("lengths", "tcp_doff", tcp, l4[tcp] // 4)
        if self.has("udp"):
            # a first fragment's UDP length is the whole datagram's; a row whose headers changed
            # so that it no longer says more than this packet holds is not a fragment any more
            frag = self.first_fragment & (self._get("udp_len") > l4 + self.payload)
            self._put("lengths", "ipv4_mfbit", self.first_fragment & ~frag, 0)
            self.first_fragment = frag
            udp = self.is_["udp"] & ~frag
            self._put("lengths", "udp_len", udp, (l4 + self.payload)[udp])

    def ip_id(self) -> None:
        """Counter-like IP ID sequences advance per direction; isolated outliers are replaced.

        Random IDs (RFC 6864 allows them) and zero IDs are left alone."""
        if not self.has("ipv4"):
            return
        rows = np.flatnonzero(self.is_["ipv4"])
        if len(rows) < 3:
            return
        fl, d = self.flow[rows], self.direction[rows].astype(np.int64)
        og = np.lexsort((np.arange(len(rows)), d, fl))
        g = (fl * 2 + d)[og]
        ids = self._get("ipv4_id", rows)[og]
        ts = self.ts[rows][og]
        # a host's shared counter also advances for its other traffic: a big step after an idle
        # second is normal, so only steps within a second are judged
        idle = (ts - np.r_[ts[:1], ts[:-1]]) >= 1_000_000_000
        step = self.cfg.ip_id_step_max
        for _ in range(2):
            delta = (ids - np.r_[ids[:1], ids[:-1]]) % 65536
            fwd = (delta >= 1) & (delta < step)
            st = G.starts(g)
            en = G.ends(g)
            judged = ~st & ~idle
            left_bad = ~fwd & judged
            right_bad = np.r_[left_bad[1:], False] & ~en
            gi = np.cumsum(st) - 1
            n_judged = np.bincount(gi, weights=judged)
            share = np.bincount(gi, weights=fwd & judged) / np.maximum(n_judged, 1)
            counter_like = ((share >= 0.75) & (n_judged >= 2))[gi]
            # an ID near another of the group belongs to an interleaved counter (NAT, several
            # hosts behind one address): not an outlier
            o2 = np.lexsort((ids, g))
            sid, sg = ids[o2], g[o2]
            gap_prev = np.where(np.r_[False, sg[1:] == sg[:-1]], sid - np.r_[sid[:1], sid[:-1]], 65536)
            gap_next = np.r_[gap_prev[1:], 65536]
            near_sorted = (gap_prev < step) | (gap_next < step)
            near = np.empty_like(near_sorted)
            near[o2] = near_sorted
            # and the counter carries on across it (within one or two rows): a step to another
            # counter (a load balancer's other backend) is a change of counter, not an outlier
            carries_on = (_id_span(ids, g, -1, 1, 2 * step) | _id_span(ids, g, -1, 2, 3 * step)
                          | _id_span(ids, g, -2, 1, 3 * step))
            bad = left_bad & right_bad & counter_like & (ids != 0) & ~near & carries_on
            if not bad.any():
                break
            idx = np.arange(len(ids))
            last_good = np.maximum.accumulate(np.where(~bad, idx, 0))
            ids = np.where(bad, (ids[last_good] + idx - last_good) % 65536, ids)
        out = np.empty_like(ids)
        out[og] = ids
        self._put("ip_id", "ipv4_id", rows, out)

    def ipv4_checksum(self) -> None:
        if not self.has("ipv4"):
            return
        rows = np.flatnonzero(self.is_["ipv4"])
        if not len(rows):
            return
        self._put("ipv4_checksum", "ipv4_cksum", rows, ipv4_header_checksums(self.layout, self.m, rows))

    def timestamps(self, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Non-decreasing ns offsets from the flow start; generated when the column is unusable."""
        ts = np.asarray(ts, dtype=np.int64).copy()
        fl = self.flow
        counts = np.bincount(fl, minlength=self.nflows)
        neg = np.bincount(fl, weights=(ts < 0), minlength=self.nflows) > 0
        nonzero = np.bincount(fl, weights=(ts > 0), minlength=self.nflows) > 0
        gen_flow = neg | (~nonzero & (counts > 1))
        gen = gen_flow[fl]
        if gen.any():
            rng = np.random.default_rng(self.cfg.seed)
            iat = rng.exponential(self.cfg.default_iat_ns, size=int(gen.sum())).astype(np.int64)
            g = fl[gen]
            iat[G.starts(g)] = 0
            ts[gen] = G.cumsum_incl(iat, g)
        if len(ts):
            ts = ts - G.first_value(ts, fl)
            ts = G.cummax(ts, fl)
        return ts, gen_flow


def _id_span(ids: np.ndarray, group: np.ndarray, before: int, after: int, limit: int) -> np.ndarray:
    """Per row: the IP ID ``after`` rows on is 1..``limit``-1 ahead of the one ``before`` rows back
    (``before`` < 0), both in the row's group, i.e. a counter carries on across the row."""
    pos = np.arange(len(ids))
    i, j = pos + before, pos + after
    inside = (i >= 0) & (j < len(ids))
    i, j = np.clip(i, 0, max(len(ids) - 1, 0)), np.clip(j, 0, max(len(ids) - 1, 0))
    gap = (ids[j] - ids[i]) % 65536
    return inside & (group[i] == group) & (group[j] == group) & (gap >= 1) & (gap < limit)


def ipv4_header_checksums(layout: Layout, matrix: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """RFC 791 header checksum of IPv4 rows (the checksum field read as zero).

    ``rows`` selects rows of ``matrix`` (default all); only the columns needed are read."""
    rows = np.arange(len(matrix)) if rows is None else np.asarray(rows)
    hs = layout.header_slice("ipv4")
    hl_sl = layout.field_slice("ipv4_hl")
    hl = _bits_to_values(matrix[rows, hl_sl])
    fixed = HEADERS["ipv4"].min_bits
    data = np.zeros((len(rows), HEADERS["ipv4"].bytes), dtype=np.int64)
    data[:, : fixed // 8] = np.packbits(matrix[rows, hs.start : hs.start + fixed] > 0, axis=1)
    with_opts = np.flatnonzero(hl > 5)  # only these need their option bytes packed
    if len(with_opts):
        data[with_opts, fixed // 8 :] = np.packbits(matrix[rows[with_opts], hs.start + fixed : hs.stop] > 0,
                                                    axis=1)
    ck = layout.field("ipv4_cksum")
    data[:, ck.offset // 8 : (ck.offset + ck.width) // 8] = 0
    words = (data[:, 0::2] << 8) | data[:, 1::2]
    words[np.arange(words.shape[1])[None, :] >= (hl[:, None] * 2)] = 0
    return fold_checksum(words.sum(axis=1))


def fold_checksum(total: np.ndarray) -> np.ndarray:
    """One's complement of the 16-bit one's complement sum."""
    s = np.asarray(total, dtype=np.int64)
    for _ in range(3):
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def repair_matrix(layout: Layout, matrix: np.ndarray, flow: np.ndarray, timestamp: np.ndarray,
                  cfg: RepairConfig | None = None, copy: bool = True) -> RepairResult:
    """Repair the rows of many flows at once (rows sorted by flow index, then position).

    ``copy=False`` lets repair overwrite an int8 ``matrix`` in place (saves a copy of every row)."""
    return Repairer(layout, matrix, flow, cfg or RepairConfig(), copy=copy).run(timestamp)
