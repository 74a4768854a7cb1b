"""Write nanosecond-resolution pcap files (and wrap IP packets in Ethernet II).

Every stage that emits traffic (decode, repair, the service) writes through here, so files are
always nanosecond pcaps (magic ``0xa1b23c4d``) that tshark, capinfos and tcpreplay open, and they
appear atomically: a reader never sees half a file.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

import numpy as np

from netdiffusion.dataset import atomic_write_bytes

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

PCAP_MAGIC_NS = 0xA1B23C4D
PCAP_MAGIC_US = 0xA1B2C3D4

# Locally administered unicast MACs (bit 1 of the first byte set): initiator and responder.
MAC_INITIATOR = bytes.fromhex("02000000000a")
MAC_RESPONDER = bytes.fromhex("02000000000b")

_ETH_IPV4 = MAC_RESPONDER + MAC_INITIATOR + b"\x08\x00"  # dst, src, type for direction 0
_ETH_IPV6 = MAC_RESPONDER + MAC_INITIATOR + b"\x86\xdd"
_ETH_IPV4_REV = MAC_INITIATOR + MAC_RESPONDER + b"\x08\x00"
_ETH_IPV6_REV = MAC_INITIATOR + MAC_RESPONDER + b"\x86\xdd"


def pcap_bytes(frames: Sequence[bytes], timestamps_ns: np.ndarray | Sequence[int],
               linktype: int = LINKTYPE_ETHERNET, snaplen: int = 262144) -> bytes:
    """The bytes of a nanosecond pcap holding ``frames`` (each cut to ``snaplen``)."""
    ts = np.asarray(timestamps_ns, dtype=np.int64).reshape(-1)
    if len(ts) != len(frames):
        raise ValueError(f"{len(frames)} frames but {len(ts)} timestamps")
    if len(ts) and ts.min() < 0:
        raise ValueError("timestamps must be >= 0 ns since the epoch")
    lengths = np.fromiter((len(f) for f in frames), dtype=np.int64, count=len(frames))
    captured = np.minimum(lengths, snaplen)
    headers = np.empty((len(frames), 4), dtype="<u4")
    headers[:, 0] = ts // 1_000_000_000
    headers[:, 1] = ts % 1_000_000_000
    headers[:, 2] = captured
    headers[:, 3] = lengths
    header_bytes = headers.tobytes()
    parts = [struct.pack("<IHHiIII", PCAP_MAGIC_NS, 2, 4, 0, 0, snaplen, linktype)]
    for i, frame in enumerate(frames):
        parts.append(header_bytes[16 * i : 16 * i + 16])
        parts.append(frame if captured[i] == lengths[i] else frame[: int(captured[i])])
    return b"".join(parts)


def write_pcap(path: str | os.PathLike, frames: Sequence[bytes], timestamps_ns: np.ndarray,
               linktype: int = LINKTYPE_ETHERNET, snaplen: int = 262144) -> None:
    """Write ``frames`` with absolute ``timestamps_ns`` (ns since the epoch) as a pcap, atomically."""
    atomic_write_bytes(path, pcap_bytes(frames, timestamps_ns, linktype, snaplen))


def ethernet_frames(ip_packets: Sequence[bytes], directions: np.ndarray | None = None) -> list[bytes]:
    """Wrap IP packets in Ethernet II; direction 0 goes initiator -> responder MAC, 1 the reverse.

    The EtherType comes from each packet's IP version nibble (0x0800 IPv4, 0x86DD IPv6)."""
    dirs = np.zeros(len(ip_packets), dtype=np.int8) if directions is None else np.asarray(directions)
    if len(dirs) != len(ip_packets):
        raise ValueError(f"{len(ip_packets)} packets but {len(dirs)} directions")
    out: list[bytes] = []
    for packet, direction in zip(ip_packets, dirs.tolist(), strict=True):
        v6 = bool(packet) and (packet[0] >> 4) == 6
        if direction:
            out.append((_ETH_IPV6_REV if v6 else _ETH_IPV4_REV) + packet)
        else:
            out.append((_ETH_IPV6 if v6 else _ETH_IPV4) + packet)
    return out
