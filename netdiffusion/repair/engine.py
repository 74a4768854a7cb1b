"""Bit-level protocol repair of nPrint rows, vectorized over all packets of many flows.

The input is a matrix of rows sorted by flow then packet position (``flow`` gives each row's dense
flow index). Rules run in dependency order; every write goes through :meth:`Repairer._put` which
counts, per packet, how many bits each rule changed and which fields changed, so the report can
say exactly what repair did. Rules only rewrite what is invalid: real traffic passes unchanged
(see ``docs/repair.md`` for the precise list and the decisions behind it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from netdiffusion import bitwords as W
from netdiffusion.dataset import clock_offsets
from netdiffusion.fields import (
    ABSENT,
    HEADERS,
    IP_PROTO,
    Layout,
    row_words,
    word_byte,
)
from netdiffusion.jit import kernel
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
# an expert error, and which repair has no message for (DCCP, XTP, DSR, SWIPE, NARP, EIGRP,
# AX.25, UDP-Lite): a row of them without a transport header gets protocol 253 / next header 59
ZERO_PAYLOAD_MALFORMED = (33, 36, 48, 53, 54, 88, 93, 136)
AH_PROTO = 51  # IPsec Authentication Header (RFC 4302)
# protocols without an nPrint header whose payload the packet builder starts with a message of
# this many bytes: an IGMPv2 membership report (IPv4 only), an inner IPv4 / IPv6 header for
# IP-in-IP (4) and IPv6-in-IP (41) tunnels, an Authentication Header without ICV whose next header
# is 59 (real rows carry AH: tcpdump's OSPFv3_with_AH.pcap, which got next header 59 before);
# rows with less payload get protocol 253 / next header 59
SYNTHETIC_PAYLOAD_BYTES = {IGMP_PROTO: 8, 4: 20, 41: 40, AH_PROTO: 12}
# protocols whose zero payload `validate`'s tshark calls malformed when shorter than this many bytes
# (their fixed header): IGRP, ESP, OSPF, EtherIP, PIM, IPComp, VRRP, Ethernet (143), NCS heartbeat
# (224); measured for 0-40 zero bytes behind IPv4 and IPv6 (scripts/proto_min_sizes.py). Real packets are
# never that short; corrupted IP lengths are: such rows get protocol 253 / next header 59
SHORT_PAYLOAD_MALFORMED = {9: 12, 50: 8, 89: 14, 97: 16, 103: 4, 108: 4, 112: 8, 143: 14, 224: 12}
# protocols whose zero payload `validate`'s tshark calls malformed at sizes in [from, to) bytes only:
# PGM (RFC 3208) reads its 16-byte header, then an SPM cut short (18-31 bytes; found by QA on pure
# random rows, IPv6 layout, seed 81). Measured for 0-128 and 14 longer sizes up to 1,480 behind
# IPv4 and IPv6 for every protocol number (session 17); such rows get protocol 253 / next header 59
MALFORMED_PAYLOAD_SIZES = {113: (18, 32)}
# ... and behind IPv6 only: ISO-IP (80) with an empty payload (behind IPv4 it is not dissected)
IPV6_SHORT_PAYLOAD_MALFORMED = {80: 1}
# the 8 bytes that start the payload of an IPv6 row whose next header is one of these extension
# headers (nPrint does not encode them): a minimal header of that kind whose next header is 59
IPV6_EXTENSION_PAYLOADS = {
    0: (IPV6_NO_NEXT_HEADER, 0, 1, 4, 0, 0, 0, 0),  # Hop-by-Hop: PadN over 6 bytes
    44: (IPV6_NO_NEXT_HEADER, 0, 0, 0, 0, 0, 0, 0),  # Fragment: offset 0, last, id 0
    60: (IPV6_NO_NEXT_HEADER, 0, 1, 4, 0, 0, 0, 0),  # Destination Options: PadN
    # Routing: type 3 (RPL source route, RFC 6554) with no address and segments left 0, the one
    # type tshark 4.0 reads at 8 bytes without a word (0 is deprecated, 2 and 4 need addresses:
    # malformed, 253/254 "undecoded"); real rows carry routing headers (tcpdump's
    # ipv6-routing-header.pcap, SRv6 captures), which got next header 59 before
    43: (IPV6_NO_NEXT_HEADER, 0, 3, 0, 0, 0, 0, 0),
}

# TCP option kind -> (min length, max length, SYN only); anything else ends the option list.
TCP_OPTIONS: dict[int, tuple[int, int, bool]] = {
    2: (4, 4, True),  # MSS
    3: (3, 3, True),  # window scale
    4: (2, 2, True),  # SACK permitted
    5: (10, 34, False),  # SACK blocks (8 bytes each)
    8: (10, 10, False),  # timestamps
    # kept as they are where well formed (real flows carry them; tshark accepts any content of
    # these lengths, checked with random contents): MD5 signature (RFC 2385), user timeout
    # (RFC 5482), TCP-AO (RFC 5925), Multipath TCP (RFC 8684, e.g. Apple devices), Fast Open
    # cookie (RFC 7413), experiments (RFC 6994)
    19: (18, 18, False),
    28: (4, 4, False),
    29: (4, 40, False),
    30: (3, 40, False),
    34: (2, 18, False),
    253: (4, 40, False),
    254: (4, 40, False),
}
TCP_WSCALE, TCP_MAX_WSCALE = 3, 14  # window scale option: its shift (byte 2) is at most 14 (RFC 7323)
TCP_TIMESTAMPS = 8  # TSval at byte 2, TSecr at byte 6
TCP_SACK = 5  # SACK blocks: left and right edge (big-endian words) per block
# how far below the ACK a D-SACK block (a duplicate received, RFC 2883) may start: the most in
# the shared and nDPI captures is 15,796 bytes
DSACK_REACH = 1 << 20
MAX_WINDOW = 65535 << TCP_MAX_WSCALE  # the largest receive window (RFC 7323): 2**30 - 2**14 bytes
# TCP Fast Open cookie (RFC 7413), or its experimental form: option 254 with magic 0xF989
TCP_FAST_OPEN, TCP_EXPERIMENT, TCP_FAST_OPEN_MAGIC = 34, 254, (0xF9, 0x89)
# IPv4 options kept where well formed (RFC 791; EOL/NOP are always allowed), one shape per row:
# kind, lengths lo..hi of the form base + k * step, the pointer's first valid value (0: no
# pointer; valid pointers advance by step up to length + 1, others are set back to the last valid
# one at or below them) and the timestamp flags allowed (bit f for flag f; 0: no flag byte).
# Real flows carry them (Linux sends record route and timestamps on request): removing them
# changed valid traffic. Source routes (131, 137) are removed: the TCP/UDP checksum's pseudo header
# then holds the route's last address (RFC 9293), not the destination. So are security (130),
# stream id (136), quick-start (25) and the rest.
IPV4_OPTIONS: tuple[tuple[int, int, int, int, int, int, int], ...] = (
    (148, 4, 4, 4, 1, 0, 0),  # router alert (RFC 2113)
    (7, 7, 39, 3, 4, 4, 0),  # record route: 4-byte addresses after type, length, pointer
    (68, 8, 40, 4, 4, 5, 0b0001),  # timestamps only (flag 0): 4-byte entries after 4 bytes
    (68, 12, 36, 4, 8, 5, 0b1010),  # address + timestamp (flags 1 and 3): 8-byte entries
)
# Multipath TCP (kind 30) by subtype, the high nibble of its third byte (RFC 8684 section 3; a
# subtype's length follows from its fields, and tshark calls a shorter one malformed: an
# MP_FASTCLOSE of 4 bytes in a repaired webex flow at 30% corruption, session 20). Rows: subtype,
# lo, hi, step. Data Sequence Signal (2) is checked against its flags instead (:data:`MPTCP_DSS`);
# unassigned subtypes (9-14) end the option list.
MPTCP = 30
MPTCP_DSS = 2  # 4 bytes + Data ACK (flag A; 8 bytes with flag a, else 4) + mapping (flag M: DSN of
# 8 bytes with flag m, else 4; subflow sequence number 4; data-level length 2; checksum 2 or none)
MPTCP_SUBTYPES: tuple[tuple[int, int, int, int], ...] = (
    (0, 4, 4, 1), (0, 12, 20, 8), (0, 22, 24, 2),  # MP_CAPABLE: SYN v1; keys; + length (+ checksum)
    (1, 12, 16, 4), (1, 24, 24, 1),  # MP_JOIN: SYN, SYN/ACK, third ACK
    (MPTCP_DSS, 4, 28, 1),
    (3, 8, 10, 2), (3, 16, 22, 2), (3, 28, 30, 2),  # ADD_ADDR: IPv4 / IPv6, + port, + HMAC (or echo)
    (4, 4, 40, 1),  # REMOVE_ADDR: one byte per address id
    (5, 3, 4, 1),  # MP_PRIO: + address id
    (6, 12, 12, 1), (7, 12, 12, 1),  # MP_FAIL, MP_FASTCLOSE: 8-byte sequence number / key
    (8, 4, 4, 1),  # MP_TCPRST
    (15, 3, 40, 1),  # MP_EXPERIMENTAL
)
# the option walk's table per header, one row per allowed shape: kind, lengths lo..hi of the form
# base + k * step, first pointer, allowed flags (IPv4: see IPV4_OPTIONS), the subtype the option's
# third byte must carry in its high nibble (-1: any) and whether the MPTCP DSS flags set its length;
# TCP lengths are 2 + data (SACK: 2 + 8 bytes per block), no pointer or flags
OPTION_SHAPES = {
    "ipv4": np.array([(*shape, -1, 0) for shape in IPV4_OPTIONS], dtype=np.int64),
    "tcp": np.array([(k, lo, hi, 2, 8 if k == 5 else 1, 0, 0, -1, 0) for k, (lo, hi, _syn) in TCP_OPTIONS.items()
                     if k != MPTCP]
                    + [(MPTCP, lo, hi, lo, step, 0, 0, sub, int(sub == MPTCP_DSS))
                       for sub, lo, hi, step in MPTCP_SUBTYPES], dtype=np.int64),
}
# the field counting a header's length (options included) in 32-bit words
HEADER_LENGTH_FIELD = {"ipv4": "ipv4_hl", "tcp": "tcp_doff"}
# ICMP type -> valid codes for types whose body needs nothing beyond the 8-byte header, or
# fixed fields any bytes fill (ICMP_BODY_BYTES_V4), or the quote repair writes (ICMP_ERRORS_V4):
# echo, the errors, router advertisement and solicitation (RFC 1256: an advertisement's body
# must hold the address entries its header announces, ICMP_ROUTER_ADVERTISEMENT), timestamp,
# information and address mask request / reply (RFC 792, 950)
ICMP_TYPES_V4 = {0: (0,), 8: (0,), 3: tuple(range(16)), 4: (0,), 5: (0, 1, 2, 3), 11: (0, 1), 12: (0, 1, 2),
                 9: (0, 16), 10: (0,), 13: (0,), 14: (0,), 15: (0,), 16: (0,), 17: (0,), 18: (0,)}
ICMP_ROUTER_ADVERTISEMENT = 9
# the body bytes a type's fixed fields take (three timestamps, an address mask): tshark reads a
# shorter one as malformed
ICMP_BODY_BYTES_V4 = {13: 12, 14: 12, 17: 4, 18: 4}
# error messages quote the offending datagram: repair writes a minimal IPv4+UDP quote (28 bytes)
ICMP_ERRORS_V4 = (3, 4, 5, 11, 12)
ICMP_QUOTE_BYTES = 28
# per v4 type (0-255), the payload bytes its body needs (an advertisement's depends on its header)
_ICMP_MIN_BODY_V4 = np.zeros(256, dtype=np.int64)
_ICMP_MIN_BODY_V4[list(ICMP_ERRORS_V4)] = ICMP_QUOTE_BYTES
_ICMP_MIN_BODY_V4[list(ICMP_BODY_BYTES_V4)] = list(ICMP_BODY_BYTES_V4.values())
ICMP_TYPES_V6 = {128: (0,), 129: (0,)}

Arr = np.ndarray

RULES = ("stack", "options", "ipv4", "ipv6", "tcp_fields", "udp", "icmp", "endpoints", "lengths",
         "tcp_flags", "tcp_seq", "tcp_ack", "tcp_window", "tcp_options", "tcp_sack", "ip_id", "ipv4_checksum",
         "l4_checksum")

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


class _Attempts(NamedTuple):
    """A class's TCP connections split into attempts (:func:`netdiffusion.repair.tcp.tcp_attempts`)."""

    conn: np.ndarray  # per TCP row, its connection before the split
    attempt: np.ndarray  # its attempt within the connection
    nconn: int  # connections before the split
    session: np.ndarray  # its session within the connection (a new one on reused ports)
    pairs: np.ndarray  # per row, its (connection, session): the connections as tshark tells them apart


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
    # header -> rows that carry it after repair (the stack chosen: every other header is blank)
    headers: dict[str, np.ndarray] | None = None


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



