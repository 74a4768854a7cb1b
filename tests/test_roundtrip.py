"""Acceptance: pcap -> encode -> decode gives back every IP/TCP/UDP/ICMP header byte, on every
shared capture, and the flow-relative timestamps at full precision.

The original side is read with a minimal, independent header walk (Ethernet + VLAN, IPv4 IHL /
IPv6 fixed header, TCP data offset, 8-byte UDP/ICMP), not with the encoder's parser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netdiffusion.dataset import iter_shards, read_layout
from netdiffusion.decode import BASE_EPOCH_NS, decode_dataset, flow_pcap_path
from netdiffusion.pcap.reader import iter_records


def frames_of(path: Path) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """(frame bytes, timestamps ns, wire lengths) of every record, 0-based by frame number - 1."""
    frames: list[bytes] = []
    ts, wire = [], []
    for b in iter_records(path):
        raw = b.data
        frames.extend(raw[o:o + c].tobytes() for o, c in zip(b.offset.tolist(), b.caplen.tolist(), strict=True))
        ts.append(b.ts_ns)
        wire.append(b.wirelen)
    return frames, np.concatenate(ts), np.concatenate(wire)


def ip_of_ethernet(frame: bytes) -> bytes:
    off, etype = 12, int.from_bytes(frame[12:14], "big")
    while etype in (0x8100, 0x88A8):
        off += 4
        etype = int.from_bytes(frame[off:off + 2], "big")
    return frame[off + 2:]


def header_span(ip: bytes) -> int:
    """Bytes of IP + transport header as the packet's own length fields say."""
    if ip[0] >> 4 == 4:
        l3, proto = (ip[0] & 15) * 4, ip[9]
    else:
        l3, proto = 40, ip[6]
    if proto == 6 and len(ip) > l3 + 12:
        return l3 + (ip[l3 + 12] >> 4) * 4
    return l3 + (8 if proto in (1, 17) else 0)


def ip_length(ip: bytes) -> int:
    return int.from_bytes(ip[2:4], "big") if ip[0] >> 4 == 4 else 40 + int.from_bytes(ip[4:6], "big")


@pytest.mark.slow
def test_every_shared_capture_round_trips(shared_encoded: Path, shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "decoded"
    summary = decode_dataset(shared_encoded, out)
    assert summary["rows_without_ip"] == 0
    read_layout(shared_encoded)
    sources_seen: set[str] = set()
    compared = flows = 0
    for shard in iter_shards(shared_encoded):
        sources = np.unique(shard.source)
        originals = {s: frames_of(shared_data / "pcaps" / s) for s in sources}
        sources_seen.update(sources.tolist())
        for flow_id, flow in shard.flows():
            decoded, dts, _ = frames_of(flow_pcap_path(out, str(flow.label[0]), flow_id))
            assert len(decoded) == len(flow), flow_id
            frames, ots, owire = originals[str(flow.source[0])]
            # timestamps: decoded = base + relative; relative = original - original at sample start
            assert (dts - BASE_EPOCH_NS == flow.timestamp).all(), flow_id
            first = flow.frame[0] - 1
            assert (ots[flow.frame - 1] - ots[first] == flow.timestamp).all(), flow_id
            assert (owire[flow.frame - 1] == flow.wire_length).all(), flow_id
            for frame_no, got_frame in zip(flow.frame.tolist(), decoded, strict=True):
                orig = ip_of_ethernet(frames[frame_no - 1])
                got = got_frame[14:]
                span = header_span(got)
                assert span == header_span(orig) or len(orig) < header_span(orig), (flow_id, frame_no)
                n = min(span, len(orig))  # a snap length may have cut the original's options
                assert got[:n] == orig[:n], (flow_id, frame_no)
                assert len(got) == ip_length(orig), (flow_id, frame_no)
                compared += 1
            flows += 1
    expected = {p.relative_to(shared_data / "pcaps").as_posix() for p in (shared_data / "pcaps").rglob("*.pcap")}
    assert sources_seen == expected
    assert compared == summary["packets"] and flows == summary["flows"]
