"""Compiled kernels of the TCP repair rules: flags, sequence and acknowledgement numbers.

The rules themselves are described in ``docs/repair.md`` and at :meth:`Repairer.tcp_state`; the
methods there read and write the fields (so every change is counted) and call these kernels for the
state machine in between. Each kernel walks the TCP rows once per pass, in two orders:

- flow order (the rows as given): ``ft`` is each row's connection id (flow * 2 + IPv6) and a
  connection's rows form *runs* of equal ``ft`` (with ``stack="packet"`` a flow's IPv4 and IPv6
  rows may interleave, and then each run counts on its own, as the numpy rules always did);
  per-connection tables (``nconn`` entries) are written at rows in flow order, the last write wins;
- group order (``og``, from :func:`group_order`): the rows of each (connection, direction) group
  together, in flow order within the group; ``gid = ft * 2 + direction`` names a group and
  ``gid ^ 1`` its peer.

Sequence numbers are unsigned 32-bit: ``%`` below is Python's (non-negative) modulo, as numpy's.
"""

from __future__ import annotations

import numpy as np

from netdiffusion.jit import kernel

MOD32 = 1 << 32
HALF32 = 1 << 31
BIG = 1 << 40  # "no bound" for acknowledgements; beyond any sequence offset
ACK_WINDOW_SEGMENTS = 16  # an ACK confirms a segment's end only before this many more segments of its direction


# a sequence number this far from another is a corrupted one, not a nearby segment
FAR = 1 << 16
NO_UNA = -(1 << 62)  # no acknowledgement of the peer yet (an offset no segment has)


@kernel
def _relative(seq: int, base: int) -> int:
    """``seq - base`` modulo 2**32, as a signed distance (sequence numbers wrap)."""
    r = (seq - base) % MOD32
    return r - MOD32 if r >= HALF32 else r


@kernel
def group_order(gid: np.ndarray, ngroups: int) -> np.ndarray:
    """Stable counting sort: row indices grouped by ``gid`` (0..ngroups-1), flow order within a
    group (``np.lexsort((arange, gid))``)."""
    count = np.zeros(ngroups + 1, np.int64)
    for g in gid:
        count[g + 1] += 1
    for g in range(ngroups):
        count[g + 1] += count[g]
    order = np.empty(len(gid), np.int64)
    for i in range(len(gid)):
        g = gid[i]
        order[count[g]] = i
        count[g] += 1
    return order


@kernel
def _bounds(key: np.ndarray) -> np.ndarray:
    """Start of each run of equal ``key`` values, then ``len(key)``."""
    n = len(key)
    out = np.empty(n + 1, np.int64)
    k = 0
    for i in range(n):
        if i == 0 or key[i] != key[i - 1]:
            out[k] = i
            k += 1
    out[k] = n
    return out[: k + 1]


EMPTY = -(1 << 62)  # an empty hash slot (no sequence number, offset or ACK is that low)


@kernel
def _table_size(count: int) -> int:
    """Slots of an open-addressing table for ``count`` keys: a power of two, at most half full."""
    size = 8
    while size < 2 * count:
        size *= 2
    return size


@kernel
def _slot(keys: np.ndarray, lo: int, size: int, key: int) -> int:
    """The slot of ``key`` in the table ``keys[lo:lo + size]``, or of the empty one it would take
    (linear probing from a multiplicative hash)."""
    h = ((key * -7046029254386353131) >> 29) & (size - 1)
    while keys[lo + h] != EMPTY and keys[lo + h] != key:
        h = (h + 1) & (size - 1)
    return lo + h


@kernel
def _first_of_value(values: np.ndarray, a: int, b: int, keys: np.ndarray, slots: np.ndarray,
                    out: np.ndarray) -> None:
    """``out[i]`` for ``i`` in ``a:b``: the first position in ``a:b`` holding ``values[i]``
    (``keys`` / ``slots``: scratch tables of at least ``_table_size(b - a)`` entries)."""
    size = _table_size(b - a)
    keys[:size] = EMPTY
    for i in range(a, b):
        h = _slot(keys, 0, size, values[i])
        if keys[h] == EMPTY:
            keys[h] = values[i]
            slots[h] = i
        out[i] = slots[h]


@kernel
def _expected_range(kept: np.ndarray, rel: np.ndarray, length: np.ndarray, a: int, b: int,
                    out: np.ndarray) -> None:
    """:func:`_maxplus_scan` over the segments ``a:b`` of one direction."""
    e = 0
    for i in range(a, b):
        out[i] = e
        if kept[i]:
            end = rel[i] + length[i]
            if end > e:
                e = end
        else:
            e += length[i]


def _maxplus_scan(kept: np.ndarray, rel: np.ndarray, length: np.ndarray, gid: np.ndarray) -> np.ndarray:
    """Next expected sequence offset before each segment of a direction (``gid``: groups contiguous).

    Kept segments move it to ``max(expected, rel + len)``; rewritten ones are placed at
    ``expected`` and advance it by ``len``: the (max, +) recurrence ``e' = max(e + a, b)``, from
    ``e = 0`` at each direction's first segment. (The kernels run :func:`_expected_range` per
    direction; this whole-array form is for checking it.)"""
    kept = np.asarray(kept, dtype=np.bool_)
    rel = np.asarray(rel, dtype=np.int64)
    length = np.asarray(length, dtype=np.int64)
    gid = np.asarray(gid, dtype=np.int64)
    out = np.empty(len(rel), np.int64)
    bounds = _bounds(gid)
    for k in range(len(bounds) - 1):
        _expected_range(kept, rel, length, int(bounds[k]), int(bounds[k + 1]), out)
    return out


@kernel
def _answered_by_syn_ack(ft: np.ndarray, dt: np.ndarray, syn0: np.ndarray, ack0: np.ndarray, rst0: np.ndarray,
                         seq: np.ndarray, ackn: np.ndarray, i: int) -> bool:
    """Is the server's next packet after row ``i`` (in the same run of connection ``ft[i]``) a
    SYN-ACK, or an RST-ACK (a refusal), acknowledging row ``i``'s sequence number + 1? (All 32
    bits: a SYN that noise made, or a model, is not taken for a new connection.)"""
    if seq[i] < 0:
        return False
    for j in range(i + 1, len(ft)):
        if ft[j] != ft[i]:
            return False
        if dt[j] == 1:
            answer = (syn0[j] == 1 and ack0[j] == 1) or (rst0[j] == 1 and syn0[j] == 0 and ack0[j] == 1)
            return answer and ackn[j] == (seq[i] + 1) % MOD32
    return False


@kernel
def tcp_attempts(ft: np.ndarray, dt: np.ndarray, syn0: np.ndarray, ack0: np.ndarray, rst0: np.ndarray,
                 nconn: int, fin0: np.ndarray, seq: np.ndarray, ackn: np.ndarray) -> tuple:
    """Per row (flow order) its connection attempt within connection ``ft``, and its session.

    A new attempt starts at a client SYN without ACK once the server refused the current one: the
    client sent only SYNs in it (the connection's first packet one), the server only RSTs without
    SYN. A client retrying on the same ports after a refusal opens a new connection: the server's
    SYN-ACK then starts its own sequence space, where the refusal's RST (sequence number 0, RFC
    9293 3.10.7.1) does not belong (nDPI's rtsp).

    A new session (and attempt) starts at a client SYN without ACK at another number than the
    session's SYN, after the client acknowledged something in the session (a packet with ACK and
    without SYN: a SYN before that is the handshake's, resent, whatever its number reads), in an
    attempt that is no refused one, whose answer from the server is a SYN-ACK (or a refusal) acknowledging it
    (``seq`` / ``ackn``: the generated numbers, all 32 bits: noise or a model does not split a
    flow). The client opens a new connection on the same ports, with new initial sequence
    numbers, which tshark reads as such ("a new tcp session is started with the same ports"):
    numbered as one connection, its handshakes and SYN options were repaired away (tcpflow's test
    captures: after both FINs, after an RST, and after a connection the capture shows no close
    of, which ``Repairer._close_before_sessions`` then closes). ``fin0``: generated FINs."""
    n = len(ft)
    attempt = np.zeros(n, np.int64)
    session = np.zeros(n, np.int64)
    current = np.zeros(nconn, np.int64)
    sessions = np.zeros(nconn, np.int64)
    seen = np.zeros(nconn, np.bool_)
    spoke = np.zeros(nconn, np.bool_)  # the server sent a packet in the current attempt
    refused = np.zeros(nconn, np.bool_)  # so far, a refused attempt
    isn = np.full(nconn, -1, np.int64)  # the client's SYN number in the current session (-1: none)
    # the client acknowledged in the current session (a packet with ACK, without SYN): its
    # handshake is over, so a SYN after it is no resend of the session's own
    acked = np.zeros(nconn, np.bool_)
    for i in range(n):
        c = ft[i]
        d = dt[i]
        syn = syn0[i] == 1 and ack0[i] == 0
        if not seen[c]:
            seen[c] = True
            refused[c] = d == 0 and syn
            if d == 0 and syn:
                isn[c] = seq[i]
        elif d == 0:
            if spoke[c] and refused[c] and syn:
                current[c] += 1
                spoke[c] = False
            elif (syn and not refused[c] and acked[c] and seq[i] != isn[c]  # (same number: a SYN resent)
                  and _answered_by_syn_ack(ft, dt, syn0, ack0, rst0, seq, ackn, i)):
                current[c] += 1
                sessions[c] += 1
                spoke[c] = False
                refused[c] = True  # the new session's first packet is this SYN
                isn[c] = seq[i]
                acked[c] = False
            elif syn and isn[c] < 0:
                isn[c] = seq[i]
            if ack0[i] == 1 and syn0[i] == 0:
                acked[c] = True
            # (a client row after the refusal is a SYN repeat only without FIN or RST, as tcp_flags
            # reads it: one with them stays data, and the attempt is no refused one)
            refused[c] = refused[c] and syn0[i] == 1 and fin0[i] == 0 and rst0[i] == 0
        else:
            spoke[c] = True
            refused[c] = refused[c] and rst0[i] == 1 and syn0[i] == 0
        attempt[i] = current[c]
        session[i] = sessions[c]
    return attempt, session


@kernel
def tcp_attempt_numbers(conn: np.ndarray, attempt: np.ndarray, dt: np.ndarray, seq: np.ndarray, ack: np.ndarray,
                        ackf: np.ndarray, syn: np.ndarray, nconn: int, session: np.ndarray) -> tuple:
    """Sequence and acknowledgement numbers (flow order) with each refused attempt of connection
    ``conn`` (see :func:`tcp_attempts`) moved to start, per direction, where the next attempt
    does. tshark takes a direction's first sequence number (less one, unless a SYN's) as its
    base for the whole port pair and reads a SYN or SYN-ACK at another number as a new connection on reused ports; a refused
    attempt holds only SYNs and RSTs (whose number is free: 0 in a refusal), so moving it costs
    least. An attempt opening a new session (``session``, :func:`tcp_attempts`: the ports reused
    after a close) keeps its numbers, and the attempts before it are not moved to them: tshark
    reads its SYN as a new connection."""
    n = len(conn)
    na = 0
    for i in range(n):
        na = max(na, attempt[i] + 1)
    first = np.full((nconn, na, 2), -1, np.int64)
    opens = np.zeros((nconn, na), np.bool_)  # the attempt starts a new session
    for i in range(n):
        c, k, d = conn[i], attempt[i], dt[i]
        if first[c, k, d] < 0:  # tshark's base: a SYN's number, else the number before
            first[c, k, d] = (seq[i] - (0 if syn[i] == 1 else 1)) % MOD32
        if i > 0 and conn[i - 1] == c and session[i - 1] != session[i]:
            opens[c, k] = True
    delta = np.zeros((nconn, na, 2), np.int64)
    for c in range(nconn):
        for d in range(2):
            target = -1  # the (moved) first number of the nearest later attempt with direction d
            for k in range(na - 1, -1, -1):
                f = first[c, k, d]
                if f >= 0:
                    if target >= 0:
                        delta[c, k, d] = (target - f) % MOD32
                    target = (f + delta[c, k, d]) % MOD32
                if opens[c, k]:
                    target = -1  # (nothing before a new session moves to its numbers)
    out_seq = seq.copy()
    out_ack = ack.copy()
    for i in range(n):
        c, k, d = conn[i], attempt[i], dt[i]
        out_seq[i] = (seq[i] + delta[c, k, d]) % MOD32
        if ackf[i] == 1:
            out_ack[i] = (ack[i] + delta[c, k, 1 - d]) % MOD32
    return out_seq, out_ack


