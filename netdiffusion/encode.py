"""Encode captures into the nPrint Parquet dataset (see :mod:`netdiffusion.dataset`).

Per capture: stream record batches (:mod:`netdiffusion.pcap.reader`), parse headers vectorized
(:mod:`netdiffusion.pcap.parse`), assemble bidirectional flows (:mod:`netdiffusion.flows`), keep
each flow's first ``packets`` packets (or cut it into consecutive windows), and write shards.

Kept packets are buffered as raw header bytes (120 bytes each, not 1,408 bit columns) and turned
into nPrint bits only when a shard is written, one shard at a time. Shards are cut at flow
boundaries, so a flow sample lives in one shard -- unless a single capture keeps more than
``max_buffer_rows`` packets, in which case the buffer is flushed early and a flow may span shards
(logged). Work is split by file across ``workers`` processes; re-running over the same inputs
rewrites the same shard names with the same content and removes stale shards (idempotent).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from netdiffusion.dataset import (
    NPRINT_STORAGES,
    SUMMARY_FILE,
    Packets,
    write_fields,
    write_json,
    write_shard,
    write_ternary_shard,
)
from netdiffusion.fields import DEFAULT_HEADERS, Layout
from netdiffusion.flows import FlowTable, canonical_keys
from netdiffusion.labels import (
    CAPTURE_SUFFIXES,
    FlowLabels,
    capture_stem,
    is_capture_name,
    label_for,
    load_manifest,
)
from netdiffusion.pcap.parse import (
    L3_IPV4,
    L3_IPV6,
    L4_ICMP,
    L4_TCP,
    L4_UDP,
    NOTE_REASONS,
    SKIP_REASONS,
    parse_batch,
)
from netdiffusion.pcap.reader import DEFAULT_CHUNK, CaptureError, RecordBatch, TruncatedCapture, iter_records
from netdiffusion.shard_parquet import DictionaryColumn, plain_columns

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 131072  # packets per shard (~185 MB of bits before zstd at 1,408 columns)
DEFAULT_MAX_BUFFER_ROWS = 2_000_000  # kept packets buffered per capture before an early flush
CONTENT_PROBE_BYTES = 1 << 16  # copies are found by size + a hash of this many leading bytes
_UNSUPPORTED = SKIP_REASONS.index("unsupported_linktype")
_ORIGIN_WORDS = {"folder": "folder name", "filename": "file name"}  # labels.Label.origin, in words


@dataclass
class _Buffer:
    """Kept packets of one capture as column arrays (header bytes, not bits)."""

    parts: list[dict[str, np.ndarray]]
    rows: int = 0

    def add(self, part: dict[str, np.ndarray]) -> None:
        self.parts.append(part)
        self.rows += len(part["flow"])

    def take(self) -> dict[str, np.ndarray]:
        merged = {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}
        self.parts, self.rows = [], 0
        return merged


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60]


def shard_prefix(source: str) -> str:
    """Shard file prefix of a capture: readable stem + hash of its source string."""
    digest = hashlib.sha1(source.encode()).hexdigest()[:8]
    return f"{_safe(capture_stem(source))}-{digest}"


def discover_inputs(inputs: Sequence[str | os.PathLike],
                    ignored: list[Path] | None = None) -> list[tuple[Path, str, bool]]:
    """(path, source, in_class_folder) for every capture: files as given, folders searched recursively.

    ``source`` is the path as given on the command line, or relative to the input folder;
    ``in_class_folder`` is true for captures found in a subfolder of an input folder. Files in
    the folders whose names are no capture's (:func:`is_capture_name`; hidden ones aside) are
    appended to ``ignored`` when given, so the caller can say what it did not read."""
    found: list[tuple[Path, str, bool]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            others: list[tuple[str, ...]] | None = [] if ignored is not None else None
            for parts in sorted(_capture_names(os.fspath(p), (), others)):
                found.append((p.joinpath(*parts), "/".join(parts), len(parts) > 1))
            if ignored is not None and others:
                ignored.extend(p.joinpath(*parts) for parts in sorted(others))
        else:
            found.append((p, str(item), False))
    return found


def _capture_names(folder: str, below: tuple[str, ...],
                   others: list[tuple[str, ...]] | None = None) -> Iterator[tuple[str, ...]]:
    """Relative path parts of every capture file under ``folder`` (what ``sorted(rglob("*"))`` with
    ``is_file()`` finds: symlinked files yes, symlinked folders not entered, hidden files no);
    other files' parts go to ``others`` when given.

    One ``scandir`` per folder, no ``stat`` per file and no path object per entry: repair and
    decode list their own output folders (a file per flow) after every run."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                yield from _capture_names(entry.path, (*below, entry.name), others)
            elif entry.name.startswith(".") or not entry.is_file():
                continue
            elif is_capture_name(entry.name):
                yield (*below, entry.name)
            elif others is not None:
                others.append((*below, entry.name))


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _describe_folder(folder: Path, limit: int = 5) -> str:
    """What a folder without captures holds, so a wrong --input is obvious from one line."""
    files = sorted(f.relative_to(folder).as_posix() for f in folder.rglob("*") if f.is_file())
    if not files:
        return "it is empty"
    more = f" and {len(files) - limit} more" if len(files) > limit else ""
    return f"it holds {_plural(len(files), 'file', 'files')}: {', '.join(files[:limit])}{more}"


