"""Capture I/O: streaming vectorized reading (pcap, pcapng, gzip, many link types) and writing."""

from netdiffusion.pcap.reader import CaptureError, RecordBatch, capture_format, iter_records
from netdiffusion.pcap.writer import (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    ethernet_frames,
    pcap_bytes,
    write_pcap,
)

__all__ = [
    "LINKTYPE_ETHERNET", "LINKTYPE_RAW", "CaptureError", "RecordBatch", "capture_format",
    "ethernet_frames", "iter_records", "pcap_bytes", "write_pcap",
]