@kernel
def tcp_flags(ft: np.ndarray, dt: np.ndarray, syn0: np.ndarray, ack0: np.ndarray, fin0: np.ndarray,
              rst0: np.ndarray, payload: np.ndarray, seq: np.ndarray, urg0: np.ndarray, urp0: np.ndarray,
              nconn: int, ackn: np.ndarray, cookie: np.ndarray) -> tuple:
    """The ``tcp_flags`` rule (see :meth:`Repairer._tcp_state`): per row the new SYN, FIN, RST, ACK,
    URG flags and urgent pointer, the payload (none on handshake segments but TCP Fast Open data on
    the client's SYN), the client's handshake rows (``phase_c``), the SYN-ACKs (first or repeated)
    and the group order ``og``. ``ackn``: the generated acknowledgement numbers; ``cookie``: rows
    whose options hold a Fast Open cookie."""
    n = len(ft)
    # per connection, from each run's first row: it starts at a connection start (SYN without ACK),
    # or at the SYN-ACK (capture starts there); silent: the server's packets never seen; probe (port
    # scans: nmap's FIN, NULL and Xmas scans): no handshake, the client sends only empty segments
    # without SYN or RST, answered by RSTs alone (or not at all). A probe's flags are the scan's:
    # the client's rows keep a missing ACK bit (and the Xmas scan's URG with urgent pointer 0);
    # before, repair set ACK on every such probe and cleared the Xmas URG, changing real scan
    # traffic that tshark reads without a remark (session 24)
    hs_c = np.zeros(nconn, np.bool_)
    sa_c = np.zeros(nconn, np.bool_)
    silent = np.ones(nconn, np.bool_)
    probe = np.zeros(nconn, np.bool_)
    for i in range(n):
        c = ft[i]
        if i == 0 or ft[i - 1] != c:
            hs_c[c] = syn0[i] == 1 and ack0[i] == 0
            sa_c[c] = syn0[i] == 1 and ack0[i] == 1
            probe[c] = syn0[i] != 1
        if dt[i] == 1:
            silent[c] = False
            if not (rst0[i] == 1 and syn0[i] != 1 and fin0[i] != 1 and payload[i] == 0):
                probe[c] = False
        elif syn0[i] == 1 or rst0[i] == 1 or payload[i] != 0:
            probe[c] = False
    phase_c = np.zeros(n, np.bool_)
    phase_s = np.zeros(n, np.bool_)
    synack_first = np.zeros(n, np.bool_)
    client_acked = np.zeros(n, np.bool_)
    run_seq = np.empty(n, np.int64)
    refused_c = np.zeros(nconn, np.bool_)
    srv_isn = np.full(nconn, -1, np.int64)
    # TCP Fast Open (RFC 7413): the client's SYN carries data that the SYN-ACK acknowledges
    # (its number + 1 + the data). Real Linux flows do that once a cookie is cached; clearing the
    # data renumbered the client's side. Only a SYN with a cookie option, and where the first
    # SYN-ACK says so: a generated SYN's IP length alone is no reason to send data before the
    # handshake (nor a corrupted length that a corrupted acknowledgement happens to match)
    synack_ack = np.full(nconn, -1, np.int64)  # per connection, the first SYN-ACK's number
    seen1 = False  # the server spoke earlier in the run
    after = 0  # client packets after the server spoke
    acked = False  # a client ACK without SYN so far (inclusive)
    sent = False  # client data or FIN without SYN before this row (its ACK bit lost or not)
    client_sent = np.zeros(n, np.bool_)
    rank = 0
    first_seq = 0
    for i in range(n):
        c = ft[i]
        d = dt[i]
        if i == 0 or ft[i - 1] != c:
            seen1, after, acked, sent, rank, first_seq = False, 0, False, False, 0, seq[i]
        else:
            rank += 1
        client_sent[i] = sent
        acked = acked or (d == 0 and ack0[i] == 1 and syn0[i] != 1)
        # a one-sided capture (the server's packets never seen): the client's handshake ends at
        # its first ACK, which acknowledges a SYN-ACK the capture missed; likewise a capture of the
        # server alone that starts at its SYN-ACK: the handshake ends at the server's first packet
        # without SYN (nDPI's whois: its data became SYN-ACKs)
        opening = d == 0 and not seen1 and not (silent[c] and acked)
        pc = hs_c[c] and opening
        psa = sa_c[c] and opening
        ps = (hs_c[c] and d == 1 and after == 0) or psa
        first1 = ps and not psa and not seen1
        if first1:
            refused_c[c] = rst0[i] == 1 and syn0[i] == 0
            srv_isn[c] = seq[i]
            if syn0[i] == 1 and ack0[i] == 1 and synack_ack[c] < 0:
                synack_ack[c] = ackn[i]
        elif psa and rank == 0:
            srv_isn[c] = seq[i]
        phase_c[i] = pc
        phase_s[i] = ps
        synack_first[i] = first1 or (psa and rank == 0)
        client_acked[i] = acked
        run_seq[i] = first_seq
        if d == 0 and seen1:
            after += 1
        if d == 0 and not pc and syn0[i] != 1 and (payload[i] > 0 or fin0[i] == 1):
            sent = True
        if d == 1:
            seen1 = True
    # a client SYN without ACK after the SYN-ACK, before the client's ACK, followed by a repeat
    # of the first SYN (its number) before that ACK: a repeat too, whatever its own number says
    # (it cannot be data sent before a SYN the client still repeats; nDPI's skype_no_unknown at 8%,
    # a capture of SYN retries only, where one SYN's addresses made it the server's SYN-ACK)
    # ``syn_again``: the SYN repeats below (``late_syn``), decided here once
    # and in a refused attempt, a client row saying SYN after the refusal (with ACK: a client SYN
    # without ACK there starts the next attempt, see tcp_attempts) repeats the SYN, whatever its
    # number: a refused client sends no data, and as data it ran past the next attempt's SYN,
    # which read as out of order (pure random rows, seed 61). Never once the client sent data (rows
    # whose ACK bit was lost: data at the SYN's number after them read as out of order, seed 82)
    syn_again = np.zeros(n, np.bool_)
    repeat_after = False
    for i in range(n - 1, -1, -1):
        if i == n - 1 or ft[i + 1] != ft[i]:
            repeat_after = False
        if (hs_c[ft[i]] and dt[i] == 0 and not phase_c[i] and not client_acked[i] and not client_sent[i]
                and syn0[i] == 1 and rst0[i] == 0 and fin0[i] == 0):
            if ack0[i] == 0:
                at_first = seq[i] == run_seq[i]
                syn_again[i] = at_first or repeat_after
                repeat_after = repeat_after or at_first
            else:
                syn_again[i] = refused_c[ft[i]]
    # ... nor after a client SYN row that stays data (neither the handshake nor a repeat: seed 85,
    # a SYN at another number, then a SYN + ACK row of the refused attempt taken for a repeat)
    sent = False
    for i in range(n):
        if i == 0 or ft[i - 1] != ft[i]:
            sent = False
        if sent:
            syn_again[i] = False
        if dt[i] == 0 and not phase_c[i] and not syn_again[i] and (payload[i] > 0 or fin0[i] == 1):
            sent = True
    pay = payload.copy()
    est = np.zeros(n, np.bool_)
    synack = np.zeros(n, np.bool_)
    syn = np.zeros(n, np.int64)
    rst = np.zeros(n, np.int64)
    # a repeat of the SYN-ACK (see below) per row, and whether the server's next row (flow order,
    # before the client's next packet) is one
    says_repeat = np.zeros(n, np.bool_)
    next_repeat = np.zeros(n, np.bool_)
    for i in range(n):
        c = ft[i]
        says_repeat[i] = (phase_s[i] and syn0[i] == 1 and rst0[i] == 0 and fin0[i] == 0
                          and (payload[i] == 0 or (srv_isn[c] >= 0 and seq[i] == srv_isn[c])))
    following = False
    # per connection: the server sent data or a FIN after its handshake (so far, in flow order)
    srv_moved = np.zeros(nconn, np.bool_)
    for i in range(n - 1, -1, -1):
        if i == n - 1 or ft[i + 1] != ft[i]:
            following = False
        # (the SYN-ACK's sender: the client's side in a capture starting at the SYN-ACK)
        if dt[i] == (0 if sa_c[ft[i]] else 1) and phase_s[i]:
            next_repeat[i] = following
            following = says_repeat[i]
    for i in range(n):
        c = ft[i]
        d = dt[i]
        refused = refused_c[c]
        # the SYN-ACK is the server's first packet; what it sends before the client's next packet is
        # a repeat of it only where the row says so (SYN, no data). Other rows are data sent while
        # the client's ACK was lost or late: forcing them into SYN-ACKs made runs of identical
        # SYN-ACKs microseconds apart out of generated flows whose server spoke first, and erased
        # their data. A row that says SYN and starts at the SYN-ACK's sequence number repeats it
        # whatever its IP length says: data would start one byte later (a corrupted length made
        # a repeated SYN-ACK data, and the next repeat out of order in tshark)
        # a row just before a repeat repeats it too, its flags or its sequence number and length
        # corrupted: the server sends no data (nor FIN or RST) before a SYN-ACK it still repeats
        # (as data, the repeat after it read as out of order: nDPI's dnp3 and rtsp at 2-5%).
        # Neither repeats once the server sent data or a FIN (see late_synack)
        repeat = (says_repeat[i] or next_repeat[i]) and not srv_moved[c]
        ps = phase_s[i] and (refused or synack_first[i] or repeat)
        pc = phase_c[i]
        e = not (pc or ps)
        fast_open = (pc and payload[i] > 0 and syn0[i] == 1 and ack0[i] == 0 and seq[i] == run_seq[i]
                     and cookie[i] and synack_ack[c] == (seq[i] + 1 + payload[i]) % MOD32)
        if not e and not fast_open:
            pay[i] = 0
        # a SYN-ACK the server repeats later (its ACK was lost) is a retransmission, not a new SYN;
        # at the SYN-ACK's sequence number it carries no data, whatever its IP length says
        # (not once the server sent data or a FIN: its sequence number moved on, and a SYN-ACK
        # after them read as out of order: nDPI's WebattackXSS at 5%, its direction corrupted).
        # So in a capture that starts at the SYN-ACK, where its sender is the first direction
        # (shared YouTube captures: the server repeats it while the client resends its data)
        late_synack = ((hs_c[c] or sa_c[c]) and not refused and d == (0 if sa_c[c] else 1) and e
                       and syn0[i] == 1 and rst0[i] == 0 and fin0[i] == 0 and seq[i] == srv_isn[c]
                       and not srv_moved[c])
        if late_synack:
            pay[i] = 0
        # likewise a SYN the client repeats after the SYN-ACK (which it did not get) or a refusal,
        # before its ACK: at the first SYN's sequence number it carries no data either, whatever
        # its IP length says (as data, the SYNs after it read as out of order: nDPI's rtsp at 0.5%);
        # which rows, ``syn_again`` above
        late_syn = e and syn_again[i]
        if late_syn:
            pc = True
            e = False
            pay[i] = 0
        if d == (0 if sa_c[c] else 1) and e and not late_synack and (pay[i] > 0 or fin0[i] == 1):
            srv_moved[c] = True
        syn[i] = 1 if (pc or (ps and not refused) or late_synack) else 0
        rst[i] = 0 if pc else ((1 if refused else 0) if ps else rst0[i])
        phase_c[i] = pc
        est[i] = e
        synack[i] = (ps and not refused) or late_synack
    og = group_order(ft * 2 + dt, 2 * nconn)
    gid = ft * 2 + dt
    bounds = _bounds(gid[og])
    for k in range(len(bounds) - 1):
        a, b = bounds[k], bounds[k + 1]
        # RST only where the direction sends nothing (no data, no FIN) after it
        later = False
        for j in range(b - 1, a - 1, -1):
            i = og[j]
            if est[i]:
                rst[i] = 1 if (rst[i] == 1 and not later) else 0
            later = later or pay[i] > 0 or fin0[i] == 1
    fin = fin_rule(og, bounds, seq, pay, fin0, est, rst)
    ackf = np.ones(n, np.int64)
    urg = np.zeros(n, np.int64)
    urp = np.zeros(n, np.int64)
    # URG with an urgent pointer inside the segment's data, or past it where a later segment of the
    # direction carries URG pointing at the same byte from inside its own data: a sender marks
    # every segment it sends while urgent data is queued (Linux: the pointer runs up to 64 kB past
    # the payload, and reads 0xFFFF where the byte is further; session 24, scripts/netns_traffic.py's
    # urgent scenario). Other URG bits are noise: a generator sets them anywhere
    urgent_at = np.full(2 * nconn, -1, np.int64)  # per direction: the urgent byte's end a later segment confirms
    keep_urg = np.zeros(n, np.bool_)
    for i in range(n - 1, -1, -1):
        g = ft[i] * 2 + dt[i]
        if urg0[i] == 1 and urp0[i] > 0:
            end = (seq[i] + urp0[i]) % MOD32
            if urp0[i] <= pay[i]:
                keep_urg[i] = True
                urgent_at[g] = end
            elif urgent_at[g] == end:
                keep_urg[i] = True
            elif urp0[i] == 0xFFFF and urgent_at[g] >= 0 and 0xFFFF <= (urgent_at[g] - seq[i]) % MOD32 < MOD32 // 2:
                keep_urg[i] = True  # the byte is further ahead than 16 bits say: Linux writes 0xFFFF
    for i in range(n):
        if phase_c[i] or (rst[i] == 1 and est[i] and ack0[i] == 0):
            ackf[i] = 0
        if keep_urg[i]:
            urg[i] = 1
            urp[i] = urp0[i]
        if probe[ft[i]] and dt[i] == 0:
            ackf[i] = 1 if ack0[i] == 1 else 0
            if urg0[i] == 1 and urp0[i] == 0:
                urg[i] = 1
    return syn, fin, rst, ackf, urg, urp, pay, phase_c, synack, og