def no_captures_message(inputs: Sequence[str | os.PathLike]) -> str:
    """The one-line reason no capture was found under ``inputs``."""
    if not inputs:
        return "no captures found: no input given"
    parts = []
    for item in inputs:
        p = Path(item)
        parts.append(f"{p}: {_describe_folder(p)}" if p.is_dir() else str(p))
    return (f"no captures found under {'; '.join(parts)} (capture files end in "
            f"{', '.join(CAPTURE_SUFFIXES)})")


def dedupe_inputs(captures: Sequence[tuple[Path, str, bool]]) -> tuple[list[tuple[Path, str, bool]], int]:
    """Captures with repeated mentions of one file (same resolved path) dropped, and how many.

    The first mention wins (its source name and label rule). Without this a file given twice
    writes the same shard names twice (the summary counts it twice, the data once), and a folder
    plus a file inside it stores the same flows twice under two flow ids (train/held-out leaks)."""
    seen: set[Path] = set()
    kept = []
    for capture in captures:
        key = capture[0].resolve()
        if key not in seen:
            seen.add(key)
            kept.append(capture)
    return kept, len(captures) - len(kept)


def unique_sources(captures: Sequence[tuple[Path, str, bool]]) -> list[tuple[Path, str, bool]]:
    """Captures whose source names are unique: two input folders can both hold ``zoom/x.pcap``, and
    equal sources would write the same shard names and flow ids; such ones keep their full path."""
    count = Counter(source for _, source, _ in captures)
    return [(path, str(path) if count[source] > 1 else source, in_class)
            for path, source, in_class in captures]


def _file_digest(path: Path, limit: int | None) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        if limit is None:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(fh.read(limit))
    return h.hexdigest()


def find_copies(captures: Sequence[tuple[Path, str, bool]]) -> list[dict[str, str]]:
    """``{file, same_as}`` for every capture whose bytes equal an earlier one's (another name for
    the same capture: a copy, a hard link). Candidates by size + a hash of the first
    :data:`CONTENT_PROBE_BYTES`, confirmed by a hash of the whole file. Both stay encoded: which
    label is right is the user's call, so this is reported, not fixed."""
    by_probe: dict[tuple[int, str], list[tuple[Path, str]]] = {}
    for path, source, _ in captures:
        try:
            size = path.stat().st_size
            if not path.is_file() or not size:
                continue
            by_probe.setdefault((size, _file_digest(path, CONTENT_PROBE_BYTES)), []).append((path, source))
        except OSError:
            continue  # unreadable: the encoder rejects it with the reason
    copies = []
    for (size, _), group in by_probe.items():
        if len(group) < 2:
            continue
        first_by_digest: dict[str, str] = {}
        for path, source in group:
            try:
                digest = _file_digest(path, None if size > CONTENT_PROBE_BYTES else CONTENT_PROBE_BYTES)
            except OSError:
                continue
            if digest in first_by_digest:
                copies.append({"file": source, "same_as": first_by_digest[digest]})
            else:
                first_by_digest[digest] = source
    order = {source: i for i, (_, source, _) in enumerate(captures)}
    return sorted(copies, key=lambda c: order[c["file"]])