# -- compiled rules (one pass over the rows each; positions come from the Layout as arguments) ------

@kernel
def _presence(m: Arr, starts: Arr, fixed: Arr, l3: Arr, padding_share: np.float32) -> tuple[Arr, Arr, Arr]:
    """Per row and header: present (not ABSENT) bits of the header's fixed part (columns
    ``starts[h]:starts[h] + fixed[h]``), their share (float32, as numpy rounds it) and whether
    the best network-layer share (headers ``l3``) reaches ``padding_share``."""
    n, nh = m.shape[0], len(starts)
    present = np.empty((n, nh), dtype=np.int64)
    share = np.empty((n, nh), dtype=np.float32)
    keep = np.empty(n, dtype=np.bool_)
    flat, width = m.reshape(-1), m.shape[1]
    for i in range(n):
        if i + W.AHEAD < n:
            for h in range(nh):
                for c in range(starts[h], starts[h] + fixed[h], 64):
                    W.prefetch(flat, (i + W.AHEAD) * width + c)
        for h in range(nh):
            c = np.int32(0)
            for v in m[i, starts[h] : starts[h] + fixed[h]]:
                c += np.int32(v != ABSENT)
            present[i, h] = c
            share[i, h] = np.float32(c / fixed[h])
        best = share[i, l3[0]]
        for h in l3[1:]:
            best = max(best, share[i, h])
        keep[i] = best >= padding_share
    return present, share, keep


@kernel
def _stack(m: Arr, flow: Arr, nflows: int, present: Arr, share32: Arr, starts: Arr, fixed: Arr, stops: Arr,
           l3: Arr, l4: Arr, per_flow: bool, min_share: float, counts: Arr, changed: Arr) -> tuple[Arr, Arr, Arr]:
    """The stack rule in one pass: per row the network header (of ``l3``, best share) and the
    transport header (of ``l4``, best share if at least ``min_share``; -1 none), shares summed per
    flow first where ``per_flow`` (in row order, as ``np.add.at``). Headers a row does not carry are
    blanked (every column ABSENT); the absent bits of the fixed part of those it carries become 0.
    Changed bits per row are added to ``counts`` (from the presence counts: nothing wrote these
    columns since) and ``changed[h]`` flags the rows whose header ``h`` changed. Returns the chosen
    positions in ``l3`` / ``l4`` per row and which headers changed anywhere."""
    n, nh = m.shape[0], len(starts)
    sums = np.zeros((nflows if per_flow else 0, nh))
    rows_of = np.zeros(nflows if per_flow else 0, dtype=np.int64)
    if per_flow:
        for i in range(n):
            for h in range(nh):
                sums[flow[i], h] += np.float64(share32[i, h])
            rows_of[flow[i]] += 1
    pick3 = np.empty(n, dtype=np.int64)
    pick4 = np.full(n, -1, dtype=np.int64)
    anywhere = np.zeros(nh, dtype=np.bool_)
    sh = np.empty(nh)
    flat, width = m.reshape(-1), m.shape[1]
    for i in range(n):
        if i + W.AHEAD < n:  # the columns this row will likely visit (a guess: only a hint)
            a = i + W.AHEAD
            for h in range(nh):
                if 0 < present[a, h] < fixed[h]:
                    lo, hi = starts[h], starts[h] + fixed[h]
                elif present[a, h] == 0 and stops[h] > starts[h] + fixed[h]:
                    lo, hi = starts[h] + fixed[h], stops[h]
                else:
                    continue
                for c in range(lo, hi, 64):
                    W.prefetch(flat, a * width + c)
        row = m[i]
        for h in range(nh):
            if per_flow:
                sh[h] = sums[flow[i], h] / max(rows_of[flow[i]], 1)
            else:
                sh[h] = np.float64(share32[i, h])
        best = 0
        for c in range(1, len(l3)):
            if sh[l3[c]] > sh[l3[best]]:
                best = c
        pick3[i] = best
        on3 = l3[best]
        on4 = -1
        if len(l4):
            best = 0
            for c in range(1, len(l4)):
                if sh[l4[c]] > sh[l4[best]]:
                    best = c
            if sh[l4[best]] >= min_share:
                pick4[i] = best
                on4 = l4[best]
        for h in range(nh):
            if h == on3 or h == on4:
                c = fixed[h] - present[i, h]
                if c > 0:
                    part = row[starts[h] : starts[h] + fixed[h]]
                    for k in range(len(part)):
                        part[k] += part[k] == ABSENT  # -1 -> 0, every other value as it is
            else:
                c = present[i, h]
                for v in row[starts[h] + fixed[h] : stops[h]]:  # the options part counts too
                    c += v != ABSENT
                if c > 0:
                    row[starts[h] : stops[h]] = ABSENT
            if c > 0:
                counts[i] += c
                changed[h, i] = True
                anywhere[h] = True
    return pick3, pick4, anywhere


@kernel
def _dss_length_fits(flags: int, length: int) -> bool:
    """Whether an MPTCP Data Sequence Signal of ``length`` bytes holds what its ``flags`` announce."""
    ack = ((8 if flags & 2 else 4) if flags & 1 else 0)
    mapping = ((8 if flags & 8 else 4) + 6 if flags & 4 else 0)
    need = 4 + ack + mapping
    return length == need or (mapping > 0 and length == need + 2)  # + the optional checksum