@kernel
def fin_rule(og: np.ndarray, bounds: np.ndarray, seq: np.ndarray, pay: np.ndarray, fin0: np.ndarray,
             est: np.ndarray, rst: np.ndarray) -> np.ndarray:
    """The FIN part of the ``tcp_flags`` rule: per row (flow order) whether it keeps its FIN
    (``fin0``). ``og`` / ``bounds``: the group order and its (connection, direction) groups;
    ``est`` the rows past the handshake, ``rst`` the RST flags already decided. FIN only where
    no later segment of the direction carries data beyond it, once per direction (later FINs
    repeat the first: the same sequence number, or the same end with more data resent), and not
    at or after an RST. :meth:`Repairer._tcp_seq_ack` applies it again to the repaired sequence
    numbers (only clearing FINs), so repairing the output keeps every FIN it kept."""
    n = len(seq)
    fin = np.zeros(n, np.int64)
    data_end = np.empty(n, np.int64)
    beyond = np.zeros(n, np.bool_)
    for k in range(len(bounds) - 1):
        a, b = bounds[k], bounds[k + 1]
        # FIN only where no later segment of the direction carries data beyond it: resending
        # earlier data with the FIN again (a retransmitted data+FIN segment) is fine
        base = seq[og[a]]
        top = -MOD32
        for j in range(b - 1, a - 1, -1):
            i = og[j]
            de = _relative(seq[i], base) + pay[i]
            data_end[i] = de
            beyond[i] = top > de
            if pay[i] > 0 and de > top:
                top = de
        rst_seen = False
        fins = 0
        fin_seq = -1
        fin_end = -MOD32
        for j in range(a, b):
            i = og[j]
            rst_seen = rst_seen or rst[i] == 1
            if est[i] and fin0[i] == 1 and not beyond[i] and not rst_seen and rst[i] == 0:
                fins += 1
                if fins == 1:
                    fin_seq, fin_end = seq[i], data_end[i]
                    fin[i] = 1
                # later FINs repeat the first: the same sequence number, or the same end (more
                # data resent)
                elif seq[i] == fin_seq or data_end[i] == fin_end:
                    fin[i] = 1
    return fin


@kernel
def _confirmations(bounds: np.ndarray, gids: np.ndarray, where: np.ndarray, isn: np.ndarray,
                   rel: np.ndarray, length: np.ndarray, acks: np.ndarray, ack_lo: np.ndarray,
                   ack_size: np.ndarray, ack_at: np.ndarray, og: np.ndarray) -> np.ndarray:
    """A segment is confirmed when the next one continues from it or the peer ACKs its end,
    first after it (any time before, for an empty segment) and before the direction's
    :data:`ACK_WINDOW_SEGMENTS`-th next segment (an
    ACK of the same number much later acknowledges whatever the stream reached by then: a bare
    ACK whose IP length gained 1,024 bytes was "confirmed" by the ACK of the real byte 1,024
    hundreds of packets on, nDPI's coap_mqtt at 0.3%). ``ack_at``: where (flow order, ``og``
    maps group order to it) each value of ``acks`` is first acknowledged.

    Group order; ``isn`` per gid (-1: none), ``where`` the group index of a gid (-1: absent);
    ``acks[ack_lo[k]:ack_lo[k] + ack_size[k]]`` a hash table of the acknowledgement numbers
    (modulo 2**32) that group ``k`` sends with the ACK flag. The peer ACKs a segment's end where
    ``(ack - isn) % 2**32 == end``, i.e. ``ack % 2**32 == (end + isn) % 2**32``."""
    conf = np.zeros(len(rel), np.bool_)
    for k in range(len(bounds) - 1):
        a, b = bounds[k], bounds[k + 1]
        g = gids[k]
        for i in range(a, b - 1):
            conf[i] = rel[i + 1] == rel[i] + length[i]
        p = where[g ^ 1]
        if p < 0 or isn[g] < 0 or ack_size[p] == 0:
            continue
        for i in range(a, b):
            if not conf[i]:
                want = ((rel[i] + length[i]) % MOD32 + isn[g]) % MOD32
                h = _slot(acks, ack_lo[p], ack_size[p], want)
                limit = og[i + ACK_WINDOW_SEGMENTS] if i + ACK_WINDOW_SEGMENTS < b else 1 << 62
                # (an empty segment's end is its start, which the peer may have acknowledged before)
                conf[i] = acks[h] == want and (length[i] == 0 or og[i] < ack_at[h]) and ack_at[h] < limit
    return conf


@kernel
def _never_acked(og: np.ndarray, bounds: np.ndarray, where: np.ndarray, g: int, i: int, b: int,
                 rel: np.ndarray, s_len: np.ndarray, s_ackf: np.ndarray, ack_s: np.ndarray,
                 isn: np.ndarray, fin_next: bool) -> bool:
    """Does the peer acknowledge none of segment ``i``'s bytes while it answers (group order,
    direction ``g``, its rows end at ``b``)? Its ACKs after the segment and before the
    direction's next segment taking sequence space (data or FIN; flow order) stay at or below the
    segment's start, all but a few (fewer than a quarter: a corrupted ACK can land anywhere;
    ACKs beyond the segment's end there acknowledge bytes not sent yet and do not count).
    Bytes the peer answers without acknowledging were never on the wire: a bare ACK whose IP
    length gained a bit, not a data segment."""
    p = where[g ^ 1]
    if isn[g] < 0:
        return False
    if p < 0:
        # no packet of the peer at all (a capture of one direction): nothing acknowledges or
        # denies the bytes, and the direction itself starting over at their number with less
        # says they were not sent (left as data, the next data at that number reads as
        # out-of-order; nDPI's ocs at 0.5% to 5% corruption)
        return True
    lo = og[i]
    hi = 1 << 62
    # a shorter segment restarting at the same number right after (the data actually sent, e.g. a
    # bare ACK's phantom bytes followed by a small data segment): ACKs up to its end count as
    # below, and the window runs to the next segment after it
    again = s_len[i + 1] if i + 1 < b and rel[i + 1] == rel[i] and s_len[i + 1] < s_len[i] else 0
    for j in range(i + 1 + (again > 0), b):
        if s_len[j] > 0:
            hi = og[j]
            break
    start = rel[i] + again
    end = rel[i] + s_len[i]
    below = 0
    inside = 0
    for q in range(bounds[p], bounds[p + 1]):
        if s_ackf[q] and lo < og[q] < hi:
            r = _relative(ack_s[q] % MOD32, isn[g])
            if start < r <= end:
                # before a bare FIN at its start, only an ACK of its end (with or without the FIN)
                # counts: one into its middle is a corrupted ACK (nDPI's ethereum at 0.5%)
                if not fin_next or r >= end - 1:
                    inside += 1
            elif r <= start:
                below += 1
    # a FIN right after, at the segment's start: no sender closes below data it sent, so only
    # an acknowledgement of the segment's end keeps them (a capture ending before the peer answers)
    return below > 4 * inside or (fin_next and inside == 0)


@kernel
def _bits_over(x: int, k: int) -> bool:
    """Has ``x`` (non-negative) more than ``k`` set bits?"""
    count = 0
    while x:
        x &= x - 1
        count += 1
        if count > k:
            return True
    return False


@kernel
def resolve_unknown_bits(og: np.ndarray, bounds: np.ndarray, seq: np.ndarray, unknown: np.ndarray,
                         length: np.ndarray) -> np.ndarray:
    """Sequence numbers (flow order) with their absent bits (``unknown``: a mask per row; read
    as 0) set the way the direction's neighbouring segments agree with (group order ``og``,
    groups at ``bounds``): the predecessor's end, else its start (a bare ACK repeating it), else
    the successor's start less this segment's length or the successor's start. Up to 4 absent
    bits (16 candidates); otherwise, or where no candidate agrees, the number stays as read."""
    out = seq.copy()
    cand = np.empty(16, np.int64)
    for k in range(len(bounds) - 1):
        a, b = bounds[k], bounds[k + 1]
        for j in range(a, b):
            i = og[j]
            u = unknown[i]
            if u == 0 or _bits_over(u, 4):  # more than 4 bits: too many candidates to trust a match
                continue
            m = 0
            sub = u
            while True:  # every value of the absent bits (subsets of u), the one read last
                cand[m] = (seq[i] & ~u) | sub
                m += 1
                if sub == 0:
                    break
                sub = (sub - 1) & u
            targets = np.full(4, -1, np.int64)
            if j > a:
                p = og[j - 1]
                targets[0] = (out[p] + length[p]) % MOD32
                targets[1] = out[p]
            if j + 1 < b and unknown[og[j + 1]] == 0:
                q = og[j + 1]
                targets[2] = (seq[q] - length[i]) % MOD32
                targets[3] = seq[q]
            done = False
            for t in range(4):
                if targets[t] < 0:
                    continue
                for c in range(m):
                    if cand[c] == targets[t]:
                        out[i] = cand[c]
                        done = True
                        break
                if done:
                    break
    return out


@kernel
def _restarted(rel: np.ndarray, s_len: np.ndarray, confirmed: np.ndarray, i: int, b: int) -> bool:
    """Does the next segment after ``i`` taking sequence space (group order, up to ``b``) start
    at ``i``'s number with more bytes than ``i``, and is it confirmed?"""
    for j in range(i + 1, b):
        if s_len[j] > 0:
            return rel[j] == rel[i] and s_len[j] > s_len[i] and confirmed[j]
    return False