def _no_packets_reason(result: dict) -> str:
    """Why a capture that was read kept no packet: its skip counters, largest first."""
    parts = []
    for name, count in sorted(result["skipped"].items(), key=lambda kv: (-kv[1], kv[0])):
        if name == "unsupported_linktype" and result.get("unsupported_linktypes"):
            name += " " + ", ".join(result["unsupported_linktypes"])
        parts.append(f"{name}: {_plural(count, 'packet', 'packets')}")
    return "; ".join(parts) or "nothing to keep"


def _log_manifest_coverage(manifest: str | os.PathLike, manifest_map: dict[Path, tuple[str, str]],
                           captures: Sequence[tuple[Path, str, bool]], origins: Sequence[str]) -> dict[str, int]:
    """Log (one line each) the captures the manifest does not label and the rows that label
    nothing given, so a typo in either is seen instead of silently changing labels."""
    unlisted = Counter(o for o in origins if o != "manifest")
    if unlisted:
        how = ", ".join(f"{_ORIGIN_WORDS.get(o, o)} {n}" for o, n in sorted(unlisted.items()))
        examples = [source for (_, source, _), o in zip(captures, origins, strict=True) if o != "manifest"][:3]
        n = sum(unlisted.values())
        log.warning("%s not in the manifest %s: labelled by %s (e.g. %s)",
                    _plural(n, "capture", "captures"), manifest, how, ", ".join(examples))
    given = {path.resolve() for path, _, _ in captures}
    rows = [p for p in manifest_map if p not in given]
    found = [p for p in rows if p.exists()]
    missing = [p for p in rows if not p.exists()]
    if found:
        log.info("%s not given as input (not encoded)",
                 "1 manifest row names a file" if len(found) == 1 else f"{len(found)} manifest rows name files")
    if missing:
        log.warning("%s not found (e.g. %s)",
                    "1 manifest row names a file" if len(missing) == 1 else f"{len(missing)} manifest rows name files",
                    ", ".join(str(p) for p in missing[:3]))
    return {"captures_not_in_manifest": sum(unlisted.values()), "rows_not_given": len(found),
            "rows_not_found": len(missing)}