@kernel
def _option_walk(words: Arr, rows: Arr, start: int, nb: int, shapes: Arr, claimed: Arr
                 ) -> tuple[Arr, Arr, Arr, Arr, Arr]:
    """The TLV walk of the ``nb`` option bytes from column ``start`` of each of ``rows``: the bytes
    (absent bits read as 0), the new option length (the present whole words of the list, cut to
    the word after the first malformed option: one matching no row of ``shapes`` (kind, lengths
    ``lo..hi`` of the form ``base`` + a multiple of ``step``, first pointer, allowed flags: see
    ``IPV4_OPTIONS``), or one running past the list; zero padding after the cut; a pointer off its
    steps set back to the last valid one), the kind at each option's first byte (-1 elsewhere,
    int16) and whether the row's
    option columns must be rewritten (:func:`_option_write`'s test, made here while the row is
    read anyway) and the option length before the cut (the header the packet had).

    The list is the present whole words, or ``claimed[i]`` bytes (what the row's header length
    field says, -1: unknown) where that is longer and more than half of the bits between the two
    are present: a few absent bits inside the list are lost bits of the options the header length
    counts, not its end (the absent bits read as 0). Cutting the list there instead made the
    header shorter than the IP length counts it, so a bare ACK carried the missing option bytes as
    payload (tshark: out-of-order segments in nDPI flows at 0.1% corruption). A list cut by the
    capture's snap length has its missing bytes all absent and keeps its present length. Simple
    loops over one row's words: they compile to SIMD code."""
    n = len(rows)
    data = np.empty((n, nb), dtype=np.uint8)
    length = np.empty(n, dtype=np.int64)
    before = np.empty(n, dtype=np.int64)
    kind_at = np.full((n, nb), -1, dtype=np.int16)
    differs = np.zeros(n, dtype=np.bool_)
    xs = np.empty(nb, dtype=np.uint64)
    flat, nw = words.reshape(-1), words.shape[1]
    j0, s = start >> 3, np.uint64(8 * (start & 7))
    for i in range(n):
        if i + W.AHEAD < n:
            W.prefetch_row(flat, rows[i + W.AHEAD] * nw, j0, ((start + 8 * nb - 1) >> 3))
        base = rows[i] * nw + j0  # (inline: a helper taking the arrays costs ~2x here)
        if s == 0:
            for b in range(nb):
                xs[b] = flat[base + b]
        else:
            for b in range(nb):
                xs[b] = (flat[base + b] >> s) | (flat[base + b + 1] << (np.uint64(64) - s))
        out = data[i]
        kinds_here = kind_at[i]
        for b in range(nb):
            out[b] = W.pack(xs[b])
        run = nb
        for b in range(nb):
            if W.nonzero_bytes(~xs[b]) != W.HIGH:  # a column of the byte absent
                run = b
                break
        full = (run // 4) * 4
        c = claimed[i]
        had = full
        if full < c <= nb and c % 4 == 0:
            present = 0
            for b in range(full, c):
                present += W.count_bytes(W.nonzero_bytes(~xs[b]))
            if 2 * present > 8 * (c - full):
                full = c
                had = c
            else:
                # cut by the snap length: every byte from the first absent one to the claimed end
                # absent. The list keeps its present length, but the packet had the claimed
                # header: the IP length counts it, and read against the present length the
                # missing option bytes became payload (8 phantom bytes on each bare ACK of the
                # shared YouTube captures, 72-byte snap length; the TCP rules then renumbered
                # around them, and a second repair dropped them)
                snapped = True
                for b in range(run, c):
                    if xs[b] != W.FULL:
                        snapped = False
                        break
                if snapped:
                    had = c
        before[i] = had
        cut = full
        rewrite = False
        p = 0
        while p < full:
            kind = np.int64(out[p])
            if kind == 0:  # end of list
                cut = p + 1
                kinds_here[p] = 0
                break
            if kind == 1:  # no-op
                kinds_here[p] = 1
                p += 1
                continue
            ln = np.int64(out[p + 1]) if p + 1 < nb else 0
            shape = -1
            if p + ln <= full:
                for a in range(shapes.shape[0]):
                    if (kind == shapes[a, 0] and shapes[a, 1] <= ln <= shapes[a, 2]
                            and (ln - shapes[a, 3]) % shapes[a, 4] == 0
                            and (shapes[a, 6] == 0 or (shapes[a, 6] >> (np.int64(out[p + 3]) & 15)) & 1)
                            and (shapes[a, 7] < 0 or np.int64(out[p + 2]) >> 4 == shapes[a, 7])
                            and (shapes[a, 8] == 0 or _dss_length_fits(np.int64(out[p + 3]), ln))):
                        shape = a
                        break
            if shape < 0:
                cut = p
                break
            step, ptr0 = shapes[shape, 4], shapes[shape, 5]
            if ptr0:  # a pointer: ptr0, ptr0 + step, ... up to ln + 1 (the option is full)
                ptr = np.int64(out[p + 2])
                fixed = ptr0 + ((min(max(ptr, ptr0), ln + 1) - ptr0) // step) * step
                if fixed != ptr:
                    out[p + 2] = fixed
                    rewrite = True
            kinds_here[p] = kind
            p += ln
        new = min(((cut + 3) // 4) * 4, full) if cut < full else full
        change = rewrite or new != run  # (the walk set kinds only before the cut: the rest stay -1)
        for b in range(cut, new):
            change |= out[b] != 0
            out[b] = 0
        for b in range(new, nb):
            change |= xs[b] != W.FULL  # a present bit past the new length
        length[i] = new
        differs[i] = change
    return data, length, kind_at, differs, before


@kernel
def _option_write(words: Arr, rows: Arr, start: int, nb: int, data: Arr, length: Arr, counts: Arr,
                  changed: Arr) -> int:
    """Option bytes ``data[i, :length[i]]`` (ABSENT after) into the ``nb`` bytes from column
    ``start`` of ``rows[i]``, rewriting only rows whose bytes (absent bits read as 0), present
    length or stray bits past the length differ; counts changed bits as :func:`bitwords.put`."""
    j0, s = start >> 3, np.uint64(8 * (start & 7))
    t = np.uint64(64) - s
    xs = np.empty(nb, dtype=np.uint64)
    nw = np.empty(nb, dtype=np.uint64)
    rows_changed = 0
    flat, row_words = words.reshape(-1), words.shape[1]
    for i in range(len(rows)):
        if i + W.AHEAD < len(rows):
            W.prefetch_row(flat, rows[i + W.AHEAD] * row_words, j0, ((start + 8 * nb - 1) >> 3))
        r = rows[i]
        row = words[r]
        base = r * row_words + j0
        if s == 0:
            for b in range(nb):
                xs[b] = flat[base + b]
        else:
            for b in range(nb):
                xs[b] = (flat[base + b] >> s) | (flat[base + b + 1] << t)
        new_bytes = data[i]
        L = length[i]
        run = nb
        for b in range(nb):
            if W.nonzero_bytes(~xs[b]) != W.HIGH:
                run = b
                break
        differs = run != L
        for b in range(nb):
            nw[b] = W.unpack(np.uint64(new_bytes[b])) if b < L else W.FULL
            if b < L:
                differs |= W.pack(xs[b]) != new_bytes[b]
            else:
                differs |= xs[b] != W.FULL  # a present bit past the new length
        if not differs:
            continue
        c = 0
        for b in range(nb):
            c += W.count_bytes(W.nonzero_bytes(xs[b] ^ nw[b]))
        if c:
            if s == 0:
                row[j0 : j0 + nb] = nw
            else:
                for b in range(nb):
                    row[j0 + b] = (row[j0 + b] & ~(W.FULL << s)) | (nw[b] << s)
                    row[j0 + b + 1] = (row[j0 + b + 1] & ~(W.FULL >> t)) | (nw[b] >> t)
            counts[r] += c
            changed[r] = True
            rows_changed += 1
    return rows_changed


@kernel
def _popcount(x: np.uint64) -> int:
    """Set bits of ``x``."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@kernel
def _closer(both: Arr, a: Arr, b: Arr, fl: Arr) -> Arr:
    """Per row (source words then destination words, ``both``): 1 where its flow's endpoints
    ``(b, a)`` are closer in Hamming distance to (source, destination) than ``(a, b)`` (int8)."""
    n, k = both.shape[0], a.shape[1]
    out = np.empty(n, dtype=np.int8)
    for i in range(n):
        f = fl[i]
        d0 = 0
        d1 = 0
        for c in range(k):
            s, d = np.uint64(both[i, c]), np.uint64(both[i, k + c])
            d0 += _popcount(s ^ np.uint64(a[f, c])) + _popcount(d ^ np.uint64(b[f, c]))
            d1 += _popcount(s ^ np.uint64(b[f, c])) + _popcount(d ^ np.uint64(a[f, c]))
        out[i] = d1 < d0
    return out


@kernel
def _fast_open_cookies(kinds: Arr, data: Arr, fast_open: int, experiment: int, magic0: int, magic1: int) -> Arr:
    """Per row of the option table: does it hold a Fast Open cookie (see
    :meth:`Repairer._fast_open_cookie`). One pass over the table (two ``np.nonzero`` scans of it
    cost ~7% of the rules)."""
    n, nb = kinds.shape
    cookie = np.zeros(n, np.bool_)
    for r in range(n):
        for at in range(nb):
            k = kinds[r, at]
            if k == fast_open:
                size = np.int64(data[r, min(at + 1, nb - 1)]) - 2
                if 4 <= size <= 16 and size % 2 == 0:
                    cookie[r] = True
            elif k == experiment and at + 3 < nb and data[r, at + 2] == magic0 and data[r, at + 3] == magic1 \
                    and data[r, at + 1] >= 8:
                cookie[r] = True
    return cookie


_NO_ROWS = np.zeros(0, dtype=np.int64)


class Repairer:
    """Applies the rules to one batch of flows; see :func:`repair_matrix`."""

    def __init__(self, layout: Layout, matrix: np.ndarray, flow: np.ndarray, cfg: RepairConfig,
                 copy: bool = True, first_flow: int = 0) -> None:
        if not set(L3) & set(layout.headers):
            raise ValueError(f"the layout ({', '.join(layout.headers)}) has no network header ({' or '.join(L3)}): "
                             "no packet can be built")
        self.layout = layout
        matrix = np.asarray(matrix)
        # e.g. a read-only Arrow buffer; the compiled rules read C-contiguous rows
        copy = copy or matrix.dtype != np.int8 or not matrix.flags.writeable or not matrix.flags.c_contiguous
        self.m = np.array(matrix, dtype=np.int8, copy=True, order="C") if copy else matrix
        self.flow = np.asarray(flow, dtype=np.int64)
        self.cfg = cfg
        # the class-wide number of flow 0 here: a class repaired in parts keeps its anonymized hosts
        # distinct and draws other generated timestamps in each part
        self.first_flow = int(first_flow)
        self.n = self.m.shape[0]
        self.nflows = int(self.flow.max()) + 1 if self.n else 0
        self.bits: dict[str, np.ndarray] = {r: np.zeros(self.n, dtype=np.int64) for r in RULES}
        self.fields: dict[tuple[str, str], np.ndarray] = {}
        # the TCP rows' order while tcp_state groups interleaved connections (else None: row order)
        self._tcp_order: np.ndarray | None = None

    # -- accounting -------------------------------------------------------------------------------
    def _matrix_words(self) -> np.ndarray:
        """The matrix as uint64 words (eight columns each), the view the field kernels use."""
        return W.words_of(self.m)

    def _changed(self, rule: str, key: str) -> tuple[np.ndarray, bool]:
        """The rows ``rule`` changed in field ``key`` so far (a new all-False mask if none yet: the
        caller adds it to :attr:`fields` only once some row changes) and whether it is new."""
        mask = self.fields.get((rule, key))
        return (np.zeros(self.n, dtype=bool), True) if mask is None else (mask, False)

    def _put(self, rule: str, key: str, rows: np.ndarray, values: np.ndarray | int) -> None:
        """Write integer ``values`` into field ``key`` of ``rows``, counting changed bits per row
        (and the rows that changed) for the report: one compiled pass (:func:`bitwords.put`)."""
        values = np.asarray(values, dtype=np.int64)
        self._put_many(rule, [key], rows, values.reshape(-1, 1))

    def _put_many(self, rule: str, keys: list[str], rows: np.ndarray, values: np.ndarray,
                  parts: list[tuple[int, int, int]] | None = None, skip: bool = False) -> None:
        """:meth:`_put` of several fields of the same rows in one pass: ``values`` ``(rows or 1,
        fields)``; with ``skip``, a negative value leaves that field of that row as it is (so each
        field can change its own subset of the rows). ``parts`` (optional): the ``(key index,
        first column, width)`` written per column of ``values``, for fields wider than 62 bits
        written in pieces."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        if not len(rows):
            return  # (the fields need not be in the layout then)
        if parts is None:
            fields = [self.layout.field(k) for k in keys]
            for f in fields:
                if f.width > 62:
                    raise ValueError(f"{f.key} is {f.width} bits wide; write it in parts of 62 bits or fewer")
            parts = [(i, self.layout.field_slice(f).start, f.width) for i, f in enumerate(fields)]
        values = np.ascontiguousarray(values, dtype=np.int64)
        if values.shape[0] not in (1, len(rows)) or values.shape[1] != len(parts):
            raise ValueError(f"values of shape {values.shape} for {len(rows)} rows and {len(parts)} fields")
        changed = np.zeros((len(keys), self.n), dtype=bool)
        # all rows, in row order (tcp_state may hand every row grouped by connection instead)
        every = len(rows) == self.n and (self._tcp_order is None or bool(np.all(rows[1:] > rows[:-1])))
        flagged = W.put(self._matrix_words(), np.ascontiguousarray(rows, dtype=np.int64), every,
                        np.array([p[1] for p in parts], dtype=np.int64), np.array([p[2] for p in parts], dtype=np.int64),
                        values, skip, self.bits[rule], changed, np.array([p[0] for p in parts], dtype=np.int64))
        for k, key in enumerate(keys):
            if flagged[k]:
                mask = self.fields.get((rule, key))
                if mask is None:
                    self.fields[(rule, key)] = changed[k]
                else:
                    mask |= changed[k]

    def _get(self, key: str, rows: np.ndarray | None = None) -> np.ndarray:
        """Field values (int64, -1 where absent), reading only the field's columns."""
        return self._get_many([key], rows)[:, 0]

    def _get_many(self, keys: list[str], rows: np.ndarray | None = None, absent: int = W.NEGATIVE,
                  parts: list[tuple[int, int]] | None = None) -> np.ndarray:
        """:meth:`_get` of several fields in one pass: ``(rows, fields)``. ``parts`` (optional):
        ``(first column, width)`` pieces to read instead of the fields ``keys``; ``absent`` as
        :func:`bitwords.read`'s."""
        if parts is None:
            fields = [self.layout.field(k) for k in keys]
            parts = [(self.layout.field_slice(f).start, f.width) for f in fields]
        if rows is None:
            rows, every = _NO_ROWS, True
        else:
            rows = np.asarray(rows)
            rows, every = np.ascontiguousarray(np.flatnonzero(rows) if rows.dtype == bool else rows,
                                               dtype=np.int64), False
        return W.read(self._matrix_words(), rows, every, np.array([p[0] for p in parts], dtype=np.int64),
                      np.array([p[1] for p in parts], dtype=np.int64), absent)

    def _address_words(self, rows: np.ndarray, keys: list[str]) -> np.ndarray:
        """Address fields ``keys`` of ``rows`` as int64 32-bit words, side by side (absent bits
        read as 0), all read in one pass."""
        parts = [(c, 32) for k in keys for c in range(self.layout.field_slice(k).start, self.layout.field_slice(k).stop, 32)]
        return self._get_many(keys, rows, W.NEVER, parts)

    def has(self, header: str) -> bool:
        return header in self.layout.headers

    # -- rules ------------------------------------------------------------------------------------
    def run(self, timestamp: np.ndarray) -> RepairResult:
        keep = self.drop_padding()
        self.stack()
        self.options_structure()
        # before fixed_fields, whose protocol rule needs the payload the packet will carry (read
        # from the IP length against the headers the row came with, not the generated IHL)
        self.payload, self.mtu_cut = self.payload_lengths()
        self.fixed_fields()
        self.endpoints()
        self.ts, generated = self.timestamps(timestamp[keep])
        if self.has("icmp"):
            self.icmp_types()
        if self.has("tcp"):
            self.tcp_state()
        self.lengths()
        self.ip_id()
        self.ipv4_checksum()
        return RepairResult(self.m, keep, self.flow, self.direction, self.payload, self.ts,
                            self.bits, self.fields, generated, self.is_)

    def drop_padding(self) -> np.ndarray:
        """Rows with (almost) no network-layer bits are padding the model emitted, not packets."""
        headers = self.layout.headers
        # present bits of each header's fixed part (Layout.present_share's numbers, kept as counts:
        # the stack rule's blanking counts its changes from them)
        starts = np.array([self.layout.header_slice(h).start for h in headers], dtype=np.int64)
        fixed = np.array([HEADERS[h].min_bits for h in headers], dtype=np.int64)
        l3 = np.array([headers.index(h) for h in L3 if self.has(h)], dtype=np.int64)
        present, share, keep = _presence(self.m, starts, fixed, l3, np.float32(self.cfg.padding_share))
        if not keep.all():
            present, share = present[keep], share[keep]
            self.m, self.flow = self.m[keep], self.flow[keep]
            self.n = self.m.shape[0]
            self.bits = {r: v[keep] for r, v in self.bits.items()}
        self._share = share  # reused by the stack decision
        self._present = present
        return keep

    def stack(self) -> None:
        """Choose L3/L4 per packet (or per flow) by share of present bits; blank the rest."""
        layout, n = self.layout, self.n
        # which sequence number bits are absent, before they become 0 below: each is one of two
        # values, and the TCP rule picks the one the neighbouring segments agree with
        self._seq_unknown = self._length_unknown = None
        if self.has("tcp"):
            # and the IP length's (IPv4 total length or IPv6 payload length: bytes either way; the
            # chosen network header's, below); all read in one pass
            lengths = [(h, k) for h, k in (("ipv4", "ipv4_tl"), ("ipv6", "ipv6_len")) if self.has(h)]
            keys = ["tcp_seq", *(k for _, k in lengths)]
            masks = W.absent_columns(self._matrix_words(),
                                     np.array([layout.field_slice(k).start for k in keys], dtype=np.int64),
                                     np.array([layout.field(k).width for k in keys], dtype=np.int64))
            self._seq_unknown = np.ascontiguousarray(masks[:, 0])
            ip_length = {h: masks[:, 1 + i] for i, (h, _) in enumerate(lengths)}
        headers = layout.headers
        col = {h: i for i, h in enumerate(headers)}
        l3_cands = [h for h in L3 if h in col]
        l4_cands = [h for h in L4 if h in col]
        slices = [layout.header_slice(h) for h in headers]
        changed = np.zeros((len(headers), n), dtype=bool)
        pick3, pick4, anywhere = _stack(
            self.m, self.flow, self.nflows, self._present, self._share,
            np.array([s.start for s in slices], dtype=np.int64),
            np.array([HEADERS[h].min_bits for h in headers], dtype=np.int64),
            np.array([s.stop for s in slices], dtype=np.int64),
            np.array([col[h] for h in l3_cands], dtype=np.int64), np.array([col[h] for h in l4_cands], dtype=np.int64),
            self.cfg.stack == "flow", float(self.cfg.min_share), self.bits["stack"], changed)
        self.l3 = np.array(l3_cands)[pick3] if n else np.array([], dtype="<U4")
        self.l4 = np.array([*l4_cands, ""])[pick4] if l4_cands else np.full(n, "", dtype="<U4")
        self.is_ = {h: pick3 == l3_cands.index(h) if h in L3 else pick4 == l4_cands.index(h) for h in headers}
        if self.has("tcp"):
            self._length_unknown = np.zeros(n, dtype=np.int64)
            for h, mask in ip_length.items():
                self._length_unknown[self.is_[h]] = mask[self.is_[h]]
        for i, h in enumerate(headers):
            if anywhere[i]:
                self.fields[("stack", f"{h}_header")] = changed[i]

    def _option_columns(self, header: str) -> tuple[str, int, int]:
        """Field key, first column and number of bytes of ``header``'s options."""
        opt = self.layout.field(f"{header}_opt")
        return opt.key, self.layout.field_slice(opt).start, opt.width // 8

    def _walk_options(self, header: str, rows: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Parse option bytes (TLV walk, compiled); cut at the first malformed option.

        Returns ``(data, length, kind_at, differs, before)``: repaired option bytes, option length
        in bytes (a multiple of 4), the option kind at each option's first byte (-1 elsewhere), the
        rows whose option bits :meth:`_write_options` must rewrite and the option length before
        the cut."""
        _, start, nb = self._option_columns(header)
        size = self._get(HEADER_LENGTH_FIELD[header], rows)  # 32-bit words, -1 where absent
        claimed = np.where(size >= 0, 4 * size - HEADERS[header].min_bits // 8, -1)
        return _option_walk(self._matrix_words(), np.ascontiguousarray(rows, dtype=np.int64), start, nb,
                            OPTION_SHAPES[header], np.ascontiguousarray(claimed, dtype=np.int64))

    def _write_options(self, rule: str, header: str, rows: np.ndarray, data: np.ndarray,
                       length: np.ndarray) -> None:
        """Option bytes ``data`` of ``length`` into ``rows`` (only rows whose options differ)."""
        if not len(rows):
            return
        key, start, nb = self._option_columns(header)
        mask, fresh = self._changed(rule, key)
        if _option_write(self._matrix_words(), np.ascontiguousarray(rows, dtype=np.int64), start, nb,
                         np.ascontiguousarray(data, dtype=np.uint8), np.ascontiguousarray(length, dtype=np.int64),
                         self.bits[rule], mask) and fresh:
            self.fields[(rule, key)] = mask

    def options_structure(self) -> None:
        """Keep the well-formed prefix of IPv4/TCP options (known kinds, valid lengths)."""
        self.opt_len: dict[str, np.ndarray] = {}
        self.opt_kind: dict[str, np.ndarray] = {}
        self.opt_data: dict[str, np.ndarray] = {}
        self.opt_len_before: dict[str, np.ndarray] = {}  # the options the rows came with
        for h in ("ipv4", "tcp"):
            if not self.has(h):
                continue
            rows = np.flatnonzero(self.is_[h])
            data, length, kind_at, differs, before = self._walk_options(h, rows)
            at = np.flatnonzero(differs)
            self._write_options("options", h, rows[at], data[at], length[at])
            full = np.zeros(self.n, dtype=np.int64)
            full[rows] = length
            self.opt_len[h] = full
            full = np.zeros(self.n, dtype=np.int64)
            full[rows] = before
            self.opt_len_before[h] = full
            self.opt_kind[h] = kind_at
            self.opt_data[h] = data

    def fixed_fields(self) -> None:
        """Header fields with one valid value (or range) regardless of the flow.

        Each header's fields are read in one pass and written in one (a field's value -1: not
        written in that row), the same values as reading and writing them one after the other."""
        cfg = self.cfg
        proto = np.full(self.n, -1, dtype=np.int64)
        for h in L4:
            if self.has(h):
                proto[self.is_[h]] = IP_PROTO[h]
        self.first_fragment = np.zeros(self.n, dtype=bool)  # rows are final here (padding dropped)
        if self.has("ipv4"):
            rows = np.flatnonzero(self.is_["ipv4"])
            mf, off, tl, hl, ttl, cur = self._get_many(
                ["ipv4_mfbit", "ipv4_foff", "ipv4_tl", "ipv4_hl", "ipv4_ttl", "ipv4_proto"], rows).T
            v4_payload = tl - 4 * hl
            first = self._first_fragments(rows, mf, off, v4_payload)
            self.first_fragment[rows] = first
            p = proto[rows]
            none = np.flatnonzero(p < 0)  # rows without an L4 header (judged alone: few)
            # the payload the row will carry (payload_lengths), not the generated total length less
            # the generated IHL: a corrupted IHL made a 16-byte IP-in-IP payload look 20 bytes long,
            # and the tunnel's inner header was then cut ("Bogus IP version", reduced layouts at 10%)
            cur, size = cur[none], self.payload[rows[none]]
            clash = np.isin(cur, [*IP_PROTO.values(), *IPV6_ONLY_PROTOS, *ZERO_PAYLOAD_MALFORMED])
            clash |= self._too_short(cur, size)
            clash |= (size > 0) & self._too_short(cur, size, SHORT_PAYLOAD_MALFORMED)
            clash |= self._malformed_sizes(cur, size)
            # RFC 3692 experimental protocol 253 where no L4 header follows and the number would
            # make the payload malformed
            new_proto = p.copy()
            new_proto[none] = np.where(clash, 253, -1)
            leave, n = -1, len(rows)  # -1: leave the field of that row alone
            self._put_many("ipv4", ["ipv4_ver", "ipv4_rbit", "ipv4_mfbit", "ipv4_foff", "ipv4_ttl", "ipv4_proto"], rows,
                           np.stack([np.full(n, 4), np.zeros(n, dtype=np.int64), np.where(first, leave, 0),
                                     np.zeros(n, dtype=np.int64), np.where(ttl <= 0, cfg.default_ttl & 0xFF, leave),
                                     new_proto], axis=1), skip=True)
        if self.has("ipv6"):
            rows = np.flatnonzero(self.is_["ipv6"])
            hl, cur, payload = self._get_many(["ipv6_hl", "ipv6_nh", "ipv6_len"], rows).T
            p = proto[rows]
            nh = np.where(p == IP_PROTO["icmp"], ICMPV6_PROTO, p)
            none = np.flatnonzero(p < 0)
            cur, payload = cur[none], payload[none]
            # a next header we would have encoded (TCP/UDP/ICMP) but no such header follows: tshark
            # would dissect the zero payload as one ("bogus TCP header length"); IGMP does not
            # exist over IPv6 (MLD is ICMPv6). ICMPv6 and other protocols nPrint does not encode
            # stay as generated (real rows carry them).
            clash = np.isin(cur, [*IP_PROTO.values(), IGMP_PROTO, *ZERO_PAYLOAD_MALFORMED,
                                  140])  # Shim6: malformed when zero
            # the extension headers the packet builder writes need their 8 payload bytes too, and
            # so does ICMPv6 (its echo header: less is malformed in tshark, and no real ICMPv6
            # message is shorter; a corrupted IPv6 length made one, shared youtube at 5%)
            sizes = {**SHORT_PAYLOAD_MALFORMED, **SYNTHETIC_PAYLOAD_BYTES, ICMPV6_PROTO: 8,
                     **IPV6_SHORT_PAYLOAD_MALFORMED, **{nh: len(b) for nh, b in IPV6_EXTENSION_PAYLOADS.items()}}
            clash |= self._too_short(cur, payload, sizes) | self._malformed_sizes(cur, payload)
            nh[none] = np.where(clash, IPV6_NO_NEXT_HEADER, -1)
            self._put_many("ipv6", ["ipv6_ver", "ipv6_hl", "ipv6_nh"], rows,
                           np.stack([np.full(len(rows), 6), np.where(hl <= 0, cfg.default_ttl & 0xFF, -1), nh], axis=1),
                           skip=True)
        if self.has("tcp"):
            t = self.is_["tcp"]
            self._put("tcp_fields", "tcp_res", t, 0)

    def icmp_types(self) -> None:
        """ICMP type/code pairs that exist and whose body the packet can hold (``ICMP_TYPES_V4``);
        anything else becomes an echo request."""
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
            if not is6:  # the body the type needs must fit in the payload
                need = _ICMP_MIN_BODY_V4[np.clip(typ, 0, 255)]
                advert = np.flatnonzero(known & (typ == ICMP_ROUTER_ADVERTISEMENT))
                if len(advert):  # addresses (first byte) x entry size in words (second byte)
                    roh = self._get("icmp_roh", rows[advert])
                    need[advert] = np.where(roh < 0, np.iinfo(np.int64).max, 4 * (roh >> 24) * ((roh >> 16) & 0xFF))
                known &= self.payload[rows] >= need
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
        for h in L3:
            if not self.has(h):
                continue
            rows = np.flatnonzero(self.is_[h])
            if not len(rows):
                continue
            v6 = h == "ipv6"
            both = self._address_words(rows, [f"{h}_src", f"{h}_dst"])
            src_words, dst_words = np.split(both, 2, axis=1)
            fl = self.flow[rows]
            if src_words.shape[1] == 1:  # IPv4: an address is its own key
                uniq = None
                keys = np.concatenate([src_words[:, 0], dst_words[:, 0]])
            else:
                uniq, keys = np.unique(np.concatenate([src_words, dst_words]), axis=0, return_inverse=True)
            top1, top2, has2 = G.mode(keys.reshape(-1), np.concatenate([fl, fl]), self.nflows)
            # (flows without rows here get some address: nothing below reads them)
            words1 = top1[:, None] if uniq is None else uniq[top1]
            words2 = top2[:, None] if uniq is None else uniq[top2]
            ep_a = np.unpackbits(words1.astype(">u4").view(np.uint8), axis=1).astype(np.int8)
            ep_b = np.unpackbits(words2.astype(">u4").view(np.uint8), axis=1).astype(np.int8)
            single = ~has2
            ep_b[single] = ep_a[single]
            # direction: which assignment is closer in Hamming distance (bits differing between
            # 0/1 rows: set bits of their packed words' XOR)
            direction = _closer(both, _words(ep_a), _words(ep_b), fl)
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
            flows_here = np.flatnonzero(np.bincount(fl, minlength=self.nflows))  # np.unique(fl), faster
            if self.cfg.anonymize:
                prefix = self.cfg.private_v6 if v6 else self.cfg.private_v4
                number = flows_here + self.first_flow
                ep_a[flows_here] = _private_hosts(prefix, v6, 2 * number + 1 + 2 * self.cfg.seed)
                ep_b[flows_here] = _private_hosts(prefix, v6, 2 * number + 2 + 2 * self.cfg.seed)
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
            wa, wb = _words(ep_a)[fl], _words(ep_b)[fl]
            keys = [f"{h}_src", f"{h}_dst"]
            parts = [(i, c, 32) for i, k in enumerate(keys)  # 32 bits at a time
                     for c in range(self.layout.field_slice(k).start, self.layout.field_slice(k).stop, 32)]
            new = np.concatenate([np.where(dirb[:, None], wb, wa), np.where(dirb[:, None], wa, wb)], axis=1)
            self._put_many("endpoints", keys, rows, new, parts)
            self.direction[rows] = direction
        for h, (sp, dp) in PORT_FIELDS.items():
            if not self.has(h):
                continue
            rows = np.flatnonzero(self.is_[h])
            if not len(rows):
                continue
            fl = self.flow[rows]
            d = self.direction[rows].astype(bool)
            s, t = self._get_many([sp, dp], rows).T
            client = np.where(d, t, s)
            server = np.where(d, s, t)
            pa = G.mode(client, fl, self.nflows)[0]
            pb = G.mode(server, fl, self.nflows)[0]
            idx = np.arange(self.nflows)
            pa = np.where(pa <= 0, 49152 + idx % 16384, pa)
            pb = np.where(pb <= 0, 1024 + idx % 1024, pb)
            same_host = getattr(self, "same_host", np.zeros(self.nflows, dtype=bool))
            pb = np.where((pb == pa) & same_host, np.where(pa == 65535, 1024, pa + 1), pb)
            self._put_many("endpoints", [sp, dp], rows, np.stack([np.where(d, pb[fl], pa[fl]), np.where(d, pa[fl], pb[fl])], axis=1))

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

    @staticmethod
    def _malformed_sizes(proto: np.ndarray, payload: np.ndarray) -> np.ndarray:
        """Rows whose zero payload is malformed for their protocol at its size
        (:data:`MALFORMED_PAYLOAD_SIZES`)."""
        bad = np.zeros(len(proto), dtype=bool)
        for number, (low, high) in MALFORMED_PAYLOAD_SIZES.items():
            bad |= (proto == number) & (payload >= low) & (payload < high)
        return bad

    def _first_fragments(self, rows: np.ndarray, mf: np.ndarray, off: np.ndarray, here: np.ndarray) -> np.ndarray:
        """Of the IPv4 ``rows`` (their MF bit, fragment offset and IP payload bytes ``here``), those
        kept as the first fragment of a longer UDP datagram (RFC 791: MF set, offset 0).

        Real captures hold them (encode skips the later fragments, which carry no UDP header):
        kept only where the UDP length says the datagram is longer than this packet and fits an
        IP packet, the one field that can show it; everywhere else MF is cleared. The UDP
        checksum then covers the whole datagram, whose bytes beyond this packet are zero payload."""
        first = np.zeros(len(rows), dtype=bool)
        if not self.has("udp"):
            return first
        sub = np.flatnonzero(self.is_["udp"][rows])
        if not len(sub):
            return first
        udp_len = self._get("udp_len", rows[sub])
        mf, off, here = mf[sub], off[sub], here[sub]  # UDP bytes in this packet: here
        first[sub] = (mf == 1) & (off == 0) & (here >= 8) & (udp_len > here) & (udp_len <= 65515)
        return first

    def header_lengths(self, before_options: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """L3 and L4 header bytes per row after option repair (``before_options``: with the
        options the rows came with)."""
        l3 = np.zeros(self.n, dtype=np.int64)
        l4 = np.zeros(self.n, dtype=np.int64)
        options = self.opt_len_before if before_options else self.opt_len
        for h in L3 + L4:
            if self.has(h):
                extra = options.get(h, 0)
                size = HEADERS[h].min_bits // 8 + extra
                target = l3 if h in L3 else l4
                target[self.is_[h]] = np.broadcast_to(size, (self.n,))[self.is_[h]]
        return l3, l4

    def payload_lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """Payload bytes implied by the generated IP length, within the MTU, and the bytes the MTU
        cut off (never sent: the TCP rule closes the gap they leave).

        The IP length is read against the headers the row came with: options the options rule
        cut make the packet shorter, not its payload longer (a TCP segment that grew by the cut
        bytes ran past its successor's sequence number: out-of-order segments in tshark)."""
        l3_in, l4_in = self.header_lengths(before_options=True)
        l3, l4 = self.header_lengths()
        total = np.zeros(self.n, dtype=np.int64)
        if self.has("ipv4"):
            v4 = self.is_["ipv4"]
            total[v4] = np.maximum(self._get("ipv4_tl")[v4], 0)
        if self.has("ipv6"):
            v6 = self.is_["ipv6"]
            total[v6] = np.maximum(self._get("ipv6_len")[v6], 0) + l3_in[v6]
        payload = np.maximum(total - l3_in - l4_in, 0)
        within = np.minimum(payload, np.maximum(self.cfg.mtu - l3 - l4, 0))
        return within, payload - within

    def tcp_state(self) -> None:
        """TCP flags, sequence and acknowledgement numbers per connection (see docs/repair.md).

        A connection is a flow's TCP packets of one address family (with ``stack="packet"`` a
        flow can hold an IPv4 and an IPv6 conversation), one attempt of it: a client retrying on
        the same ports after the server refused starts a new one (:func:`netdiffusion.repair.tcp.tcp_attempts`)."""
        t = np.flatnonzero(self.is_["tcp"])
        if not len(t):
            return
        # connection ids: (flow, IPv6, attempt) ranked; an attempt after a refusal is a connection
        ft = self.flow[t] * 2 + (self.l3[t] == "ipv6")
        if bool((ft[1:] < ft[:-1]).any()):
            # a flow's IPv4 and IPv6 conversations interleave (stack="packet"; rows come in flow
            # order, so with one family per flow ft never decreases): the kernels read a connection
            # as a run of rows, so each connection's rows go together, in flow order (read as one
            # connection per run, each run opened a handshake: random rows, seed 92)
            order = np.argsort(ft, kind="stable")
            t, ft = t[order], ft[order]
            self._tcp_order = order  # the option tables stay in row order (see _tcp_option_table)
        dt = self.direction[t].astype(np.int64)
        keys = ["tcp_syn", "tcp_ackf", "tcp_fin", "tcp_rst", "tcp_urg", "tcp_urp", "tcp_seq", "tcp_ackn"]
        fields = dict(zip(keys, np.ascontiguousarray(self._get_many(keys, t).T), strict=True))  # one pass
        attempt, session = T.tcp_attempts(ft, dt, fields["tcp_syn"], fields["tcp_ackf"], fields["tcp_rst"],
                                          2 * self.nflows, fields["tcp_fin"], fields["tcp_seq"], fields["tcp_ackn"])
        # (the connections with a refused attempt or a new session, for tcp_attempt_numbers; the
        # connections as tshark tells them apart, for the initial RTT: a new session is another)
        self._attempts = None
        nflows = self.nflows
        nconn = 2 * nflows
        if attempt.any():
            pairs = ft if not session.any() else \
                np.unique(ft * (int(session.max()) + 1) + session, return_inverse=True)[1].reshape(-1)
            self._attempts = _Attempts(ft, attempt, nconn, session, pairs)
            ft = np.unique(ft * (int(attempt.max()) + 1) + attempt, return_inverse=True)[1].reshape(-1)
            nconn = int(ft.max()) + 1
        self.nflows = nconn
        try:
            self._tcp_state(t, ft, dt, fields)
        finally:
            self.nflows = nflows
            self._tcp_order = None
        if self._attempts is not None and self._attempts.session.any():
            self._close_before_sessions(t, dt, self._attempts.conn, self._attempts.pairs)

    def _close_before_sessions(self, t: Arr, dt: Arr, conn: Arr, pairs: Arr) -> None:
        """A connection followed by a new one on the same ports (:func:`tcp.tcp_attempts`) must
        end closed as repaired (each side's FIN, or an RST), or its successor's SYN reads as ports
        reused mid-connection (a TCP error). Most real ones are; a capture that misses the close
        (tcpflow's bug5.pcap), or a FIN the rules cleared, leaves one open: the connection's last
        row without SYN then becomes an RST (nothing comes after it; an RST needs no sequence
        space): one bit, where numbering both as one connection changed hundreds."""
        flags = self._get_many(["tcp_fin", "tcp_rst", "tcp_syn"], t)
        fin, rst, syn = flags[:, 0] == 1, flags[:, 1] == 1, flags[:, 2] == 1
        ends = np.flatnonzero(np.r_[pairs[1:] != pairs[:-1], True])  # each (connection, session)'s rows
        starts = np.r_[0, ends[:-1] + 1]
        reset: list[int] = []
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            if b + 1 == len(conn) or conn[b + 1] != conn[b]:
                continue  # its connection's last session (else the next row is the next session's)
            rows = slice(a, b + 1)
            if rst[rows].any() or ((fin[rows] & (dt[rows] == 0)).any() and (fin[rows] & (dt[rows] == 1)).any()):
                continue
            candidates = np.flatnonzero(~syn[rows])
            if len(candidates):
                reset.append(a + int(candidates[-1]))
        if reset:
            self._put("tcp_flags", "tcp_rst", t[np.array(reset)], 1)

    def _tcp_state(self, t: Arr, ft: Arr, dt: Arr, fields: dict[str, Arr]) -> None:
        """Flags (the ``tcp_flags`` rule, :func:`netdiffusion.repair.tcp.tcp_flags`), then options,
        sequence and acknowledgement numbers.

        Handshake only where a connection starts at a connection start (first packet SYN without
        ACK): the client's packets before the server speaks are SYNs, the server's first packet the
        SYN-ACK (RST-ACK when it refuses), a capture starting at the SYN-ACK keeps it; everywhere
        else SYN is cleared and ACK set, no payload on handshake segments; FIN only where no later
        segment of the direction carries data beyond it (later FINs repeat the first), RST only
        where the direction sends nothing after it, URG only with 0 < urgent pointer <= payload.
        ``fields``: the generated flag, urgent pointer and sequence number fields of rows ``t``."""
        get = fields.__getitem__
        seq = get("tcp_seq")
        syn, fin, rst, ackf, urg, urp, payload, phase_c, synack, og = T.tcp_flags(
            ft, dt, get("tcp_syn"), get("tcp_ackf"), get("tcp_fin"), get("tcp_rst"), self.payload[t], seq,
            get("tcp_urg"), get("tcp_urp"), self.nflows, get("tcp_ackn"), self._fast_open_cookie(t))
        self._put_many("tcp_flags", ["tcp_syn", "tcp_fin", "tcp_rst", "tcp_ackf", "tcp_urg", "tcp_urp"], t,
                       np.stack([syn, fin, rst, ackf, urg, urp], axis=1))  # one pass
        self.payload[t] = payload
        self._tcp_options(t, ft, syn)
        self._tcp_seq_ack(t, ft, dt, og, seq, get("tcp_ackn"), syn, fin, rst, ackf, payload, phase_c, synack)

    def _tcp_seq_ack(self, t: Arr, ft: Arr, dt: Arr, og: Arr, seq: Arr, ackn: Arr, syn: Arr, fin: Arr, rst: Arr,
                     ackf: Arr, payload: Arr, phase_c: Arr, synack: Arr) -> None:
        """Sequence numbers per direction, then acknowledgements against what the peer sent
        (:func:`netdiffusion.repair.tcp.tcp_seq_ack`; the rules are in docs/repair.md).

        ``t`` are the TCP rows in flow order, ``ft``/``dt`` their connection and direction,
        ``og`` the order grouping them by (connection, direction); ``seq`` the generated sequence
        numbers, ``ackn`` the generated acknowledgement numbers (read with the flags: no rule
        before this one writes them), the other arrays the new flags and payload lengths."""
        ts = self.ts[t]
        psh = self._get("tcp_psh", t)
        seq = T.resolve_unknown_bits(og, T._bounds((ft * 2 + dt)[og]), seq, self._seq_unknown[t], payload + syn + fin)
        length_unknown = self._length_unknown[t]
        conn0 = self._attempts.pairs if self._attempts is not None else ft  # tshark's connections, for the initial RTT
        args = (self.nflows, self.cfg.gaps == "close", int(self.cfg.ack_window))
        mtu_cut = self.mtu_cut[t]
        new_seq, ack, new_payload, fixed = T.tcp_seq_ack(ft, dt, og, seq, ackn, syn, fin, rst, ackf, payload, phase_c,
                                                         synack, ts, *args, psh, length_unknown, conn0, mtu_cut)
        # The FIN rule again, on the repaired numbers: a FIN the sequence rule placed before data of
        # its direction (an unconfirmed jump moved to the next expected offset, or a closed gap,
        # with data captured after it numbered beyond it) would lose its flag when the output is
        # repaired again. It loses it now, and the connections holding one are numbered again with
        # the FIN's byte gone (only clearing, so this ends; a few rounds at most).
        bounds = T._bounds((ft * 2 + dt)[og])
        every = np.ones(len(t), np.bool_)
        fin_in = fin
        moved_to = np.zeros(len(t), dtype=bool)  # rows given a FIN moved there (never moved again)
        for _ in range(4):
            keep = T.fin_rule(og, bounds, new_seq, new_payload, fin, every, rst)
            cleared = keep != fin
            if not cleared.any():
                break
            fin = keep
            self._move_fins(og, bounds, ft * 2 + dt, seq, payload, ackn, new_seq, new_payload, fin, rst,
                            np.flatnonzero(cleared & ~moved_to), moved_to)
            redo = np.flatnonzero(np.isin(ft, np.unique(ft[cleared])))
            r_og = T.group_order(ft[redo] * 2 + dt[redo], 2 * self.nflows)
            r_seq, r_ack, r_payload, r_fixed = T.tcp_seq_ack(
                ft[redo], dt[redo], r_og, seq[redo], ackn[redo], syn[redo], fin[redo], rst[redo], ackf[redo],
                payload[redo], phase_c[redo], synack[redo], ts[redo], *args, psh[redo], length_unknown[redo],
                conn0[redo], mtu_cut[redo])
            new_seq[redo], ack[redo], new_payload[redo] = r_seq, r_ack, r_payload
            fixed = fixed or r_fixed
        if fin is not fin_in:
            self._put("tcp_flags", "tcp_fin", t, fin)
        # a segment left starting inside the one before it that ends highest: that one's length
        # was corrupted in a way the sequence rule could not prove (:func:`tcp_overlaps`)
        new_payload, new_seq, cut = T.tcp_overlaps(ft, dt, new_seq, ack, ackf, syn, fin, new_payload, self.nflows)
        fixed = fixed or bool(cut.any())
        payload = new_payload
        if fixed:  # corrupted payload lengths, replaced by what the sequence numbers imply
            self.payload[t] = payload
        if self._attempts is not None:  # one base number per direction for all attempts
            a = self._attempts
            new_seq, ack = T.tcp_attempt_numbers(a.conn, a.attempt, dt, new_seq, ack, ackf, syn, a.nconn, a.session)
        self._put("tcp_seq", "tcp_seq", t, new_seq)
        self._put("tcp_ack", "tcp_ackn", t, ack)
        self._tcp_zero_window_probes(t, ft, dt, og, new_seq, ack, ackf, syn, fin, payload)
        self._tcp_sack(t, ackf, ack)
        self._tcp_timestamps(t, ft, dt, og, rst, phase_c)

    @staticmethod
    def _move_fins(og: Arr, bounds: Arr, gid: Arr, seq0: Arr, pay0: Arr, ack0: Arr, seq: Arr, payload: Arr,
                   fin: Arr, rst: Arr, cleared: Arr, moved_to: Arr) -> None:
        """A FIN cleared because data captured after it was numbered beyond it moves to the
        direction's last data segment, where the peer acknowledged the FIN as generated (``seq0``
        + ``pay0`` + 1 in a later ``ack0``: it did close) and that segment now ends highest, with
        no FIN or RST of the direction left. That is a sender's last retransmissions after its FIN
        in a capture with real loss: the gaps closed, they became the direction's last bytes, and
        clearing the FIN left the connection open. An unacknowledged FIN (a generated one ahead
        of data below it) is only cleared. ``fin`` and ``moved_to`` are updated in place; rows
        are the TCP rows in flow order, ``seq`` / ``payload`` the repaired numbers."""
        if not len(cleared):
            return
        position = np.empty(len(og), dtype=np.int64)
        position[og] = np.arange(len(og))
        group_of = np.searchsorted(bounds, position, side="right") - 1
        group_at = {int(gid[og[a]]): k for k, a in enumerate(bounds[:-1])}
        for i in cleared:
            a, b = bounds[group_of[i]], bounds[group_of[i] + 1]
            rows = og[a:b]
            if fin[rows].any() or rst[rows].any():
                continue
            peer = group_at.get(int(gid[i] ^ 1))
            if peer is None:
                continue
            answers = og[bounds[peer]:bounds[peer + 1]]
            answers = answers[answers > i]
            if not (ack0[answers] == (seq0[i] + pay0[i] + 1) % T.MOD32).any():
                continue
            after = rows[position[i] - a + 1:]
            data = after[payload[after] > 0]
            if not len(data):
                continue
            last = data[-1]
            ends = (seq[rows] - seq[rows[0]]) % T.MOD32 + payload[rows]
            if ends[position[last] - a] >= ends.max():
                fin[last] = 1
                moved_to[last] = True

    def _tcp_zero_window_probes(self, t: Arr, ft: Arr, dt: Arr, og: Arr, seq: Arr, ack: Arr, ackf: Arr,
                                syn: Arr, fin: Arr, payload: Arr) -> None:
        """No zero window before a 1-byte segment whose byte the sender then treats as sent.

        Wireshark calls a 1-byte in-order segment sent while the peer's last advertised window is 0
        a zero-window probe and does not advance the sequence past it, so when the next segment of
        that direction starts one byte later it reports "previous segment not captured" and the
        peer's ACK "ACKed unseen segment" (so does the peer's ACK of the byte itself, or of a FIN
        riding on it). Generated windows can be 0 anywhere: such a zero window
        (an RST's too) gets the last non-zero window its direction advertised (1 if none). Real
        probes, whose next segment resends the same byte, are left alone
        (:func:`netdiffusion.repair.tcp.tcp_zero_window`)."""
        if len(t) < 3:
            return
        fix, value = T.tcp_zero_window(ft, dt, og, seq, ack, ackf, self._get("tcp_wsize", t), syn, fin, payload)
        fix = np.flatnonzero(fix)
        if len(fix):
            self._put("tcp_window", "tcp_wsize", t[fix], value[fix])

    def _fast_open_cookie(self, t: np.ndarray) -> np.ndarray:
        """Rows ``t`` (all TCP rows) whose options hold a Fast Open cookie (RFC 7413: 4 to 16 bytes,
        an even number; or the experimental option, 254 with magic 0xF989 and the cookie after it):
        a SYN's data counts as Fast Open only with one. (A cookie request has no cookie, and a
        2-byte "cookie" is one bit flip away from an MSS option: kind 2 -> 34.)"""
        cookie = _fast_open_cookies(*self._tcp_option_table(), TCP_FAST_OPEN, TCP_EXPERIMENT, *TCP_FAST_OPEN_MAGIC)
        assert len(cookie) == len(t)
        return cookie

    def _tcp_option_table(self) -> tuple[Arr, Arr]:
        """The TCP option table (kinds at each byte, bytes), a row per TCP row in the order
        :meth:`tcp_state` hands its rules (row order, unless it grouped interleaved connections)."""
        kind, data = self.opt_kind["tcp"], self.opt_data["tcp"]
        if self._tcp_order is None:
            return kind, data
        return kind[self._tcp_order], data[self._tcp_order]

    def _keep_tcp_options(self, rule: str, t: Arr, kind: Arr, data: Arr, length: Arr, moved: Arr) -> None:
        """A TCP option rule's result (on :meth:`_tcp_option_table`'s ``kind``, updated in place,
        and new ``data``): its ``moved`` rows (of ``t``) written back under ``rule``, and the option
        table the later rules read (kinds, bytes and lengths) replaced."""
        moved = np.flatnonzero(moved)
        if len(moved):
            self._write_options(rule, "tcp", t[moved], data[moved], length[moved])
        if self._tcp_order is None:
            self.opt_data["tcp"] = data
        else:
            self.opt_kind["tcp"][self._tcp_order] = kind
            self.opt_data["tcp"][self._tcp_order] = data
        self.opt_len["tcp"][t] = length

    def _tcp_options(self, t: np.ndarray, ft: np.ndarray, syn: np.ndarray) -> None:
        """SYN-only options leave other segments (the header shrinks; see
        :func:`tcp.tcp_option_rules`); window scale at most 14; Multipath TCP keys only where the
        connection's first Multipath option named its token (``ft``: the connection of each row).
        The payload stays: it was read against the header the row came with (:meth:`payload_lengths`)."""
        syn_only = [(k, lo) for k, (lo, _hi, only) in TCP_OPTIONS.items() if only]
        kind, data = self._tcp_option_table()
        data, length, moved = T.tcp_option_rules(kind, data, self.opt_len["tcp"][t], syn,
                                                 np.array([k for k, _ in syn_only], dtype=np.int64),
                                                 np.array([lo for _, lo in syn_only], dtype=np.int64),
                                                 TCP_WSCALE, 2, TCP_MAX_WSCALE, ft, self.nflows, MPTCP)
        self._keep_tcp_options("tcp_options", t, kind, data, length, moved)

    def _tcp_sack(self, t: Arr, ackf: Arr, ack: Arr) -> None:
        """SACK blocks a receiver could have sent, against the repaired numbers
        (:func:`netdiffusion.repair.tcp.tcp_sack_rules`). Generated blocks are mostly noise: far
        from the ACK or with the right edge before the left, and tshark reads a block below the
        ACK as a D-SACK (a duplicate received) and warns. The header shrinks; the payload stays."""
        kind, data = self._tcp_option_table()
        data, length, moved = T.tcp_sack_rules(kind, data, self.opt_len["tcp"][t], ackf, ack, TCP_SACK, MAX_WINDOW,
                                               DSACK_REACH)
        self._keep_tcp_options("tcp_sack", t, kind, data, length, moved)

    def _tcp_timestamps(self, t: Arr, ft: Arr, dt: Arr, og: Arr, rst: Arr, phase_c: Arr) -> None:
        """TSval non-decreasing per direction; a connection-opening SYN echoes no TSecr (RFC 7323).
        RSTs need not carry timestamps (RFC 7323 5.2): theirs stay."""
        length = self.opt_len["tcp"][t]
        kind, data = self._tcp_option_table()
        data, moved = T.tcp_timestamp_rules(kind, data, length, rst, og, ft * 2 + dt, phase_c, TCP_TIMESTAMPS, 2, 6)
        self._keep_tcp_options("tcp_options", t, kind, data, length, moved)

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
        _ip_id_outliers(ids, np.ascontiguousarray(ts, dtype=np.int64), np.ascontiguousarray(g, dtype=np.int64),
                        int(self.cfg.ip_id_step_max))
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
        """Non-decreasing ns offsets from the flow start; generated when the column is unusable:
        all equal, or a broken clock (:func:`netdiffusion.dataset.clock_offsets`: fuzzed captures
        hold offsets of -6.8e18 and 9.2e18 ns, which overflowed the pcap's time and stopped the run). A packet stamped a little before the flow's first (another
        CPU's capture queue: 20 us) is no reason to discard the flow's real timing, as every negative
        offset was before session 24: the running maximum holds it at the time before it."""
        fl = self.flow
        counts = np.bincount(fl, minlength=self.nflows)
        offset, broken = clock_offsets(ts, fl, self.nflows)
        moving = np.bincount(fl, weights=(offset != 0), minlength=self.nflows) > 0
        gen_flow = broken | (~moving & (counts > 1))
        gen = gen_flow[fl]
        if gen.any():  # (generated offsets start at 0 in each flow, like the others)
            rng = np.random.default_rng(self.cfg.seed if not self.first_flow else (self.cfg.seed, self.first_flow))
            iat = rng.exponential(self.cfg.default_iat_ns, size=int(gen.sum())).astype(np.int64)
            g = fl[gen]
            iat[G.starts(g)] = 0
            offset[gen] = G.cumsum_incl(iat, g)
        return (G.cummax(offset, fl) if len(offset) else offset), gen_flow


@kernel
def _ip_id_outliers(ids: np.ndarray, ts: np.ndarray, group: np.ndarray, step: int) -> None:
    """:meth:`Repairer.ip_id` on rows sorted by group (flow and direction), then position: in place,
    up to two rounds, each ID of a counter-like group that breaks the counter (no forward step of
    1..``step``-1 into it nor out of it within a second) but that the counter carries on across
    (one or two rows before to one or two after), is not 0 and has no other ID of its group
    within ``step``, becomes the last good ID plus its distance in rows.

    A group is counter-like when at least 3/4 (and at least 2) of its judged steps (not after
    an idle second) go forward. One pass per round instead of ~40 whole-array operations and two
    sorts of every row."""
    n = ids.shape[0]
    idle = np.zeros(n, dtype=np.bool_)
    first = np.ones(n, dtype=np.bool_)
    last = np.ones(n, dtype=np.bool_)
    for k in range(1, n):
        idle[k] = ts[k] - ts[k - 1] >= 1_000_000_000
        first[k] = group[k] != group[k - 1]
        last[k - 1] = first[k]
    left_bad = np.zeros(n, dtype=np.bool_)
    fwd = np.zeros(n, dtype=np.bool_)
    near = np.zeros(n, dtype=np.bool_)
    counter_like = np.zeros(n, dtype=np.bool_)
    bad = np.zeros(n, dtype=np.bool_)
    for _ in range(2):
        for k in range(n):
            delta = (ids[k] - ids[k - 1]) % 65536 if k else 0
            fwd[k] = 1 <= delta < step
            left_bad[k] = not fwd[k] and not first[k] and not idle[k]
        a = 0
        while a < n:  # per group: counter-like share, and IDs near another of the group
            b = a + 1
            while b < n and not first[b]:
                b += 1
            judged = forward = 0
            for k in range(a, b):
                if not first[k] and not idle[k]:
                    judged += 1
                    forward += fwd[k]
            like = 4 * forward >= 3 * max(judged, 1) and judged >= 2
            order = np.argsort(ids[a:b])
            for p in range(b - a):
                gap_prev = ids[a + order[p]] - ids[a + order[p - 1]] if p else 65536
                gap_next = ids[a + order[p + 1]] - ids[a + order[p]] if p + 1 < b - a else 65536
                near[a + order[p]] = gap_prev < step or gap_next < step
                counter_like[a + order[p]] = like
            a = b
        found = False
        for k in range(n):
            right_bad = k + 1 < n and left_bad[k + 1] and not last[k]
            bad[k] = False
            if not (left_bad[k] and right_bad and counter_like[k] and ids[k] != 0 and not near[k]):
                continue
            carries = False
            for before, after, limit in ((-1, 1, 2 * step), (-1, 2, 3 * step), (-2, 1, 3 * step)):
                i, j = k + before, k + after
                if i >= 0 and j < n and group[i] == group[k] and group[j] == group[k]:
                    gap = (ids[j] - ids[i]) % 65536
                    carries = carries or 1 <= gap < limit
            bad[k] = carries
            found = found or carries
        if not found:
            return
        good = 0
        for k in range(n):  # bad IDs are never a group's first: the last good one is in the group
            if bad[k]:
                ids[k] = (ids[good] + k - good) % 65536
            else:
                good = k


@kernel
def _ipv4_checksums(words: np.ndarray, stride: int, first: int, rows: np.ndarray, hl_col: int, hl_width: int,
                    ck_byte: int, out: np.ndarray) -> None:
    """RFC 791 checksum of the IPv4 header of each of ``rows``: the 16-bit words of its first
    ``4 * hl`` bytes (one byte per matrix word, absent bits read as 0; the checksum bytes
    ``ck_byte``, ``ck_byte + 1`` as 0). ``hl`` is -1 (no bytes) where one of its bits is negative."""
    for r in range(rows.shape[0]):
        at = np.uint64(rows[r] * stride + first)
        hl = 0
        for c in range(hl_col, hl_col + hl_width):
            b = np.int64(words[at + np.uint64(c >> 3)] >> np.uint64(8 * (c & 7))) & 0xFF
            if b >= 128:
                hl = -1
                break
            hl = (hl << 1) | (1 if b else 0)
        total = 0
        for k in range(np.uint64(max(min(2 * hl, 30), 0))):
            j = np.uint64(2) * k
            hi = np.int64(word_byte(words[at + j]))
            lo = np.int64(word_byte(words[at + j + np.uint64(1)]))
            if j == np.uint64(ck_byte):
                hi, lo = 0, 0
            total += (hi << 8) | lo
        for _ in range(3):
            total = (total & 0xFFFF) + (total >> 16)
        out[r] = ~total & 0xFFFF


def ipv4_header_checksums(layout: Layout, matrix: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """RFC 791 header checksum of IPv4 rows (the checksum field read as zero).

    ``rows`` selects rows of ``matrix`` (default all); one compiled pass reads only their header
    words (no packed copy of the rows)."""
    rows = np.arange(len(matrix), dtype=np.int64) if rows is None else np.ascontiguousarray(rows, dtype=np.int64)
    out = np.empty(len(rows), dtype=np.int64)
    if len(rows):
        hs = layout.header_slice("ipv4")
        hl, ck = layout.field("ipv4_hl"), layout.field("ipv4_cksum")
        if HEADERS["ipv4"].bytes > 60 or ck.offset % 16 or ck.width != 16:
            raise ValueError("ipv4 layout: a 16-bit aligned checksum and at most 60 header bytes expected")
        words, stride, first = row_words(matrix, hs.start, hs.stop)
        _ipv4_checksums(words, stride, first, rows, hl.offset, hl.width, ck.offset // 8, out)
    return out


def fold_checksum(total: np.ndarray) -> np.ndarray:
    """One's complement of the 16-bit one's complement sum."""
    s = np.asarray(total, dtype=np.int64)
    for _ in range(3):
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def repair_matrix(layout: Layout, matrix: np.ndarray, flow: np.ndarray, timestamp: np.ndarray,
                  cfg: RepairConfig | None = None, copy: bool = True, first_flow: int = 0) -> RepairResult:
    """Repair the rows of many flows at once (rows sorted by flow index, then position).

    ``copy=False`` lets repair overwrite an int8 ``matrix`` in place (saves a copy of every row).
    ``first_flow``: how many flows of the same class earlier calls repaired (a class in parts)."""
    return Repairer(layout, matrix, flow, cfg or RepairConfig(), copy=copy, first_flow=first_flow).run(timestamp)