@kernel
def tcp_seq_ack(ft: np.ndarray, dt: np.ndarray, og: np.ndarray, seq: np.ndarray, ack0: np.ndarray,
                syn: np.ndarray, fin: np.ndarray, rst: np.ndarray, ackf: np.ndarray, payload: np.ndarray,
                phase_c: np.ndarray, synack: np.ndarray, ts: np.ndarray, nconn: int, close_gaps: bool,
                ack_window: int, psh: np.ndarray, length_unknown: np.ndarray, conn0: np.ndarray,
                mtu_cut: np.ndarray) -> tuple:
    """The ``tcp_seq`` / ``tcp_ack`` rules (see :meth:`Repairer._tcp_seq_ack`): new sequence and
    acknowledgement numbers (flow order), the payload lengths with corrupted ones fixed, and
    whether any was. ``psh``: the PSH flag as generated (1 set, 0 unset, -1 absent);
    ``length_unknown``: the IP length's absent bits (read as 0) as a mask of byte weights;
    ``conn0``: each row's connection as tshark tells them apart: before the split into attempts
    (:func:`tcp_attempts`), but a new session on reused ports is another one;
    ``mtu_cut``: payload bytes the MTU took off each segment (never sent: the gap they leave
    before the direction's next segment is closed whatever ``close_gaps`` says)."""
    n = len(ft)
    ngroups = 2 * nconn
    gid_f = ft * 2 + dt
    gid = gid_f[og]
    bounds = _bounds(gid)
    ngr = len(bounds) - 1
    gids = np.empty(ngr, np.int64)
    where = np.full(ngroups, -1, np.int64)
    for k in range(ngr):
        gids[k] = gid[bounds[k]]
        where[gids[k]] = k
    # per (flow, direction) group, in position order
    s_seq = seq[og]
    s_syn = syn[og]
    s_fin = fin[og]
    s_pay = payload[og]
    s_len = s_pay + s_syn + s_fin
    s_phase = (phase_c | synack)[og]
    s_rst = rst[og] == 1
    s_ackf = ackf[og] == 1
    ack_s = ack0[og]
    s_ts = ts[og]
    s_psh = psh[og]
    s_cut = mtu_cut[og]
    # TCP Fast Open data on the client's SYN (tcp_flags keeps data on a handshake row only there):
    # the SYN-ACK acknowledges it with the SYN
    syn_data = np.zeros(nconn, np.int64)
    for i in range(n):
        if phase_c[i] and syn[i] == 1 and payload[i] > 0 and syn_data[ft[i]] == 0:
            syn_data[ft[i]] = payload[i]
    st = np.zeros(n, np.bool_)
    syn_retry = np.zeros(n, np.bool_)  # a repeated SYN / SYN-ACK reuses the ISN
    for k in range(ngr):
        st[bounds[k]] = True
        for i in range(bounds[k] + 1, bounds[k + 1]):
            syn_retry[i] = s_phase[i]
    # initial sequence number: the first segment's, unless it is an outlier among the first
    # four segments' implied ISNs (seq minus the bytes sent before) and nothing confirms it
    # a segment resent from the same sequence number (a retransmission) sends nothing new: it
    # neither adds to the bytes before later segments nor votes (a resent FIN would else move
    # the ISN down by one). Resent means: its (group, seq) key came earlier; keys are
    # gid * 2**32 + seq, so a -1 (absent) seq repeats the previous gid's 2**32 - 1
    has_top = np.zeros(ngroups, np.bool_)
    for i in range(n):
        if s_seq[i] == MOD32 - 1:
            has_top[gid[i]] = True
    resent = np.zeros(n, np.bool_)
    implied = np.empty(n, np.int64)
    mode_isn = np.empty(ngroups, np.int64)
    first_seq = np.full(ngroups, -1, np.int64)
    cand = np.empty(4, np.int64)
    votes = np.zeros(4, np.int64)
    largest = 0
    for k in range(ngr):
        largest = max(largest, bounds[k + 1] - bounds[k])
    scratch_keys = np.empty(_table_size(largest), np.int64)
    scratch_slots = np.empty(_table_size(largest), np.int64)
    first_at = np.empty(n, np.int64)
    # an empty segment (a bare ACK) sends nothing, so data at its number after it is new: only
    # segments taking sequence space are looked up (an empty one gets a key no number has). Nor
    # is a SYN's number one a later segment can resend: its one unit of sequence space is the
    # SYN's (a repeated SYN is syn_retry), so data at the SYN's number contradicts it (one of the
    # two numbers is corrupted) and votes (a 2%-corrupted shared webex flow, its SYN's number one
    # higher: data there read as resent, the SYN's number won a three-way tie, and every data
    # segment after it was numbered one byte ahead of what the server acknowledged)
    seq_keys = s_seq.copy()
    for i in range(n):
        if s_len[i] == 0 or s_syn[i] == 1:
            seq_keys[i] = BIG + i
    for k in range(ngr):
        a, b = bounds[k], bounds[k + 1]
        g = gids[k]
        _first_of_value(seq_keys, a, b, scratch_keys, scratch_slots, first_at)
        for i in range(a, b):
            resent[i] = first_at[i] != i
        for i in range(a, b):
            if s_seq[i] == -1 and g > 0 and has_top[g - 1]:
                resent[i] = True
        before = 0
        for i in range(a, b):
            if syn_retry[i]:  # a repeated SYN / SYN-ACK carries the ISN itself
                implied[i] = s_seq[i]
            else:
                implied[i] = (s_seq[i] - before) % MOD32
            if not (syn_retry[i] or resent[i]):
                before += s_len[i]
        # the most common implied ISN of the first four segments (ties: the first seen)
        m = 0
        for i in range(a, min(a + 4, b)):
            if resent[i] and not syn_retry[i]:
                continue
            seen = False
            for j in range(m):
                if cand[j] == implied[i]:
                    votes[j] += 1
                    seen = True
                    break
            if not seen:
                cand[m] = implied[i]
                votes[m] = 1
                m += 1
        best = 0
        for j in range(1, m):
            if votes[j] > votes[best]:
                best = j
        mode_isn[g] = cand[best]
        first_seq[g] = s_seq[a]
    rel = np.empty(n, np.int64)
    # each group's acknowledgement numbers (ACK flag set), in a hash table, for the confirmations
    ack_lo = np.zeros(ngr, np.int64)
    ack_size = np.zeros(ngr, np.int64)
    total = 0
    for k in range(ngr):
        count = 0
        for i in range(bounds[k], bounds[k + 1]):
            count += s_ackf[i]
        ack_lo[k] = total
        ack_size[k] = _table_size(count) if count else 0
        total += ack_size[k]
    acks = np.full(total, EMPTY, np.int64)
    ack_at = np.zeros(total, np.int64)  # where (flow order) each value is first acknowledged
    for k in range(ngr):
        for i in range(bounds[k], bounds[k + 1]):
            if s_ackf[i]:
                v = ack_s[i] % MOD32
                h = _slot(acks, ack_lo[k], ack_size[k], v)
                if acks[h] != v:
                    acks[h] = v
                    ack_at[h] = og[i]
    isn = np.full(ngroups, -1, np.int64)
    for k in range(ngr):
        a, b = bounds[k], bounds[k + 1]
        g = gids[k]
        # is the first segment confirmed (see _confirmations), with its own number as the ISN?
        first = first_seq[g]
        conf = b - a > 1 and _relative(s_seq[a + 1], first) == s_len[a]
        p = where[g ^ 1]
        if not conf and p >= 0 and first >= 0 and ack_size[p]:
            want = (s_len[a] % MOD32 + first) % MOD32
            conf = acks[_slot(acks, ack_lo[p], ack_size[p], want)] == want
        isn[g] = first if (conf or implied[a] == mode_isn[g]) else mode_isn[g]
        for i in range(a, b):
            rel[i] = _relative(s_seq[i], isn[g])
    confirmed = _confirmations(bounds, gids, where, isn, rel, s_len, acks, ack_lo, ack_size, ack_at, og)
    # a corrupted payload length shows as a small gap or overlap between two segments whose
    # successor chain is intact: give the earlier segment the length the sequence implies. A fix
    # confirms the segment before it (two corrupted lengths in a row): a few rounds
    fix = np.zeros(n, np.bool_)
    fixed = False
    new_payload = payload.copy()
    # an IP length with absent bits (at most 4, read as 0) takes the value of them that makes the
    # segment end where the direction's next one starts, when one does
    for k in range(ngr):
        a, b = bounds[k], bounds[k + 1]
        for i in range(a, b - 1):
            u = length_unknown[og[i]]
            if u == 0 or s_phase[i] or _bits_over(u, 4):
                continue
            d = rel[i + 1] - rel[i] - s_syn[i] - s_fin[i]
            sub = u
            while sub > 0:
                if s_pay[i] + sub == d:
                    s_pay[i] = d
                    s_len[i] = d + s_syn[i] + s_fin[i]
                    new_payload[og[i]] = d
                    fix[i] = True
                    fixed = True
                    break
                sub = (sub - 1) & u
    if fixed:
        confirmed = _confirmations(bounds, gids, where, isn, rel, s_len, acks, ack_lo, ack_size, ack_at, og)
    for _ in range(3):
        found = False
        for k in range(ngr):
            a, b = bounds[k], bounds[k + 1]
            max_pay = s_pay[a]
            for i in range(a, b):
                max_pay = max(max_pay, s_pay[i])
            sent = 0  # the end of what the direction sent before (0 before its first segment)
            counted = True  # did the segment before count in ``sent`` (was its start backed)?
            for i in range(a, b):
                if not fix[i] and i + 1 < b and s_pay[i] > 0 and not s_phase[i]:
                    d = rel[i + 1] - rel[i] - s_syn[i] - s_fin[i]
                    # a bare FIN follows at the segment's start (after bare ACKs there too: nDPI's
                    # dnp3 at 1%, a FIN whose IP length gained a bit)
                    # (empty segments whose sequence number is far off are skipped: corrupted, they
                    # say nothing about this one; shared youtube at 5%)
                    fin_next = False
                    nx = i + 1  # the direction's next segment, so skipping
                    for j in range(i + 1, b):
                        # (so are near ones at neither the segment's start nor its end: a number
                        # with absent bits resolved 256 below the FIN's, in nDPI's waze at 5%)
                        if s_len[j] == 0 and (abs(rel[j] - rel[i]) >= FAR
                                              or (rel[j] != rel[i] and rel[j] != rel[i] + s_pay[i])):
                            if nx == j:
                                nx = j + 1
                            continue
                        if rel[j] != rel[i] or s_pay[j] != 0 or s_syn[j] != 0:
                            break
                        if s_fin[j] == 1:
                            fin_next = True
                            break
                    nx = min(nx, b - 1)
                    # a start the predecessor contradicts while the predecessor's end plus this
                    # length reaches the successor: the sequence number is the corrupted field.
                    # Only new data: a resend of earlier bytes (starting below the end of what the
                    # direction already sent) is followed by whatever comes next, not by its own
                    # continuation. Nor a segment whose end the peer acknowledges (confirmed, as
                    # its successor does not continue it) followed by an empty segment one byte
                    # below that end: a keep-alive, after the segment as sent
                    if (0 < d <= max_pay and d != s_pay[i] and confirmed[i + 1] and rel[i] >= sent
                            and not (confirmed[i] and s_len[i + 1] == 0 and d == s_pay[i] - 1)
                            and not (i > a and rel[i] != rel[i - 1] + s_len[i - 1]
                                     and rel[i - 1] + s_len[i - 1] + s_len[i] == rel[i + 1])
                            # (the same with a predecessor whose own number is lost: it follows
                            # what was sent before; nDPI's coap_mqtt at 1%)
                            and not (i > a and not counted and rel[i] != sent + s_len[i - 1]
                                     and sent + s_len[i - 1] + s_len[i] == rel[i + 1])):
                        fix[i] = True
                    elif (s_fin[i] == 1 and s_psh[i] == 0 and not confirmed[i] and s_syn[i] == 0
                          and rel[nx] == rel[i] and s_fin[nx] == 1 and s_syn[nx] == 0 and 0 < s_pay[nx] < s_pay[i]):
                        # a FIN repeated at its number with fewer bytes: the repeat holds the data
                        # sent, the first one's IP length gained bits (nDPI's teams at 4%)
                        fix[i] = True
                        d = s_pay[nx]
                    elif (s_psh[i] == 0 and not confirmed[i] and s_syn[i] == 0
                          and (s_fin[i] == 0 or fin_next) and rel[nx] == rel[i] and s_len[nx] - s_fin[nx] < s_pay[i]
                          and _never_acked(og, bounds, where, gids[k], i, b, rel, s_len, s_ackf, ack_s, isn,
                                           fin_next)):
                        fix[i] = True
                        d = 0
                    elif (s_psh[i] == 0 and not confirmed[i] and s_syn[i] == 0 and s_fin[i] == 0
                          and _restarted(rel, s_len, confirmed, i, b)):
                        # bytes nobody acknowledges, without PSH, that the direction's next
                        # segment taking sequence space starts over with more data, confirmed:
                        # a bare ACK whose IP length gained a bit, before the data it preceded
                        fix[i] = True
                        d = 0
                    if fix[i]:
                        found = True
                        # (a FIN with phantom data repeated at its number: none)
                        s_pay[i] = max(d, 0)
                        s_len[i] = s_pay[i] + s_syn[i] + s_fin[i]
                        new_payload[og[i]] = s_pay[i]
                # a segment counts when its start is backed (it continues its predecessor, or is
                # confirmed), so that one corrupted far-ahead sequence number does not raise the
                # bound above every later start; an unconfirmed one counts only its first byte
                # (its length may be the corrupted field)
                counted = i == a or confirmed[i] or rel[i] == rel[i - 1] + s_len[i - 1]
                if counted:
                    end = rel[i] + (s_len[i] if confirmed[i] or fix[i] else min(s_len[i], 1))
                    sent = end if i == a else max(sent, end)
        if not found:
            break
        fixed = True
        confirmed = _confirmations(bounds, gids, where, isn, rel, s_len, acks, ack_lo, ack_size, ack_at, og)
    # Wireshark calls a backwards segment out-of-order (not a retransmission) when it comes
    # sooner than the initial RTT (3 ms if unknown) after the highest one: keep only later ones.
    # Wireshark times the initial RTT once per port pair, from the most recent SYN without ACK (a
    # SYN it had to resend starts the clock again) to the first packet with ACK and without SYN
    # of either direction: the client's handshake ACK, a refusal's RST, or in a capture of the
    # client alone its first ACK (timed as 3 ms there, data resent within the real RTT read as
    # out-of-order: nDPI's ocs at 5%). Per original connection ``conn0``: a retry after a
    # refusal is the same port pair to tshark. A zero interval leaves it unset (the next such
    # packet times it)
    nconn0 = 0
    for i in range(n):
        nconn0 = max(nconn0, conn0[i] + 1)
    irtt = np.full(nconn0, 3_000_000, np.int64)
    syn_at = np.full(nconn0, -1, np.int64)
    timed = np.zeros(nconn0, np.bool_)
    for i in range(n):
        c = conn0[i]
        if timed[c]:
            continue
        if syn[i] == 1 and ackf[i] == 0:
            syn_at[c] = ts[i]
        elif syn[i] == 0 and ackf[i] == 1 and syn_at[c] >= 0 and ts[i] > syn_at[c]:
            timed[c] = True
            irtt[c] = ts[i] - syn_at[c]
    peer_seen = np.zeros(n, np.bool_)
    seen0 = False
    seen1 = False
    for i in range(n):
        if i == 0 or ft[i - 1] != ft[i]:
            seen0, seen1 = False, False
        if dt[i] == 0:
            peer_seen[i] = seen1
            seen0 = True
        else:
            peer_seen[i] = seen0
            seen1 = True
    thr = irtt[conn0[og]]
    for i in range(n):
        if syn_retry[i]:  # SYN / SYN-ACK retransmissions restart at the ISN
            rel[i] = 0
    # retransmission candidates restart exactly where an earlier segment of the direction did;
    # same_start: the first segment of the direction that starts where this one does
    same_start = np.empty(n, np.int64)
    for k in range(ngr):
        _first_of_value(rel, bounds[k], bounds[k + 1], scratch_keys, scratch_slots, same_start)
    # a later FIN of a direction repeats its first FIN (same sequence number)
    first_fin = np.full(n, -1, np.int64)  # the direction's first FIN at or before (group order)
    fin_retry = np.zeros(n, np.bool_)
    fin_same_seq = np.zeros(n, np.bool_)
    for k in range(ngr):
        f = -1
        for i in range(bounds[k], bounds[k + 1]):
            if s_fin[i] == 1:
                if f < 0:
                    f = i
                else:
                    fin_retry[i] = True
            first_fin[i] = f
            fin_same_seq[i] = f >= 0 and s_seq[i] == s_seq[f]
    # does the peer acknowledge anything after this segment? (positions are flow order)
    last_ack_pos = np.full(ngroups, -1, np.int64)
    for i in range(n):
        if s_ackf[i] and og[i] > last_ack_pos[gid[i]]:
            last_ack_pos[gid[i]] = og[i]
    peer_later = np.empty(n, np.bool_)
    s_data = np.empty(n, np.bool_)
    for i in range(n):
        peer_later[i] = last_ack_pos[gid[i] ^ 1] > og[i]
        s_data[i] = s_pay[i] > 0 and s_syn[i] == 0
    # the acknowledgement side that does not depend on which segments are kept: with no packet
    # of the peer to check against, acknowledgements are relative to the direction's first one
    # (a SYN's zero acknowledgement field does not count)
    ack_first = np.zeros(ngroups, np.int64)
    for k in range(ngr):
        for i in range(bounds[k], bounds[k + 1]):
            if s_ackf[i]:
                ack_first[gids[k]] = ack_s[i]
                break
    has_peer = np.empty(n, np.bool_)
    peer_isn = np.empty(n, np.int64)
    arel_base = np.empty(n, np.int64)
    for i in range(n):
        p = ft[i] * 2 + 1 - dt[i]
        has_peer[i] = isn[p] >= 0
        peer_isn[i] = isn[p] if has_peer[i] else ack_first[gid_f[i]]
        arel_base[i] = _relative(ack0[i], peer_isn[i])
    isn_s = isn[gid]
    # SND.UNA as the sender knew it: the peer's latest acknowledgement (ACK flag set) before each
    # segment, relative to the direction's ISN (NO_UNA: none yet). A real sender's keep-alives
    # and window probes are one below it (see _fixed_point)
    last_ack = np.full(ngroups, -1, np.int64)
    una_f = np.full(n, -1, np.int64)
    for j in range(n):
        una_f[j] = last_ack[gid_f[j] ^ 1]
        if ackf[j] == 1:
            last_ack[gid_f[j]] = ack0[j] % MOD32
    una = np.full(n, NO_UNA, np.int64)
    for i in range(n):
        if una_f[og[i]] >= 0 and isn_s[i] >= 0:
            una[i] = _relative(una_f[og[i]], isn_s[i])
    none = np.zeros(0, np.bool_)
    kept, rel_kept = _fixed_point(bounds, rel, s_len, s_syn, s_fin, s_ts, thr, st, syn_retry, s_phase, s_rst,
                                  confirmed, peer_later, fin_retry, first_fin, fin_same_seq, same_start, una,
                                  np.zeros(n, np.bool_), none, np.zeros(0, np.int64))
    out_seq, out_ack, spurious = _numbers(ft, dt, og, bounds, gids, isn_s, rel, s_len, syn_retry, same_start,
                                          s_data, kept, rel_kept, ackf, synack, has_peer, peer_seen, peer_isn,
                                          arel_base, close_gaps, ack_window, nconn, none, ack0, ack0, none,
                                          syn_data, s_cut)
    # Segments moved forward that would stay in place as spurious retransmissions: keep them
    # and solve again, as long as they still qualify under the acknowledgements that gives
    # (keeping one changes nothing before it; a few rounds, else the first solution stands).
    # Only the directions holding such a segment need the fixed point again.
    wanted = spurious
    for _ in range(3):
        if not wanted.any():
            break
        trial = wanted
        dirty = np.zeros(nconn, np.bool_)  # the connections holding such a segment
        for i in range(n):
            if trial[i]:
                dirty[gid[i] >> 1] = True
        t_kept, t_rel = _fixed_point(bounds, rel, s_len, s_syn, s_fin, s_ts, thr, st, syn_retry, s_phase, s_rst,
                                     confirmed, peer_later, fin_retry, first_fin, fin_same_seq, same_start, una,
                                     trial, kept, rel_kept)
        t_seq, t_ack, t_spurious = _numbers(ft, dt, og, bounds, gids, isn_s, rel, s_len, syn_retry, same_start,
                                            s_data, t_kept, t_rel, ackf, synack, has_peer, peer_seen, peer_isn,
                                            arel_base, close_gaps, ack_window, nconn, dirty, out_seq, out_ack,
                                            spurious, syn_data, s_cut)
        holds = trial & t_spurious
        if (holds == trial).all():
            out_seq, out_ack = t_seq, t_ack
            break
        wanted = holds
    return out_seq, out_ack, new_payload, fixed


