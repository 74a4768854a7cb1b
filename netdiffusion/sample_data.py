"""Sample captures for ``make run``: real nDPI 4.2 test captures from Debian, or the shared data.

``python -m netdiffusion.sample_data --output data/sample`` builds ``<output>/manifest.csv``
(path,label,macro,source), ``pcaps/<label>/*.pcap`` and ``ndpi_flow_labels.csv``:

1. Debian's ``ndpi`` *source* package ships nDPI's test captures (``tests/pcap``) and nDPI's own
   per-flow results (``tests/result/*.out``). We fetch it with ``apt-get source --download-only``
   using a private apt state directory (a ``deb-src`` line for the system's suite; the system's apt
   configuration is not touched), then extract only the captures named in
   ``netdiffusion/sample_manifest.csv`` (our file -> class mapping) and turn the ``.out`` files into
   ``ndpi_flow_labels.csv``.
2. If that is impossible (no apt, no network), link the shared data set instead:
   ``$NETDIFFUSION_SHARED_DATA`` or ``../shared/data`` relative to the repository root.

The capture files are never committed: ``data/`` is ignored.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
MAPPING = Path(__file__).with_name("sample_manifest.csv")
NDPI_SOURCE = "nDPI 4.2 test captures (Debian source package ndpi, LGPL-3.0)"
FLOW_LABEL_COLUMNS = ("pcap", "l4", "src", "sport", "dir", "dst", "dport", "proto", "app", "category",
                      "pkts_c2s", "bytes_c2s", "pkts_s2c", "bytes_s2c", "sni")

# one flow line of ndpiReader's output, e.g.
#   1  TCP 192.168.1.117:54871 <-> 109.94.160.99:443 [proto: 91.189/TLS.Zoom]...[cat: Video/26][127 pkts/...
_FLOW_LINE = re.compile(
    r"^\t\d+\t(?P<l4>\S+) (?P<src>\[[^\]]+\]|[^\s\[]+?):(?P<sport>\d+) (?P<dir><->|->) "
    r"(?P<dst>\[[^\]]+\]|\S+?):(?P<dport>\d+) (?:\[(?!proto:)[^\]]*\])*"  # e.g. [VLAN: 100] first
    r"\[proto: (?:[^\]/:]+:)?[\d.]+/(?P<proto>[^\]]+)\].*?"  # tunnelled: [proto: GTP:87/RTP]
    r"\[(?P<pc>\d+) pkts/(?P<bc>\d+) bytes (?:<->|->) (?P<ps>\d+) pkts/(?P<bs>\d+) bytes\]"
)
_SNI = re.compile(r"\[Hostname/SNI: ([^\]]*)\]")
_CATEGORY = re.compile(r"\[cat: ([^/\]]+)/\d+\]")


def read_mapping(path: str | os.PathLike = MAPPING) -> list[dict[str, str]]:
    """Our capture file name -> (label, macro) table."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def shared_data_dir() -> Path | None:
    """``$NETDIFFUSION_SHARED_DATA`` or ``<repo>/../shared/data`` if it holds a manifest."""
    env = os.environ.get("NETDIFFUSION_SHARED_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if (path / "manifest.csv").exists() else None


def parse_ndpi_result(text: str, pcap: str) -> list[dict[str, str]]:
    """Flow rows (``FLOW_LABEL_COLUMNS``) from one ``tests/result/<pcap>.out`` file."""
    rows = []
    for line in text.splitlines():
        m = _FLOW_LINE.match(line)
        if not m:
            continue
        proto = m["proto"]
        sni, category = _SNI.search(line), _CATEGORY.search(line)
        rows.append({
            "pcap": pcap, "l4": m["l4"], "src": m["src"].strip("[]"), "sport": m["sport"], "dir": m["dir"],
            "dst": m["dst"].strip("[]"), "dport": m["dport"], "proto": proto, "app": proto.split(".")[-1],
            "category": category.group(1) if category else "", "pkts_c2s": m["pc"], "bytes_c2s": m["bc"], "pkts_s2c": m["ps"],
            "bytes_s2c": m["bs"], "sni": sni.group(1) if sni else "",
        })
    return rows


APT_ATTEMPTS = 3  # a mirror or proxy that drops one request should not fail a fresh machine's ``make run``


def download_ndpi_source(workdir: Path, timeout: float = 600, attempts: int = APT_ATTEMPTS,
                         pause: float = 5.0) -> Path:
    """``apt-get source --download-only ndpi`` with a private apt state; returns the orig tarball.

    Only the upstream tarball is needed, so a failure to fetch the Debian diff is tolerated.
    ``apt-get update`` exits 0 when a fetch fails ("W: Failed to fetch ..."), leaving no index behind:
    each step is checked by what it left (a Sources index, then the tarball) and retried up to
    ``attempts`` times; the error names the step and quotes apt's last message.
    """
    if shutil.which("apt-get") is None:
        raise RuntimeError("apt-get not found (not a Debian system)")
    suite = _debian_suite()
    lists = workdir / "lists"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    (workdir / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    sources = workdir / "sources.list"
    sources.write_text(f"deb-src {_debian_archive_uri()} {suite} main\n")
    opts = ["-o", f"Dir::Etc::SourceList={sources}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={lists}", "-o", f"Dir::Cache={workdir / 'cache'}"]
    if os.geteuid() == 0:  # the _apt sandbox user cannot write into our private directories
        opts += ["-o", "APT::Sandbox::User=root"]
    log.info("fetching the Debian ndpi source package (%s) with apt-get", suite)
    _apt_until(["update"], opts, workdir, timeout, attempts, pause,
               done=lambda: any(lists.glob("*_Sources*")), what="apt-get update (no Sources index fetched)")
    _apt_until(["source", "--download-only", "ndpi"], opts, workdir, timeout, attempts, pause,
               done=lambda: any(workdir.glob("ndpi_*.orig.tar.*")),
               what="apt-get source did not deliver the ndpi orig tarball")
    return sorted(workdir.glob("ndpi_*.orig.tar.*"))[-1]


def _apt_until(args: list[str], opts: list[str], workdir: Path, timeout: float, attempts: int, pause: float,
               done: Callable[[], bool], what: str) -> None:
    """Run ``apt-get -q OPTS ARGS`` until ``done()`` holds, at most ``attempts`` times."""
    last = ""
    for attempt in range(1, max(1, attempts) + 1):
        proc = subprocess.run(["apt-get", "-q", *opts, *args], cwd=workdir, timeout=timeout,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done():
            return
        messages = [line.strip() for line in (proc.stderr or "").splitlines() if line.strip()]
        last = messages[-1] if messages else f"exit status {proc.returncode}"
        if attempt < attempts:
            log.warning("%s, attempt %d of %d: %s; retrying in %.0f s", what, attempt, attempts, last, pause)
            time.sleep(pause * attempt)
    raise RuntimeError(f"{what} after {max(1, attempts)} attempts: {last}")


def _debian_archive_uri(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian archive this machine is configured to use (its ``deb`` line for ``main``).

    We reuse the system's own mirror rather than naming one, so the fetch goes wherever the
    machine's apt already goes (a local mirror or proxy included)."""
    candidates: list[Path] = [apt_dir / "sources.list"]
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        candidates += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":  # deb822 stanzas
            for stanza in re.split(r"\n\s*\n", text):
                types = re.search(r"^Types:\s*(.+)$", stanza, re.M)
                uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
                if types and uris and "deb" in types.group(1).split() and not uris.group(1).rstrip("/").endswith(
                        "-security"):
                    return uris.group(1)
        else:
            for line in text.splitlines():
                m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+\s+.*\bmain\b", line)
                if m and not m.group(1).rstrip("/").endswith("-security"):
                    return m.group(1)
    raise RuntimeError(f"no Debian archive configured in {apt_dir} (sources.list or sources.list.d)")


def _debian_suite() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return "bookworm"
    m = re.search(r"^VERSION_CODENAME=(\S+)", text, re.M)
    return m.group(1).strip('"') if m else "bookworm"


def extract_sample(tarball: Path, output: Path, mapping: list[dict[str, str]]) -> dict[str, int]:
    """Extract the mapped captures and their nDPI results; write manifest + flow labels."""
    wanted = {row["file"]: row for row in mapping}
    manifest, flow_rows, found = [], [], set()
    with tarfile.open(tarball) as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) < 4 or parts[-3] != "tests" or not member.isfile():
                continue
            name = parts[-1]
            if parts[-2] == "pcap" and name in wanted:
                row = wanted[name]
                target = output / "pcaps" / row["label"] / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as dst:  # type: ignore[union-attr]
                    shutil.copyfileobj(src, dst)
                manifest.append({"path": f"pcaps/{row['label']}/{name}", "label": row["label"],
                                 "macro": row["macro"], "source": NDPI_SOURCE})
                found.add(name)
            elif parts[-2] == "result" and name.endswith(".out") and name[:-4] in wanted:
                text = tar.extractfile(member).read().decode("utf-8", "replace")  # type: ignore[union-attr]
                flow_rows += parse_ndpi_result(text, name[:-4])
    missing = sorted(set(wanted) - found)
    if missing:
        log.warning("not in the ndpi source package: %s", ", ".join(missing))
    _write_csv(output / "manifest.csv", ["path", "label", "macro", "source"], sorted(manifest, key=lambda r: r["path"]))
    _write_csv(output / "ndpi_flow_labels.csv", list(FLOW_LABEL_COLUMNS), flow_rows)
    return {"captures": len(manifest), "classes": len({r["label"] for r in manifest}), "flows": len(flow_rows),
            "missing": len(missing)}


def link_shared(shared: Path, output: Path) -> dict[str, int]:
    """Use the shared data set: symlink its pcaps and copy its manifest and flow labels."""
    output.mkdir(parents=True, exist_ok=True)
    pcaps = output / "pcaps"
    if pcaps.is_symlink() or pcaps.exists():
        if pcaps.is_symlink() or pcaps.is_file():
            pcaps.unlink()
        else:
            shutil.rmtree(pcaps)
    pcaps.symlink_to((shared / "pcaps").resolve(), target_is_directory=True)
    for name in ("manifest.csv", "ndpi_flow_labels.csv"):
        if (shared / name).exists():
            shutil.copy2(shared / name, output / name)
    with open(output / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {"captures": len(rows), "classes": len({r["label"] for r in rows})}


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def prepare(output: str | os.PathLike, *, source: str = "auto", cache: str | os.PathLike | None = None) -> dict:
    """Fill ``output`` with sample data; ``source`` is ``auto`` (Debian, then shared), ``debian`` or
    ``shared``. Returns a summary naming the source used."""
    output = Path(output)
    if (output / "manifest.csv").exists() and source == "auto":
        with open(output / "manifest.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        if rows and all((output / r["path"]).exists() for r in rows):
            return {"source": "existing", "output": str(output), "captures": len(rows),
                    "classes": len({r["label"] for r in rows})}
    errors = []
    if source in ("auto", "debian"):
        cache_dir = Path(cache) if cache else Path(tempfile.mkdtemp(prefix="ndpi-src-"))
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tarballs = sorted(cache_dir.glob("ndpi_*.orig.tar.*"))
            tarball = tarballs[-1] if tarballs else download_ndpi_source(cache_dir)
            if (output / "pcaps").is_symlink():
                (output / "pcaps").unlink()
            summary = extract_sample(tarball, output, read_mapping())
            return {"source": "debian", "output": str(output), **summary}
        except (OSError, RuntimeError, subprocess.SubprocessError, tarfile.TarError) as exc:
            errors.append(f"Debian ndpi source: {exc}")
            if source == "debian":
                raise RuntimeError(errors[-1]) from exc
        finally:  # a download without a cache folder is not kept, also when it failed half-way
            if not cache:
                shutil.rmtree(cache_dir, ignore_errors=True)
    shared = shared_data_dir()
    if shared is None:
        raise RuntimeError("no sample data: " + "; ".join(errors + ["shared data not found (set "
                                                                    "NETDIFFUSION_SHARED_DATA)"]))
    return {"source": "shared", "shared": str(shared), "output": str(output), **link_shared(shared, output),
            "reason": "; ".join(errors)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netdiffusion.sample_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="data/sample")
    parser.add_argument("--source", choices=["auto", "debian", "shared"], default="auto")
    parser.add_argument("--cache", default=None, help="keep the downloaded source tarball here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = prepare(args.output, source=args.source, cache=args.cache)
    except RuntimeError as exc:
        print(f"sample-data: {exc}", file=sys.stderr)
        return 1
    where = {"debian": f"the Debian ndpi source package ({NDPI_SOURCE})",
             "shared": f"the shared data at {summary.get('shared')}",
             "existing": "an earlier download (delete the folder to fetch again)"}[summary["source"]]
    print(f"sample-data: {summary['captures']} captures, {summary['classes']} classes in {summary['output']} "
          f"from {where}")
    if summary.get("reason"):
        print(f"sample-data: (Debian download not possible: {summary['reason']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