def _nprint_rows(layout: Layout, cols: dict[str, np.ndarray], ternary: bool = False) -> np.ndarray:
    """nPrint rows from buffered header bytes: int8 rows, or with ``ternary`` the packed ternary
    form the list-storage shard writer takes directly (one uint16 lookup per header byte)."""
    n = len(cols["flow"])
    matrix = np.empty((n, layout.width // 4 if ternary else layout.width), dtype=np.uint8 if ternary else np.int8)
    scale = 4 if ternary else 1
    l3, l4 = cols["l3"], cols["l4"]
    for header, kind, window, lengths, code in (
        ("ipv4", l3, cols["l3_bytes"], cols["l3_len"], L3_IPV4),
        ("ipv6", l3, cols["l3_bytes"], cols["l3_len"], L3_IPV6),
        ("tcp", l4, cols["l4_bytes"], cols["l4_len"], L4_TCP),
        ("udp", l4, cols["l4_bytes"], cols["l4_len"], L4_UDP),
        ("icmp", l4, cols["l4_bytes"], cols["l4_len"], L4_ICMP),
    ):
        if header not in layout.headers:
            continue
        cut = layout.header_slice(header)
        lengths = np.where(kind == code, lengths, 0)
        if ternary:
            layout.header_ternary_from_bytes(header, window, lengths, out=matrix[:, cut.start // scale:cut.stop // scale])
        else:
            layout.header_bits_from_bytes(header, window, lengths, out=matrix[:, cut])
    return matrix


class _FileEncoder:
    """Encodes one capture into shards named ``<prefix>-<seq>.parquet`` under ``output``."""

    def __init__(self, path: Path, source: str, label: str, macro: str, output: Path, layout: Layout,
                 packets: int, windows: bool, shard_size: int, flow_labels: FlowLabels | None,
                 max_buffer_rows: int, nprint_storage: str = "list") -> None:
        self.path, self.source, self.label, self.macro = path, source, label, macro
        self.output, self.layout = output, layout
        self.l3_codes = [code for h, code in (("ipv4", L3_IPV4), ("ipv6", L3_IPV6)) if h in layout.headers]
        self.packets, self.windows = packets, windows
        self.shard_size, self.flow_labels = shard_size, flow_labels
        self.max_buffer_rows = max_buffer_rows
        self.nprint_storage = nprint_storage
        self.prefix = shard_prefix(source)
        self.flows = FlowTable()
        self.buffer = _Buffer([])
        self.written: list[str] = []
        self.skipped: Counter[str] = Counter()
        self.notes: Counter[str] = Counter()
        self.linktypes: Counter[int] = Counter()  # link types of packets skipped as unsupported
        self.flow_samples = 0
        self.samples_seen: set[int] = set()  # sample keys already counted (an early flush splits samples)
        self.rows = 0
        self.split_flows = False
        self.ndpi_rule = ""

    def run(self, chunk_bytes: int, on_batch: Callable[[int], None] | None = None) -> dict:
        read = 0
        truncated = None
        try:
            for batch in iter_records(self.path, chunk_bytes):
                read += len(batch)
                self._add(batch)
                if on_batch is not None:
                    on_batch(len(batch))
                if self.buffer.rows >= self.max_buffer_rows:
                    self.split_flows = True
                    log.warning("%s: more than %d kept packets; flushing early, flows may span shards",
                                self.source, self.max_buffer_rows)
                    self._flush()
        except TruncatedCapture as exc:
            # a capture stopped mid-write: its complete records are good traffic (tshark shows
            # them too); only a file with none of them is rejected
            if not read:
                raise
            truncated = str(exc)
        self._flush()
        self._remove_stale()
        return {
            "file": self.source, "label": self.label, "macro": self.macro, "packets_read": read,
            "packets": self.rows, "flows": self.flow_samples, "skipped": dict(self.skipped),
            "notes": dict(self.notes), "shards": self.written, "flows_split_across_shards": self.split_flows,
            **({"ndpi_rule": self.ndpi_rule} if self.ndpi_rule else {}),
            **({"truncated": truncated} if truncated else {}),
            **({"unsupported_linktypes": {str(k): v for k, v in sorted(self.linktypes.items())}}
               if self.linktypes else {}),
        }

    def _add(self, batch: RecordBatch) -> None:
        parsed = parse_batch(batch)
        counts = np.bincount(parsed.reason.astype(np.int64) + 1, minlength=len(SKIP_REASONS) + 1)
        for name, c in zip(SKIP_REASONS, counts[1:].tolist(), strict=True):
            if c:
                self.skipped[name] += c
        if counts[1 + _UNSUPPORTED]:  # which link types: the one thing a user can act on
            types, n = np.unique(batch.linktype[parsed.reason == _UNSUPPORTED], return_counts=True)
            self.linktypes.update(dict(zip(types.tolist(), n.tolist(), strict=True)))
        for name in NOTE_REASONS:
            if parsed.notes.get(name):
                self.notes[name] += parsed.notes[name]
        kept = np.flatnonzero(parsed.reason < 0)
        if len(self.l3_codes) == 1 and len(kept):  # (a layout of transport headers only keeps them all)
            # an IP version the layout has no header for (IPv6 with --headers ipv4,...): its row
            # would be all absent, which is no packet (training read it as padding, repair dropped
            # its flow; tcpdump's IPv6 captures, session 24)
            fits = np.isin(parsed.l3[kept], self.l3_codes)
            if not fits.all():
                self.skipped["network_header_not_in_layout"] += int((~fits).sum())
                kept = kept[fits]
        if not len(kept):
            return
        every = len(kept) == len(batch)  # the usual case: whole arrays, no row copies
        rows = slice(None) if every else kept
        keys, src_low = canonical_keys(parsed.proto[rows], parsed.src_words[rows], parsed.sport[rows],
                                       parsed.dst_words[rows], parsed.dport[rows], parsed.kind[rows])
        ts = batch.ts_ns[rows]
        flow = self.flows.assign(keys, src_low, ts, self.packets if self.windows else None)
        take = np.ones(len(kept), dtype=bool) if self.windows else flow["position"] < self.packets
        beyond = int((~take).sum())
        if beyond:
            self.skipped["beyond_packets"] += beyond
        sel = kept[take]
        self.buffer.add({
            "flow": flow["flow"][take], "position": flow["position"][take],
            "direction": flow["direction"][take], "timestamp": flow["timestamp"][take],
            "wire_length": batch.wirelen[sel], "frame": batch.frame[sel],
            "l3": parsed.l3[sel].astype(np.int8), "l3_len": parsed.l3_len[sel].astype(np.int16),
            "l3_bytes": parsed.l3_bytes[sel], "l4": parsed.l4[sel].astype(np.int8),
            "l4_len": parsed.l4_len[sel].astype(np.int16), "l4_bytes": parsed.l4_window(sel),
        })

    def _flush(self) -> None:
        if not self.buffer.rows:
            return
        cols = self.buffer.take()
        if self.flow_labels is not None:
            keep_flow, self.ndpi_rule = self.flow_labels.keep_mask(self.path, self.label, self.flows.keys)
            keep = keep_flow[cols["flow"]]
            dropped = int((~keep).sum())
            if dropped:
                self.skipped["ndpi_filtered"] += dropped
                cols = {k: v[keep] for k, v in cols.items()}
            if not len(cols["flow"]):
                return
        window = cols["position"] // self.packets if self.windows else np.zeros_like(cols["position"])
        index = cols["position"] - window * self.packets
        order = np.lexsort((index, window, cols["flow"]))
        cols = {k: v[order] for k, v in cols.items()}
        window, index = window[order], index[order]
        sample = cols["flow"] * (1 << 24) + window
        bounds = np.flatnonzero(np.r_[True, sample[1:] != sample[:-1]])
        if self.split_flows:  # early flushes (set before the first): a sample continued from one counts once
            new = set(sample[bounds].tolist()) - self.samples_seen
            self.samples_seen |= new
            self.flow_samples += len(new)
        else:  # the only flush of a capture
            self.flow_samples += len(bounds)
        names = [f"{self.prefix}-{f:06d}" + (f"w{w:04d}" if self.windows else "")
                 for f, w in zip(cols["flow"][bounds].tolist(), window[bounds].tolist(), strict=True)]
        sample_number = np.cumsum(np.r_[True, sample[1:] != sample[:-1]]) - 1
        n = len(sample)
        # cut shards at sample boundaries close to shard_size rows
        cuts = [0]
        ends = np.r_[bounds[1:], n]  # sample end positions
        while n - cuts[-1] > self.shard_size:
            target = cuts[-1] + self.shard_size
            j = int(np.searchsorted(bounds, target, side="right")) - 1
            # the last sample start within the budget; a sample larger than a shard gets its own
            cut = int(bounds[j]) if bounds[j] > cuts[-1] else int(ends[j])
            if cut >= n:
                break
            cuts.append(cut)
        cuts.append(n)
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            part = {k: v[a:b] for k, v in cols.items()}
            first_sample = int(sample_number[a])
            one = np.zeros(b - a, dtype=np.int32)
            columns: dict[str, np.ndarray | DictionaryColumn] = {  # strings by index: no per-row objects
                "flow_id": DictionaryColumn(sample_number[a:b] - first_sample,
                                            names[first_sample:int(sample_number[b - 1]) + 1]),
                "label": DictionaryColumn(one, [self.label]),
                "macro": DictionaryColumn(one, [self.macro]),
                "packet_index": index[a:b].astype(np.int32),
                "timestamp": part["timestamp"].astype(np.int64),
                "direction": part["direction"].astype(np.int8),
                # a corrupt record can claim up to 2**32-1 bytes: saturate (as tshark does) instead
                # of wrapping to a negative int32
                "wire_length": np.minimum(part["wire_length"], np.iinfo(np.int32).max).astype(np.int32),
                "source": DictionaryColumn(one, [self.source]),
                "frame": part["frame"].astype(np.int64),
            }
            name = f"{self.prefix}-{len(self.written):04d}.parquet"
            if self.nprint_storage == "list":  # header bytes -> packed ternary rows -> file: no int8 rows
                write_ternary_shard(columns, _nprint_rows(self.layout, part, ternary=True), self.layout.width,
                                    self.output / name)
            else:
                write_shard(Packets(**plain_columns(columns), nprint=_nprint_rows(self.layout, part)),
                            self.output / name, storage=self.nprint_storage)
            self.written.append(name)
            self.rows += b - a

    def _remove_stale(self) -> None:
        for p in self.output.glob(f"{self.prefix}-*.parquet"):
            if p.name not in self.written:
                p.unlink(missing_ok=True)

    def discard(self) -> None:
        """Remove everything this capture wrote (it was rejected)."""
        self.written = []
        self._remove_stale()


def encode_file(path: str | os.PathLike, source: str, output: str | os.PathLike, *, label: str, macro: str = "",
                packets: int = 1024, windows: bool = False, shard_size: int = DEFAULT_SHARD_SIZE,
                headers: Sequence[str] = DEFAULT_HEADERS, flow_labels: FlowLabels | None = None,
                chunk_bytes: int = DEFAULT_CHUNK, max_buffer_rows: int = DEFAULT_MAX_BUFFER_ROWS,
                nprint_storage: str = "list", on_batch: Callable[[int], None] | None = None) -> dict:
    """Encode one capture; returns its summary, with ``error`` set (and no shards) if rejected.

    ``on_batch(packets)`` is called after every batch read (progress reporting)."""
    enc = _FileEncoder(Path(path), source, label, macro, Path(output), Layout(headers), packets, windows,
                       shard_size, flow_labels, max_buffer_rows, nprint_storage)
    try:
        return enc.run(chunk_bytes, on_batch)
    except CaptureError as exc:
        enc.discard()
        return {"file": source, "error": str(exc)}
    except OSError as exc:
        enc.discard()
        return {"file": source, "error": f"cannot read: {exc.strerror or exc}"}
    except Exception as exc:  # noqa: BLE001 - one odd capture must not end a run over thousands
        # a reader/parser bug, not a reason we foresaw: reject the file, keep the traceback in the log
        log.debug("%s: unexpected error", source, exc_info=True)
        enc.discard()
        message = " ".join(str(exc).split())
        return {"file": source, "error": f"unexpected {type(exc).__name__}: {message}"}


def _encode_job(kwargs: dict) -> dict:
    return encode_file(**kwargs)


def encode_paths(inputs: Sequence[str | os.PathLike] | str | os.PathLike, output: str | os.PathLike, *,
                 manifest: str | os.PathLike | None = None, flow_labels: str | os.PathLike | None = None,
                 packets: int = 1024, windows: bool = False, shard_size: int = DEFAULT_SHARD_SIZE,
                 workers: int = 1, headers: Sequence[str] = DEFAULT_HEADERS,
                 chunk_bytes: int = DEFAULT_CHUNK, progress: bool | None = None,
                 nprint_storage: str = "list", source_names: Mapping[str, str] | None = None) -> dict:
    """Encode captures (files or folders) into a dataset directory; returns ``summary.json``'s content.

    ``nprint_storage`` picks the on-disk type of the ``nprint`` column (see ``dataset.write_shard``).
    Bad captures are logged with a one-line reason, listed in ``files_rejected`` and skipped; so
    are captures read that keep no packet (counted in ``files_without_packets``). A file named
    twice (or a folder and a file in it) is encoded once (``duplicate_inputs``); copies under
    other names are reported in ``duplicate_content``. Raises ``FileNotFoundError`` when the
    inputs hold no capture at all (nothing is written then) and ``ValueError`` for bad options.

    ``source_names`` (optional): the name to record for a capture file, by its path, instead of the
    path, e.g. the ``s3://`` URI a file was downloaded from. The source names the capture in the
    dataset, the summary and messages, and seeds its shard names and flow ids: a scratch path
    would give the same input other flow ids on every run."""
    from tqdm import tqdm

    started = time.perf_counter()
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if packets < 1:
        raise ValueError(f"packets must be >= 1 (got {packets})")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1 (got {shard_size})")
    if workers < 1:
        raise ValueError(f"workers must be >= 1 (got {workers})")
    if nprint_storage not in NPRINT_STORAGES:
        raise ValueError(f"nprint_storage must be one of {NPRINT_STORAGES}")
    layout = Layout(headers)
    if not layout.headers:  # a zero-width row: nothing to encode (and a division by zero later)
        raise ValueError(f"headers must name at least one of {list(DEFAULT_HEADERS)}")
    manifest_map = load_manifest(manifest) if manifest else None
    try:
        labels = FlowLabels.load(flow_labels) if flow_labels else None
    except KeyError as exc:
        raise ValueError(f"{flow_labels}: flow labels lack column {exc}") from None
    captures = []
    barren = []  # input folders holding no capture
    not_captures: list[Path] = []  # files in the input folders whose names are no capture's
    for item in inputs:
        found = discover_inputs([item], not_captures)
        if not found and Path(item).is_dir():
            barren.append(item)
        captures += found
    if source_names:
        names = {os.path.abspath(k): v for k, v in source_names.items()}
        captures = [(path, names.get(os.path.abspath(path), source), in_class)
                    for path, source, in_class in captures]
    if not captures:
        raise FileNotFoundError(no_captures_message(inputs))
    for item in barren:
        log.warning("%s", no_captures_message([item]))
    given = {os.path.abspath(f) for f in (manifest, flow_labels) if f}
    not_captures = [f for f in not_captures if os.path.abspath(f) not in given]
    if not_captures:  # a rotated or renamed capture would else be left out without a word
        shown = ", ".join(str(f) for f in not_captures[:5])
        more = f" and {len(not_captures) - 5} more (summary.json files_not_captures)" if len(not_captures) > 5 else ""
        log.warning("%s not read: no capture name (%s): %s%s",
                    _plural(len(not_captures), "file", "files"), ", ".join(f"*{x}" for x in CAPTURE_SUFFIXES),
                    shown, more)
    captures, duplicates = dedupe_inputs(captures)
    if duplicates:
        log.info("%s already given: dropped (each file is encoded once)",
                 "1 input names a file" if duplicates == 1 else f"{duplicates} inputs name files")
    captures = unique_sources(captures)
    copies = find_copies(captures)
    for copy in copies[:10]:
        log.warning("%s: same content as %s (both encoded; drop one if it is a copy)", copy["file"], copy["same_as"])
    if len(copies) > 10:
        log.warning("... and %d more captures with the same content as another (summary.json duplicate_content)",
                    len(copies) - 10)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    origins = []
    for path, source, in_class_folder in captures:
        lab = label_for(path, manifest_map, prefer_folder=in_class_folder)
        origins.append(lab.origin)
        jobs.append({"path": str(path), "source": source, "output": str(out), "label": lab.label,
                     "macro": lab.macro, "packets": packets, "windows": windows, "shard_size": shard_size,
                     "headers": tuple(layout.headers), "flow_labels": labels, "chunk_bytes": chunk_bytes,
                     "nprint_storage": nprint_storage})
    coverage = _log_manifest_coverage(manifest, manifest_map, captures, origins) if manifest_map is not None else None
    results: list[dict] = []
    bar = tqdm(total=len(jobs), desc="encode", unit="file", disable=(not progress) if progress is not None else None)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            for result in pool.map(_encode_job, jobs):
                results.append(result)
                bar.update()
    else:
        seen = 0

        def tick(n: int) -> None:  # a long single capture still shows progress
            nonlocal seen
            seen += n
            bar.set_postfix(packets=seen, refresh=False)
            bar.refresh()

        for job in jobs:
            results.append(encode_file(**job, on_batch=tick if not bar.disable else None))
            bar.update()
    bar.close()

    rejected = []
    files = []
    truncated_files = []
    empty = 0
    for r in results:
        if "error" in r:
            log.error("%s: %s", r["file"], r["error"])
            rejected.append({"file": r["file"], "reason": r["error"]})
            continue
        files.append(r)
        if r.get("truncated"):
            log.warning("%s: %s; kept the %s before it", r["file"], r["truncated"],
                        _plural(r["packets_read"], "complete packet", "complete packets"))
            truncated_files.append({"file": r["file"], "reason": r["truncated"], "packets_read": r["packets_read"]})
        if not r["packets"]:  # read fine, yet nothing in the dataset: say which and why
            empty += 1
            log.warning("%s: 0 of %s kept (%s)", r["file"], _plural(r["packets_read"], "packet", "packets"),
                        _no_packets_reason(r))
    written = {s for r in files for s in r["shards"]}
    for stale in out.glob("*.parquet"):
        if stale.name not in written:
            stale.unlink()
    write_fields(out, layout)
    skipped: Counter[str] = Counter()
    notes: Counter[str] = Counter()
    flows: Counter[str] = Counter()
    per_label: Counter[str] = Counter()
    for r in files:
        skipped.update(r["skipped"])
        notes.update(r["notes"])
        flows[r["label"]] += r["flows"]
        per_label[r["label"]] += r["packets"]
    summary = {
        "files_read": len(files),
        "files_rejected": rejected,
        "files_truncated": truncated_files,
        "files_without_packets": empty,
        "duplicate_inputs": duplicates,
        "duplicate_content": copies,
        "files_not_captures": [str(f) for f in not_captures],
        "packets": int(sum(r["packets"] for r in files)),
        "packets_read": int(sum(r["packets_read"] for r in files)),
        "flows": dict(sorted(flows.items())),
        "packets_per_label": dict(sorted(per_label.items())),
        "skipped": dict(sorted(skipped.items())),
        "notes": dict(sorted(notes.items())),
        **({"manifest_check": coverage} if coverage is not None else {}),
        "options": {"packets": packets, "windows": windows, "shard_size": shard_size, "workers": workers,
                    "headers": list(layout.headers), "manifest": str(manifest) if manifest else None,
                    "flow_labels": str(flow_labels) if flow_labels else None},
        "width": layout.width,
        "shards": len(written),
        "files": files,
    }
    write_json(out / SUMMARY_FILE, summary)
    caveats = [text for n, text in ((empty, f"{_plural(empty, 'capture', 'captures')} kept no packets"),
                                     (len(rejected), f"{len(rejected)} rejected"),
                                     (len(truncated_files), f"{len(truncated_files)} truncated (complete "
                                                            "packets kept)"),
                                     (duplicates, f"{_plural(duplicates, 'duplicate input', 'duplicate inputs')} "
                                                  "dropped"),
                                     (len(copies), f"{len(copies)} with the same content as another"),
                                     (len(not_captures), f"{_plural(len(not_captures), 'other file', 'other files')} "
                                                         "not read (no capture name)")) if n]
    log.info("%s: %s read, %s in %s%s", out, _plural(len(files), "capture", "captures"),
             _plural(summary["packets"], "packet", "packets"), _plural(sum(flows.values()), "flow sample", "flow samples"),
             "; " + ", ".join(caveats) if caveats else "")
    summary["seconds"] = round(time.perf_counter() - started, 3)  # not written: keeps re-runs identical
    return summary