@kernel
def _fixed_point(bounds: np.ndarray, rel_in: np.ndarray, s_len: np.ndarray, s_syn: np.ndarray,
                 s_fin: np.ndarray, s_ts: np.ndarray, thr: np.ndarray, st: np.ndarray, syn_retry: np.ndarray,
                 s_phase: np.ndarray, s_rst: np.ndarray, confirmed: np.ndarray, peer_later: np.ndarray,
                 fin_retry: np.ndarray, first_fin: np.ndarray, fin_same_seq: np.ndarray, same_start: np.ndarray,
                 una: np.ndarray, forced: np.ndarray, base_kept: np.ndarray, base_rel: np.ndarray) -> tuple:
    """Which segments stay where they are (``kept``) and their offsets (``rel``: a resent FIN's
    moves with the first FIN), with ``forced`` segments kept.

    Arrays named ``s_*`` and the other per-segment inputs are in group order, ``rel_in`` the
    sequence offsets from the ISN with SYN retransmissions at 0, ``same_start`` the first segment
    of the direction starting at the same offset, ``una`` the peer's latest acknowledgement before
    the segment as an offset (SND.UNA; :data:`NO_UNA` before the first). ``base_kept`` /
    ``base_rel`` (empty, or the answer without forced segments) are taken as they are for groups
    without forced segments."""
    n = len(rel_in)
    rel = rel_in.copy()
    kept = np.ones(n, np.bool_)
    # what a segment's own fields allow, whatever the others do (bits of ``rule``)
    always, keepalive, gap, rst_in, acked_later, fin_again, fin_first = 1, 2, 4, 8, 16, 32, 64
    probe = 128
    rule = np.zeros(n, np.uint16)
    for i in range(n):
        f = 0
        ln = s_len[i]
        # a resent FIN (placed with the first below), a forced segment, a SYN / SYN-ACK
        # retransmission at the ISN
        if fin_retry[i] or forced[i] or (syn_retry[i] and rel_in[i] == 0):
            f |= always
        # keep-alive: one byte below what the direction already sent (never its first segment)
        if ln <= 1 and s_syn[i] == 0 and s_fin[i] == 0 and not st[i]:
            f |= keepalive
        # a confirmed forward jump is a capture gap: kept here, closed later unless gaps="keep".
        # Not an empty segment that the direction's next segment starts below: bytes missed by
        # the capture come before later segments, which continue after them (an ACK whose number
        # is corrupted the way a peer's acknowledgement of it is would else read as a gap, and
        # closing it moves every later segment below its true number)
        if confirmed[i] and not s_phase[i] and not (ln == 0 and i + 1 < n and not st[i + 1]
                                                    and rel_in[i + 1] < rel_in[i]):
            f |= gap
        if s_rst[i] and ln == 0:  # an RST in the window (RFC 5961)
            f |= rst_in
        if peer_later[i]:
            f |= acked_later
        if fin_retry[i]:
            f |= fin_again
        if first_fin[i] == i:
            f |= fin_first
        # a keep-alive or window probe at SND.UNA - 1 (Linux: tcp_xmit_probe_skb), below the end
        # of what the direction sent while data or a FIN is unacknowledged (shared YouTube
        # captures: two below the next number after an unanswered FIN, 47 below it after data)
        # (never the direction's first segment, as above)
        if ln == 0 and s_syn[i] == 0 and s_fin[i] == 0 and not s_rst[i] and not st[i] and una[i] != NO_UNA \
                and rel_in[i] == una[i] - 1:
            f |= probe
        rule[i] = f
    # "an earlier segment that restarts where this one does is kept": seen[same_start[i]] == the
    # current round's stamp once such a segment was passed
    seen = np.zeros(n, np.int64)
    stamp = 0
    for k in range(len(bounds) - 1):
        a, b = bounds[k], bounds[k + 1]
        if len(base_kept):
            any_forced = False
            for i in range(a, b):
                any_forced = any_forced or forced[i]
            if not any_forced:  # the same inputs as the answer given: the same result
                kept[a:b] = base_kept[a:b]
                rel[a:b] = base_rel[a:b]
                continue
        # Fixed point per (flow, direction) group (groups are independent): at most 64 rounds,
        # most groups settle after a round or two. Each round decides every segment from the
        # previous round's kept set, in one pass: the running expected offset, the last segment
        # that advanced it and the kept restart points only look back.
        for it in range(64):
            stamp += 1
            e = 0  # next expected offset (the (max, +) recurrence of _maxplus_scan)
            last_set = -1  # the latest earlier segment that advanced the sequence
            fin_final = 0  # where the direction's first FIN is placed
            changed = False
            for i in range(a, b):
                was = kept[i]
                f = rule[i]
                cand = seen[same_start[i]] == stamp
                if was and it < 6:
                    seen[same_start[i]] = stamp
                ln = s_len[i]
                if f & fin_again:
                    # a FIN resent with more of the earlier data ends where the first FIN ended
                    src = first_fin[i]
                    rel[i] = fin_final + (0 if fin_same_seq[i] else s_len[src] - ln)
                r = rel[i]
                if f & fin_first:
                    fin_final = r if was else e
                if f & always or r == e:  # in order
                    good = True
                elif r > e:
                    good = (f & gap) != 0 and r - e < (1 << 30)
                else:
                    good = False
                    # (not from 2**30 or more below: with the gaps closed, a number that far
                    # behind the rest wraps to far ahead of it; nDPI's chrome at 8%)
                    if r >= 0 and e - r < (1 << 30):
                        if cand and ln == 0:
                            # a bare ACK sent before a data segment but captured after it
                            # (reordered on the host): it restarts where an earlier segment did,
                            # and tshark does not analyse empty segments
                            good = True
                        elif cand:
                            # a resend from an earlier segment's start (after the out-of-order
                            # window) may carry more than before (repacketized data, or the data
                            # resent with the FIN), but only while the peer acknowledges nothing
                            # after it: tshark's highest byte to be acknowledged does not move on
                            # a retransmission, so an ACK of the new bytes would read as
                            # acknowledging an unseen segment
                            late = last_set < 0 or s_ts[i] - s_ts[last_set] >= thr[i] or r + ln == e
                            good = late and (r + ln <= e or (f & acked_later) == 0)
                        good = good or (f & rst_in) != 0
                    good = good or ((f & keepalive) != 0 and r == e - 1) or ((f & probe) != 0 and e - r < (1 << 30))
                if not good and ln == 1 and (f & keepalive) != 0 and not s_rst[i] and e > 0:
                    # one byte whose number is lost, just before the direction's next segment
                    # taking sequence space, which starts at the expected number and is confirmed:
                    # a keep-alive (one byte below), not new data that would push that segment
                    # and every later one up by a byte (nDPI's signal at 1%)
                    for j in range(i + 1, b):
                        if s_len[j] > 0:
                            if rel[j] == e and confirmed[j]:
                                rel[i] = e - 1
                                r = e - 1
                                good = True
                            break
                # after a few rounds only drop segments, and decide in order from this round's
                # decisions before (Gauss-Seidel): a fixed point in a pass or two. (From the
                # previous round's alone, a long chain of drops could outlast the 64 rounds and
                # leave a segment kept behind the expected number: out-of-order in tshark, seen
                # in nDPI's safari at 1% corruption)
                now = was
                if it >= 6:
                    if not was:
                        good = False
                    now = good
                    if good:
                        seen[same_start[i]] = stamp
                if now:
                    if r + ln > e:
                        last_set = i
                        e = r + ln
                else:
                    if ln > 0:
                        last_set = i
                    e += ln
                kept[i] = good
                changed = changed or good != was
            if not changed:
                break
    return kept, rel


@kernel
def _fill_gaps(gap_at: np.ndarray, gap_size: np.ndarray, gap_filled: np.ndarray, lo: int, hi: int,
               start: int, end: int) -> None:
    """Count the bytes of a direction's closed gaps (``lo:hi``, in order, original offsets) that a
    segment moved to the expected number, originally at ``start:end``, carries.

    That segment is the gap's data arriving late: a capture at the receiver sees a lost segment's
    retransmission (or a reordered one) after the segments beyond it. Closing the gap moved those
    down, and the late segment, numbered after them, moves the stream back up by its size; an
    acknowledgement past the gap, the peer's answer to all of it, must move down by what stayed
    missing only. Before, it moved down by the whole gap, so the direction's last bytes (and its
    FIN) were never acknowledged (pypacker's myfile.pcapng, a reordered 1,448-byte segment; the
    real lossy downloads of scripts/netns_traffic.py, 27-55 kB each). A segment moved before the
    jump that opens the gap counts too (it was moved for another reason, and its bytes are in the
    stream all the same). The fill counts from the gap's start (a gap filled by several segments
    in any order fills by their sizes), never past its size; an acknowledgement still never
    passes what the direction has sent (:func:`_numbers`)."""
    a, b = lo, hi
    while a < b:  # the first gap ending after start
        mid = (a + b) // 2
        if gap_at[mid] + gap_size[mid] <= start:
            a = mid + 1
        else:
            b = mid
    for j in range(a, hi):
        if gap_at[j] >= end:
            break
        overlap = min(end, gap_at[j] + gap_size[j]) - max(start, gap_at[j])
        if overlap > 0:
            gap_filled[j] = min(gap_size[j], gap_filled[j] + overlap)


@kernel
def _numbers(ft: np.ndarray, dt: np.ndarray, og: np.ndarray, bounds: np.ndarray, gids: np.ndarray,
             isn: np.ndarray, rel_in: np.ndarray, s_len: np.ndarray, syn_retry: np.ndarray,
             same_start: np.ndarray, s_data: np.ndarray, kept: np.ndarray, rel: np.ndarray, ackf: np.ndarray,
             synack: np.ndarray, has_peer: np.ndarray, peer_seen: np.ndarray, peer_isn: np.ndarray,
             arel_base: np.ndarray, close_gaps: bool, ack_window: int, nconn: int, dirty: np.ndarray,
             base_seq: np.ndarray, base_ack: np.ndarray, base_spurious: np.ndarray, syn_data: np.ndarray,
             s_cut: np.ndarray) -> tuple:
    """Sequence and acknowledgement numbers (flow order) from :func:`_fixed_point`'s ``kept`` and
    ``rel``; also which segments (group order) tshark would call spurious retransmissions there.

    Arrays named ``s_*`` and the other per-segment inputs are in group order, ``rel_in`` the
    sequence offsets from the ISN (``isn``, per segment) with SYN retransmissions at 0,
    ``same_start`` the first segment of the direction starting at the same offset. ``dirty``
    (empty: all) the connections to number; the others keep ``base_*`` (a connection's numbers
    depend on its two directions alone). ``syn_data``: TCP Fast Open bytes on each connection's SYN;
    ``s_cut``: bytes the MTU took off each segment's payload."""
    n = len(rel_in)
    every = len(dirty) == 0
    expected = np.empty(n, np.int64)
    seen = np.zeros(n, np.int64)
    stamp = 0
    # (a segment still out of place after these rounds is ahead of its predecessor: the gap
    # closing below moves it into place)
    final_rel = np.empty(n, np.int64)
    adv = np.empty(n, np.int64)
    seq_s = np.empty(n, np.int64)
    ngaps = 0
    gap_at = np.empty(n, np.int64)
    gap_before = np.empty(n, np.int64)
    gap_size = np.empty(n, np.int64)
    gap_filled = np.zeros(n, np.int64)  # bytes of the gap a segment moved later carries
    gap_lo = np.zeros(2 * nconn, np.int64)  # per gid: its gaps are gap_lo:gap_hi
    gap_hi = np.zeros(2 * nconn, np.int64)
    for k in range(len(bounds) - 1):
        a, b = bounds[k], bounds[k + 1]
        if not (every or dirty[gids[k] >> 1]):
            continue
        _expected_range(kept, rel, s_len, a, b, expected)
        shift = 0
        # bytes the MTU took off the segments since the direction was last where its generated
        # numbers say (segments moved to the expected number carry the offset along)
        cut_before = 0
        gap_lo[gids[k]] = ngaps
        for i in range(a, b):
            e = expected[i]
            if kept[i]:
                final_rel[i] = rel[i]
                adv[i] = max(rel[i] + s_len[i] - e, 0)
            else:
                final_rel[i] = 0 if syn_retry[i] else e
                adv[i] = 0 if syn_retry[i] else s_len[i]
            # close each gap by moving the rest of the direction down by the missing bytes, and
            # the peer's acknowledgements of bytes beyond it with it; with gaps kept, only the
            # bytes the MTU cut off the segment before (never sent; as a kept gap they read as
            # lost segments and ACKs of unseen ones: a host capture's 1,762-byte segment under
            # the default MTU of 1,500, Wireshark's rsasnakeoil2.pcap)
            if kept[i] and rel[i] >= e and not syn_retry[i]:
                gap = rel[i] - e if close_gaps else min(rel[i] - e, cut_before)
                if gap > 0:
                    gap_at[ngaps], gap_size[ngaps], gap_before[ngaps] = e, gap, shift
                    ngaps += 1
                    shift += gap
                    adv[i] -= gap
                cut_before = 0
            if adv[i] > 0:
                cut_before += s_cut[i]
            final_rel[i] -= shift
            seq_s[i] = (isn[i] + final_rel[i]) % MOD32
        gap_hi[gids[k]] = ngaps
        if ngaps > gap_lo[gids[k]]:  # the bytes of the gaps that segments moved carry, before or after
            for i in range(a, b):
                if not kept[i] and not syn_retry[i] and s_len[i] > 0:
                    _fill_gaps(gap_at, gap_size, gap_filled, gap_lo[gids[k]], ngaps, rel[i], rel[i] + s_len[i])
        # what the gaps before each one took off the direction's numbers, less the bytes of them
        # that segments moved carried (see _fill_gaps)
        net = 0
        for j in range(gap_lo[gids[k]], ngaps):
            gap_before[j] = net
            net += gap_size[j] - gap_filled[j]
    # acknowledgements, in flow order: at most what the peer has sent so far, or the peer's next
    # segment's start
    inv = np.empty(n, np.int64)
    inv[og] = np.arange(n)
    peer_next = np.empty(n, np.int64)
    next0 = next1 = -BIG
    for i in range(n - 1, -1, -1):
        if not (every or dirty[ft[i]]):
            continue
        if i == n - 1 or ft[i + 1] != ft[i]:
            next0 = next1 = -BIG
        peer_next[i] = next1 if dt[i] == 0 else next0
        if dt[i] == 0:
            next0 = final_rel[inv[i]]
        else:
            next1 = final_rel[inv[i]]
    out_seq = np.empty(n, np.int64)
    lower = -ack_window
    arel = np.empty(n, np.int64)
    ok_ack = np.empty(n, np.bool_)
    target = np.empty(n, np.int64)
    final = np.empty(n, np.int64)
    acknowledges = np.empty(n, np.bool_)
    sent0 = sent1 = 0
    for i in range(n):
        if not (every or dirty[ft[i]]):
            out_seq[i] = base_seq[i]
            continue
        out_seq[i] = seq_s[inv[i]]
        if i == 0 or ft[i - 1] != ft[i]:
            sent0 = sent1 = 0
        sent = sent1 if dt[i] == 0 else sent0
        if dt[i] == 0:
            sent0 += adv[inv[i]]
        else:
            sent1 += adv[inv[i]]
        ar = arel_base[i]
        if has_peer[i]:
            # an acknowledgement up to a gap's start acknowledges bytes before it and stays; one
            # past the gap moves down by its size (and every earlier gap's); one inside it, into
            # bytes never sent after closing, moves to its start
            p = ft[i] * 2 + 1 - dt[i]
            lo, hi = gap_lo[p], gap_hi[p]
            while lo < hi:  # the last gap starting below the acknowledged offset
                mid = (lo + hi) // 2
                if gap_at[mid] < arel_base[i]:
                    lo = mid + 1
                else:
                    hi = mid
            j = lo - 1
            if j >= gap_lo[p]:
                past = arel_base[i] - gap_at[j]
                ar -= gap_before[j] + min(gap_size[j], past) - min(gap_filled[j], past)
        arel[i] = ar
        uses = ackf[i] == 1
        if not peer_seen[i]:
            sent = 0
        upper = max(sent, peer_next[i]) if has_peer[i] else BIG
        ok_ack[i] = uses and ar <= upper and ar >= lower and not synack[i]
        tg = sent if has_peer[i] else ar
        if synack[i] and has_peer[i]:  # a SYN-ACK acknowledges exactly the SYN and its Fast Open
            tg = 1 + syn_data[ft[i]] if dt[i] == 1 else 0  # data (a capture starting at it never saw it)
        target[i] = tg
        # a segment without ACK acknowledges nothing: with no peer seen, its field (a SYN's 0)
        # must not hold the direction's later acknowledgements back
        acknowledges[i] = uses or has_peer[i]
        final[i] = ar if ok_ack[i] else (tg if acknowledges[i] else lower)
    # where each direction's segments end (final offsets): an acknowledgement below the direction's
    # latest one that acknowledges exactly such an end of the peer's is a stale one, and stays. A
    # receiver sends its ACKs in order, but a capture can see one after those that followed it
    # (a Linux receiver over veth: an ACK 5,792 bytes behind, scripts/netns_traffic.py's urgent
    # scenario); tshark reads it without a remark, and raising it changed real traffic
    end_lo = np.zeros(2 * nconn, np.int64)
    end_size = np.zeros(2 * nconn, np.int64)
    slots = 0
    for k in range(len(bounds) - 1):
        end_lo[gids[k]] = slots
        end_size[gids[k]] = _table_size(bounds[k + 1] - bounds[k])
        slots += end_size[gids[k]]
    ends = np.full(slots, EMPTY, np.int64)
    for k in range(len(bounds) - 1):
        if every or dirty[gids[k] >> 1]:
            g = gids[k]
            for j in range(bounds[k], bounds[k + 1]):
                if s_len[j] > 0:
                    ends[_slot(ends, end_lo[g], end_size[g], final_rel[j] + s_len[j])] = final_rel[j] + s_len[j]
    stale = np.zeros(n, np.bool_)
    for i in range(n):
        p = ft[i] * 2 + 1 - dt[i]
        if ok_ack[i] and has_peer[i] and end_size[p] > 0:
            stale[i] = ends[_slot(ends, end_lo[p], end_size[p], arel[i])] == arel[i]
    # otherwise acknowledgements never go backwards within a direction (at most 6 rounds, each
    # from the previous round's values)
    new = np.empty(n, np.int64)
    for k in range(len(bounds) - 1):
        a, b = bounds[k], bounds[k + 1]
        if not (every or dirty[gids[k] >> 1]):
            continue
        for _ in range(6):
            same = True
            top = lower
            for j in range(a, b):
                i = og[j]
                prev = lower if j == a else top
                if ok_ack[i] and (arel[i] >= prev or stale[i]):
                    v = arel[i]
                elif acknowledges[i]:
                    v = max(target[i], prev)
                else:
                    v = lower
                new[i] = v
                same = same and v == final[i]
                top = final[i] if j == a else max(top, final[i])
            if same:
                break
            for j in range(a, b):
                final[og[j]] = new[og[j]]
    out_ack = np.zeros(n, np.int64)
    # tshark checks a backward data segment against the peer's last acknowledgement before its
    # out-of-order window: ending at or below it, it is a spurious retransmission (a note),
    # however soon it follows the highest segment
    peer_last = np.empty(n, np.int64)
    last0 = last1 = -BIG
    for i in range(n):
        if not (every or dirty[ft[i]]):
            out_ack[i] = base_ack[i]
            continue
        if i == 0 or ft[i - 1] != ft[i]:
            last0 = last1 = -BIG
        peer_last[inv[i]] = last1 if dt[i] == 0 else last0
        # tshark's last acknowledgement is the latest segment's field, whatever its flags: a
        # segment without ACK (an RST's 0) clears it until the next ACK (nDPI's ethereum at 1%)
        v = -BIG
        if ackf[i] == 1:
            out_ack[i] = (peer_isn[i] + final[i]) % MOD32
            v = final[i]
        if dt[i] == 0:
            last0 = v
        else:
            last1 = v
    spurious = np.zeros(n, np.bool_)
    for k in range(len(bounds) - 1):
        a, b = bounds[k], bounds[k + 1]
        if not (every or dirty[gids[k] >> 1]):
            spurious[a:b] = base_spurious[a:b]
            continue
        stamp += 1
        for i in range(a, b):
            cand = seen[same_start[i]] == stamp
            if kept[i]:
                seen[same_start[i]] = stamp
            e = expected[i]
            placed = rel[i] if kept[i] else (0 if syn_retry[i] else e)
            as_kept = rel[i] - (placed - final_rel[i])  # gap shift
            spurious[i] = (cand and s_data[i] and rel[i] >= 0 and rel[i] < e and as_kept + s_len[i] <= peer_last[i]
                           and peer_last[i] > 0)
    return out_seq, out_ack, spurious


@kernel
def tcp_overlaps(ft: np.ndarray, dt: np.ndarray, seq: np.ndarray, ack: np.ndarray, ackf: np.ndarray,
                 syn: np.ndarray, fin: np.ndarray, payload: np.ndarray, nconn: int) -> tuple:
    """Payload lengths on the repaired numbers (flow order): a data segment that starts inside its
    direction's latest data segment, which holds the highest byte sent, and runs past it.

    Wireshark calls such a segment out-of-order (and the peer's ACK of its end "ACKed segment that
    wasn't captured") when it comes within the initial RTT. The sequence numbers are final here,
    so the earlier segment's length is the corrupted field, one the length fix in
    :func:`tcp_seq_ack` could not prove (its successor unconfirmed, or two corrupted in a row): it
    is cut to end where the next segment starts, unless the peer already acknowledged bytes past
    that start: then that segment's start is the corrupted field, and it starts at the earlier
    one's end with its own end kept. A segment starting inside and ending inside counts when the
    direction's next segment continues it past the earlier one's end. Returns the new payload
    lengths and sequence numbers, and which rows changed."""
    n = len(ft)
    ngroups = 2 * nconn
    last = np.full(ngroups, -1, np.int64)  # the group's latest data segment (flow index)
    top = np.zeros(ngroups, np.int64)  # the group's highest byte sent (absolute end)
    peer_ack = np.full(ngroups, -BIG, np.int64)  # the peer's highest ACK since ``last``, past its start
    pay = payload.copy()
    seq = seq.copy()
    cut = np.zeros(n, np.bool_)
    # the next data segment of the row's direction in its run (flow order), -1 at the last
    nxt = np.full(n, -1, np.int64)
    following = np.full(ngroups, -1, np.int64)
    for i in range(n - 1, -1, -1):
        if i == n - 1 or ft[i + 1] != ft[i]:
            following[ft[i] * 2] = following[ft[i] * 2 + 1] = -1
        g = ft[i] * 2 + dt[i]
        nxt[i] = following[g]
        if payload[i] > 0:
            following[g] = i
    for i in range(n):
        g = ft[i] * 2 + dt[i]
        if i == 0 or ft[i - 1] != ft[i]:
            for q in (ft[i] * 2, ft[i] * 2 + 1):
                last[q] = -1
                peer_ack[q] = -BIG
        p = g ^ 1
        if ackf[i] == 1 and last[p] >= 0:
            peer_ack[p] = max(peer_ack[p], _relative(ack[i], seq[last[p]]))
        size = pay[i] + syn[i] + fin[i]
        if size == 0:
            continue
        j = last[g]
        if j >= 0 and pay[i] > 0 and syn[i] == 0 and syn[j] == 0 and fin[j] == 0 and pay[j] > 0:
            end_j = (seq[j] + pay[j]) % MOD32
            off = _relative(seq[i], seq[j])
            # (not a keep-alive: one byte, the last one sent, again, with no FIN; tshark reads it
            # as such, and the direction's next segment continuing at the end is no overlap. A
            # real one, after data the peer had not acknowledged yet, was cut out of its segment,
            # leaving the bare ACK before it one byte ahead: a 2%-corrupted shared webex flow)
            keep_alive = pay[i] == 1 and off == pay[j] - 1 and fin[i] == 0
            if _relative(end_j, top[g]) == 0 and 0 < off < pay[j] and not keep_alive:
                k = nxt[i]
                past = off + pay[i] > pay[j]
                # or it ends inside and the direction's next segment continues it past the end
                chain = (not past and k >= 0 and seq[k] == (seq[i] + pay[i]) % MOD32
                         and _relative((seq[k] + pay[k]) % MOD32, end_j) > 0)
                if (past or chain) and peer_ack[g] <= off:
                    pay[j] = off
                    cut[j] = True
                elif past and fin[i] == 0:
                    # the peer acknowledged bytes beyond its start: the earlier segment's end
                    # stands, and this one's start is the corrupted field; it starts there
                    pay[i] -= pay[j] - off
                    seq[i] = end_j
                    cut[i] = True
        end = (seq[i] + size) % MOD32
        if j < 0 or _relative(end, top[g]) > 0:
            top[g] = end
        if pay[i] > 0 or fin[i] == 1:
            last[g] = i
            peer_ack[g] = -BIG
    return pay, seq, cut


@kernel
def tcp_zero_window(ft: np.ndarray, dt: np.ndarray, og: np.ndarray, seq: np.ndarray, ack: np.ndarray,
                    ackf: np.ndarray, win: np.ndarray, syn: np.ndarray, fin: np.ndarray,
                    payload: np.ndarray) -> tuple:
    """The zero windows to reopen (see :meth:`Repairer._tcp_zero_window_probes`): per row whether
    its window is one, and the last non-zero window its direction advertised before it (1 if none)."""
    n = len(ft)
    gid = ft * 2 + dt
    # the peer's latest packet before each row (flow order), -1 if the peer has not spoken
    peer = np.empty(n, np.int64)
    last0 = last1 = -1
    for i in range(n):
        if i == 0 or ft[i - 1] != ft[i]:
            last0 = last1 = -1
        peer[i] = last1 if dt[i] == 0 else last0
        if dt[i] == 0:
            last0 = i
        else:
            last1 = i
    # the next segment of the same direction, -1 at its last; the last non-zero window before
    nxt = np.full(n, -1, np.int64)
    value = np.empty(n, np.int64)
    last = -1
    for k in range(n):
        i = og[k]
        if k + 1 < n and gid[og[k + 1]] == gid[i]:
            nxt[i] = og[k + 1]
        if k == 0 or gid[og[k - 1]] != gid[i]:
            last = -1
        value[i] = win[last] if last >= 0 else 1
        if win[i] > 0:
            last = i
    fix = np.zeros(n, np.bool_)
    for i in range(n):
        p = peer[i]
        # the byte counts as sent when the next segment follows it, when a FIN rides on it, or
        # when the peer's answer before the direction's next packet acknowledges it (the peer
        # then ACKs past it: Wireshark's "ACKed unseen segment"; nDPI's curl at 6%)
        if not (payload[i] == 1 and syn[i] == 0 and p >= 0 and win[p] == 0):
            continue
        sent = fin[i] == 1 or (nxt[i] >= 0 and seq[nxt[i]] == (seq[i] + 1) % MOD32)
        q = i + 1
        while not sent and q < n and ft[q] == ft[i] and dt[q] != dt[i]:
            sent = ackf[q] == 1 and _relative(ack[q], seq[i]) > 0
            q += 1
        if sent:
            fix[p] = True
    return fix, value


@kernel
def _compact_options(kind_at: np.ndarray, data: np.ndarray, length: int, r: int, out: np.ndarray,
                     kinds: np.ndarray) -> int:
    """Row ``r``'s options in order with NOP runs of four or more cut to their length mod 4 and
    NOPs after the last option gone, EOL padding to a whole word; returns the new option length.

    For rows where a rule turned an option into NOPs (``kind_at`` 1 on its bytes): the options
    after a removed one keep their 4-byte alignment, and no run like NOP x6 + timestamps + NOP x4
    is left (tshark: "4 NOP in a row"). ``out`` / ``kinds``: scratch of one row's width."""
    nb = kind_at.shape[1]
    end = min(length, nb)
    last = 0  # the end of the last option that is not a NOP
    p = 0
    while p < end:
        if kind_at[r, p] >= 2:
            p += max(np.int64(data[r, p + 1]), 1)
            last = p
        elif kind_at[r, p] == 0:
            break
        else:  # a NOP (marked, or a byte of a removed option)
            p += 1
    q = 0
    p = 0
    while p < last:
        if kind_at[r, p] >= 2:
            size = np.int64(data[r, p + 1])
            kinds[q] = kind_at[r, p]
            for b in range(size):
                out[q + b] = data[r, p + b]
                if b:
                    kinds[q + b] = -1
            q += size
            p += size
        else:
            run = 0
            while p + run < last and kind_at[r, p + run] < 2:
                run += 1
            keep = run % 4  # (a run of 1-3 stays whole)
            for b in range(keep):
                out[q + b] = 1
                kinds[q + b] = 1
            q += keep
            p += run
    new = ((q + 3) // 4) * 4
    for b in range(q, nb):
        out[b] = 0
        kinds[b] = -1
    if q < new:
        kinds[q] = 0  # EOL, then zero padding
    for b in range(nb):
        data[r, b] = out[b]
        kind_at[r, b] = kinds[b]
    return new


@kernel
def tcp_option_rules(kind_at: np.ndarray, data: np.ndarray, length: np.ndarray, syn: np.ndarray,
                     syn_kinds: np.ndarray, syn_sizes: np.ndarray, wscale: int, wscale_at: int,
                     max_shift: int, conn: np.ndarray, nconn: int, mptcp: int) -> tuple:
    """SYN-only options (``syn_kinds``, ``syn_sizes`` bytes) leave other segments; the window
    shift (byte ``wscale_at`` of option ``wscale``) at most ``max_shift``; Multipath TCP (option
    ``mptcp``) options that name a connection's token (MP_CAPABLE with a key, 12 bytes or more;
    MP_JOIN on a SYN, 12 bytes) leave a connection whose first Multipath option named none (rows
    in time order per connection ``conn``, ``nconn`` of them). ``length``: each row's option bytes
    (no option starts beyond). Returns the new option bytes, lengths (``kind_at`` updated in
    place) and which rows changed.

    A removed option first becomes NOPs; then, in those rows only, NOPs after the last option go
    and runs of four or more keep their length mod 4 (the options after them keep their 4-byte
    alignment), with EOL padding to a whole word. NOPs in place of a SYN's MSS / window scale /
    SACK-permitted (a non-SYN row with a SYN's option list) made runs like NOP x6 + timestamps +
    NOP x4, which tshark flags ("4 NOP in a row", 27 packets in 20 of 120 generated pcaps);
    compacted it is NOP NOP + timestamps, Linux's layout. Runs of NOPs the row came with in rows
    this rule does not touch stay (real middleboxes write them: nDPI's KakaoTalk captures).

    Multipath keys: RFC 8684 sends them only on the handshake (and v1's first data segment), so a
    key after a DSS, ADD_ADDR, ... or a later MP_JOIN is noise, and tshark 4.0 asserts on it
    ("Dissector bug ... packet-tcp.c: failed assertion", a malformed packet: it made the
    connection's analysis without a token and finds no direction to give this one). Found in
    tcpdump's mptcp-v0.pcap at 2% corruption: the handshake's MP_CAPABLE options were cut, then a
    corrupted DSS read as an MP_CAPABLE (session 24)."""
    data = data.copy()
    length = length.copy()
    nb = kind_at.shape[1]
    moved = np.zeros(kind_at.shape[0], np.bool_)
    out = np.zeros(nb, np.uint8)
    kinds = np.full(nb, -1, np.int16)
    token = np.zeros(nconn, np.int8)  # per connection, Multipath so far: 0 none, 1 without a token, 2 with one
    for r in range(kind_at.shape[0]):
        removed = False
        c = conn[r]
        for p in range(min(length[r], nb)):
            k = kind_at[r, p]
            if k < 2:  # EOL, NOP or none
                continue
            for j in range(len(syn_kinds)):
                if k == syn_kinds[j] and syn[r] == 0:
                    for q in range(syn_sizes[j]):
                        if data[r, p + q] != 1:
                            data[r, p + q] = 1
                            moved[r] = True
                    kind_at[r, p] = 1
                    removed = True
            if k == wscale and syn[r] == 1 and data[r, p + wscale_at] > max_shift:
                data[r, p + wscale_at] = max_shift
                moved[r] = True
            if k == mptcp and p + 2 < nb:
                size = np.int64(data[r, p + 1])
                subtype = np.int64(data[r, p + 2]) >> 4
                names_token = (subtype == 0 and size >= 12) or (subtype == 1 and size == 12)
                if names_token and token[c] == 1:
                    for q in range(size):
                        data[r, p + q] = 1
                    kind_at[r, p] = 1
                    removed = True
                    moved[r] = True
                elif names_token:
                    token[c] = 2
                elif token[c] == 0 and subtype >= 1:  # (an MP_CAPABLE without a key names nothing yet)
                    token[c] = 1
        if removed:
            length[r] = _compact_options(kind_at, data, length[r], r, out, kinds)
    return data, length, moved


@kernel
def _word(data: np.ndarray, r: int, p: int) -> int:
    """The big-endian 32-bit word at bytes ``p:p + 4`` of row ``r``."""
    v = 0
    for j in range(4):
        v = (v << 8) | np.int64(data[r, p + j])
    return v


@kernel
def _put_word(data: np.ndarray, r: int, p: int, v: int) -> None:
    """Write ``v`` as the big-endian 32-bit word at bytes ``p:p + 4`` of row ``r``."""
    for j in range(4):
        data[r, p + j] = (v >> (24 - 8 * j)) & 0xFF


@kernel
def tcp_timestamp_rules(kind_at: np.ndarray, data: np.ndarray, length: np.ndarray, rst: np.ndarray, og: np.ndarray,
                        gid: np.ndarray, phase_c: np.ndarray, kind: int, val_at: int, ecr_at: int) -> tuple:
    """TSval non-decreasing per direction (serial numbers, from the direction's first), TSecr 0 on
    the client's handshake SYNs; RSTs are left alone. Option ``kind`` carries TSval / TSecr as
    big-endian words at bytes ``val_at`` / ``ecr_at``; ``length``: each row's option bytes.
    Returns the new option bytes and which rows changed (a row with two such options gets the
    values of its last in both)."""
    n = kind_at.shape[0]
    data = data.copy()
    has = np.zeros(n, np.bool_)
    val = np.zeros(n, np.int64)
    ecr = np.zeros(n, np.int64)
    for r in range(n):
        if rst[r] != 0:
            continue
        for p in range(min(length[r], kind_at.shape[1])):
            if kind_at[r, p] == kind:
                has[r] = True
                val[r], ecr[r] = _word(data, r, p + val_at), _word(data, r, p + ecr_at)
    new_val = val.copy()
    new_ecr = ecr.copy()
    prev = -1
    base = top = 0
    for k in range(n):
        i = og[k]
        if not has[i]:
            continue
        rel = _relative(val[i], base) if gid[i] == prev else 0
        if gid[i] != prev:
            prev, base, top = gid[i], val[i], 0
        else:
            top = max(top, rel)
        new_val[i] = (base + max(top, 0)) % MOD32
        if phase_c[i]:
            new_ecr[i] = 0
    moved = np.zeros(n, np.bool_)
    for r in range(n):
        if not has[r]:
            continue
        moved[r] = new_val[r] != val[r] or new_ecr[r] != ecr[r]
        for p in range(min(length[r], kind_at.shape[1])):
            if kind_at[r, p] == kind:
                _put_word(data, r, p + val_at, new_val[r])
                _put_word(data, r, p + ecr_at, new_ecr[r])
    return data, moved


@kernel
def tcp_sack_rules(kind_at: np.ndarray, data: np.ndarray, length: np.ndarray, ackf: np.ndarray, ack: np.ndarray,
                   kind: int, max_window: int, dsack_reach: int) -> tuple:
    """SACK blocks (option ``kind``: 2 + 8 bytes per block, left / right edge as big-endian words)
    that a receiver could have sent (RFC 2018, RFC 2883), against the repaired ACK numbers.

    ``ackf`` / ``ack``: the rows' repaired ACK flag and number. A block stays only where its right
    edge is after its left and at most ``max_window`` above the ACK (the data a block reports
    fits in the receive window, at most 2**30 bytes: RFC 7323), and where it starts below the
    ACK only as the first block, at most ``dsack_reach`` bytes below (a D-SACK: a duplicate
    received). Anything else goes: a block ending before it starts, a later block below the ACK,
    a D-SACK far below, a row without the ACK flag. Generated edges are mostly such noise (and
    the sequence rule renumbered the peer's bytes). Blocks are not moved with a repaired ACK: in
    a real flow whose capture lost segments the ACK is what repair changes, and its blocks are
    right as they are. Nor bounded by the peer's data in the capture: windows of a flow start
    mid-flow (nDPI's tumblr: blocks 3 MB beyond it). An option left without blocks goes whole,
    and the row's options are compacted (:func:`_compact_options`). Returns the new option
    bytes, lengths (``kind_at`` updated in place) and which rows changed."""
    n = kind_at.shape[0]
    nb = kind_at.shape[1]
    data = data.copy()
    length = length.copy()
    moved = np.zeros(n, np.bool_)
    left = np.zeros(4, np.int64)
    right = np.zeros(4, np.int64)
    out = np.zeros(nb, np.uint8)
    kinds = np.full(nb, -1, np.int16)
    for r in range(n):
        removed = False
        for p in range(min(length[r], nb)):
            if kind_at[r, p] != kind:
                continue
            k = min((np.int64(data[r, p + 1]) - 2) // 8, 4)
            for b in range(k):
                left[b] = _word(data, r, p + 2 + 8 * b)
                right[b] = _word(data, r, p + 6 + 8 * b)
            kept = 0
            for b in range(k):
                below = _relative(ack[r], left[b])
                if not (ackf[r] == 1 and _relative(right[b], left[b]) > 0
                        and _relative(right[b], ack[r]) <= max_window
                        and (below <= 0 or (b == 0 and below <= dsack_reach))):
                    continue
                if kept < b:  # a block before it went: it moves up
                    _put_word(data, r, p + 2 + 8 * kept, left[b])
                    _put_word(data, r, p + 6 + 8 * kept, right[b])
                kept += 1
            if kept == k:
                continue
            moved[r] = True
            size = 2 + 8 * kept if kept else 0
            if kept:
                data[r, p + 1] = size
            else:
                kind_at[r, p] = 1
            for q in range(size, 2 + 8 * k):
                data[r, p + q] = 1
            removed = True
        if removed:
            length[r] = _compact_options(kind_at, data, length[r], r, out, kinds)
    return data, length, moved
