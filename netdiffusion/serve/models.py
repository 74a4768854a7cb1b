"""Which model the service generates with, and what /v1/classes and /v1/models report.

Two sources: a local model directory (``--model DIR``: the service lists it as model ``local``,
version ``local``, alias ``champion``), or the MLflow model registry (``--model
models:/NAME@ALIAS``; ``MLFLOW_TRACKING_URI`` points at the tracking server). Registry look-ups
are cached briefly because every job and listing needs them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOCAL = "local"
_VERSION = re.compile(r"^(?:v)?(\d+)$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_PINNED = re.compile(r"^models:/[^/@]+/\d+$")  # a registry version: never changes, so its copy is kept
DEFAULT_KEEP_VERSIONS = 3  # downloaded models kept (NETDIFFUSION_SERVE_MODEL_CACHE_VERSIONS)


class ModelNotFound(LookupError):
    """The requested model version or alias does not exist (a 4xx, not a 5xx)."""


class ModelUnavailable(RuntimeError):
    """The registry or model storage cannot be reached right now (503: retry later)."""


class ModelReferenceInvalid(ValueError):
    """The request's model reference is malformed (422: the client must change it)."""


# MLflow error codes that say "the reference is wrong", not "the registry is down"
_NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "ENDPOINT_NOT_FOUND")
_INVALID_CODES = ("INVALID_PARAMETER_VALUE", "BAD_REQUEST", "INVALID_STATE")


def _registry_error(reference: str, exc: Exception) -> Exception:
    """Map a registry failure to 'no such model' (404), 'malformed reference' (422) or 'registry
    unavailable' (503, only for failures that a retry could fix)."""
    if isinstance(exc, ModelNotFound | ModelReferenceInvalid | ModelUnavailable):
        return exc
    text = f"{type(exc).__name__}: {exc}"
    code = str(getattr(exc, "error_code", "") or "")
    first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    if code in _NOT_FOUND_CODES or any(k in text for k in (
            "RESOURCE_DOES_NOT_EXIST", "not found", "NotFound", "No such", "does not exist",
            "not a model directory", "No versions of model")):
        return ModelNotFound(f"model {reference} not found in the registry: {first}")
    if code in _INVALID_CODES or "INVALID_PARAMETER_VALUE" in text:
        return ModelReferenceInvalid(f"model {reference}: {first}")
    if type(exc).__name__ == "ConfigError":  # a missing/incorrect tracking setting: say which
        return ModelUnavailable(f"model registry not configured for {reference}: {first}")
    return ModelUnavailable(f"model registry unavailable for {reference}: {text[:300]}")


def read_model_info(model_dir: str | Path) -> dict[str, Any]:
    """Classes and packets per flow from a model dir's ``model.json`` (tolerant of key names)."""
    path = Path(model_dir) / "model.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelNotFound(f"{path}: not a model directory ({exc})") from exc
    raw = meta.get("classes") or [p.get("class") or p.get("label") for p in meta.get("prompts", [])]
    classes = [c if isinstance(c, str) else (c.get("name") or c.get("label")) for c in raw]
    packets = (meta.get("packets_per_flow") or meta.get("packets")
               or (meta.get("config") or {}).get("packets") or (meta.get("config") or {}).get("packets_per_flow"))
    return {"classes": [c for c in classes if c], "packets": int(packets) if packets else None,
            "backend": meta.get("backend")}


def is_registry_uri(model: str | None) -> bool:
    return bool(model) and str(model).startswith("models:/")


class ModelSource:
    """Resolves model references and lists models, for a local dir or the MLflow registry."""

    def __init__(self, model: str | None, cache_dir: Path, cache_ttl_s: float = 30.0,
                 keep_versions: int | None = None) -> None:
        self.model = model
        self.cache_dir = cache_dir
        self.cache_ttl_s = cache_ttl_s
        if keep_versions is None:  # a job process: what the service was configured with
            keep_versions = int(os.environ.get("NETDIFFUSION_SERVE_MODEL_CACHE_VERSIONS") or DEFAULT_KEEP_VERSIONS)
        self.keep_versions = keep_versions  # downloaded models kept on disk, most recently used first (0: all)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Any]] = {}

    @property
    def configured(self) -> bool:
        return bool(self.model)

    # -- references -------------------------------------------------------------------------
    def reference(self, requested: str | None) -> str:
        """Turn a request's optional model field into a concrete reference (path or models:/ URI)."""
        if not self.model:
            raise ModelNotFound("no model configured for this service (start it with --model)")
        if not is_registry_uri(self.model):
            if requested not in (None, "", LOCAL, "champion"):
                # a malformed reference is the client's error (422) here too, as with a registry model
                if requested.startswith("models:/"):
                    _checked_uri(requested, requested[len("models:/"):].split("@", 1)[0].split("/", 1)[0])
                elif not (_VERSION.match(requested) or _ALIAS.match(requested)):
                    raise ModelReferenceInvalid(f"model {requested!r}: expected 'local', a version number, an "
                                                "alias or models:/NAME@ALIAS")
                raise ModelNotFound(f"model {requested!r} not found: this service serves only the local "
                                    f"model (use 'local' or leave it out)")
            return str(self.model)
        name = self.model[len("models:/"):].split("@", 1)[0].split("/", 1)[0]
        if requested in (None, ""):
            return self.model
        if requested.startswith("models:/"):
            return _checked_uri(requested, name)
        version = _VERSION.match(requested)
        if version:
            return f"models:/{name}/{version.group(1)}"
        if _ALIAS.match(requested):
            return f"models:/{name}@{requested}"
        raise ModelReferenceInvalid(f"model {requested!r}: expected a version number, an alias or "
                                    f"models:/{name}@ALIAS")

    @contextmanager
    def use(self, reference: str) -> Iterator[Path]:
        """:meth:`local_dir` of ``reference``, kept while the block runs: a shared ``flock`` on the
        entry's ``.use`` file, which eviction (:meth:`_evict`) will not take from a user."""
        if not is_registry_uri(reference):
            yield Path(reference)
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        reference = self._pinned(reference)
        fd = _lock_file(self.cache_dir / f"{self._entry(reference)}.use")
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield self._fetch(reference)
        finally:
            os.close(fd)

    @staticmethod
    def _entry(reference: str) -> str:
        return hashlib.sha256(reference.encode()).hexdigest()[:16]

    @staticmethod
    def _pinned(reference: str) -> str:
        """An alias resolved to the version it names now (one registry call), else ``reference``."""
        from netdiffusion.tracking.model import pinned_version_uri

        try:
            return pinned_version_uri(reference) or reference
        except Exception:  # noqa: BLE001 - unresolvable here: the download says why (404 / 503)
            return reference

    def _evict(self, keep: str) -> list[str]:
        """Remove downloaded models beyond the ``keep_versions`` most recently used ones, except
        ``keep`` and any a job holds (:meth:`use`); returns the entries removed.

        Why: each registry version is downloaded once and kept (versions never change); with a
        champion alias that a scheduled refresh moves every week, the service's volume grew by a
        model (GBs for SD weights) per refresh."""
        if self.keep_versions <= 0 or not self.cache_dir.is_dir():
            return []

        def last_used(name: str) -> float:
            times = []
            for suffix in (".fetched", ".used"):
                try:
                    times.append((self.cache_dir / f"{name}{suffix}").stat().st_mtime)
                except OSError:  # not there (never used, or another process removed it meanwhile)
                    pass
            return max(times, default=0.0)

        # ``keep`` was used just now, whatever its file times say (they tick in jiffies): it takes
        # one of the places, the others go by their times
        others = [m.name[: -len(".fetched")] for m in self.cache_dir.glob("*.fetched") if m.name != f"{keep}.fetched"]
        removed = []
        for name in sorted(others, key=last_used, reverse=True)[self.keep_versions - 1:]:
            with _exclusive(self.cache_dir / f"{name}.lock"):  # not while it is being fetched
                fd = _lock_file(self.cache_dir / f"{name}.use")
                try:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a job uses it: next time
                    (self.cache_dir / f"{name}.fetched").unlink(missing_ok=True)  # first: no reader trusts it
                    shutil.rmtree(self.cache_dir / name, ignore_errors=True)
                    (self.cache_dir / f"{name}.used").unlink(missing_ok=True)
                    removed.append(name)
                finally:
                    os.close(fd)
        if removed:
            log.info("model cache: removed %d least recently used model(s) (keeping %d)", len(removed),
                     self.keep_versions)
        return removed

    def local_dir(self, reference: str) -> Path:
        """A directory holding the model (downloads registry models through netdiffusion.tracking).

        An alias is resolved to the version it names now (one registry call) and each version is
        downloaded once and kept: versions never change (before, every job downloaded its model
        again, a few GB per job for SD weights). References that are not versions are cached per
        reference and refreshed on each fetch. Many threads and job processes fetch concurrently,
        so a fetch downloads into a temp dir and renames it into place under a lock (thread lock +
        ``flock``); a caller that waited while another one fetched uses that fresh copy instead of
        downloading again."""
        if not is_registry_uri(reference):
            return Path(reference)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        return self._fetch(self._pinned(reference))

    def _fetch(self, reference: str) -> Path:
        """The cached copy of ``reference`` (see :meth:`_cached_or_downloaded`), marked used now;
        then the cache is trimmed (:meth:`_evict`)."""
        found = self._cached_or_downloaded(reference)
        entry = self._entry(reference)
        (self.cache_dir / f"{entry}.used").touch()
        self._evict(keep=entry)
        return found

    def _cached_or_downloaded(self, reference: str) -> Path:
        """A pinned version's kept copy, or a fresh download (other references are refreshed per
        fetch), under the entry's lock."""
        from netdiffusion import tracking  # lazy: mlflow is heavy

        pinned = bool(_PINNED.match(reference))
        dst = self.cache_dir / self._entry(reference)
        marker = self.cache_dir / f"{dst.name}.fetched"
        asked = time.time()
        with _exclusive(self.cache_dir / f"{dst.name}.lock"):
            if marker.exists() and (pinned or marker.stat().st_mtime >= asked) and dst.exists():
                found = dst / marker.read_text().strip()
                if (found / "model.json").exists():
                    return found
            tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}-", suffix=".tmp", dir=self.cache_dir))
            try:
                relative = Path(tracking.load_model_dir(reference, tmp)).relative_to(tmp)
                old = None
                if dst.exists():
                    old = dst.rename(self.cache_dir / f".{dst.name}-{uuid.uuid4().hex[:8]}.old")
                os.replace(tmp, dst)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            marker.write_text(relative.as_posix())
            return dst / relative

    def info(self, requested: str | None = None) -> dict[str, Any]:
        """Classes and packets per flow of the model a request would use (cached)."""
        reference = self.reference(requested)
        def load() -> dict[str, Any]:
            if not is_registry_uri(reference):
                return read_model_info(reference)
            try:
                with self.use(reference) as model_dir:  # not removed by another job's fetch meanwhile
                    return read_model_info(model_dir)
            except Exception as exc:  # noqa: BLE001 - classified into 404 vs 503 for the API
                raise _registry_error(reference, exc) from exc

        # long TTL: for registry models this downloads the model; readiness probes call it often
        return self._cached(f"info:{reference}", load, ttl_s=max(self.cache_ttl_s, 300.0))

    # -- listing ----------------------------------------------------------------------------
    def list_models(self) -> list[dict[str, Any]]:
        if not self.model:
            return []
        if not is_registry_uri(self.model):
            info = read_model_info(self.model)
            metrics = _local_metrics(Path(self.model))
            return [{"name": LOCAL, "source": "local", "aliases": {"champion": LOCAL},
                     "versions": [{"version": LOCAL, "aliases": ["champion"], "classes": info["classes"],
                                   "packets_per_flow": info["packets"], "backend": info["backend"],
                                   "metrics": metrics}]}]
        try:
            return self._cached("models", self._registry_models)
        except Exception as exc:  # noqa: BLE001 - classified for the API
            raise _registry_error(self.model, exc) from exc

    def _registry_models(self) -> list[dict[str, Any]]:
        from mlflow.tracking import MlflowClient  # lazy: mlflow is heavy

        name = self.model[len("models:/"):].split("@", 1)[0].split("/", 1)[0]
        client = MlflowClient()
        registered = client.get_registered_model(name)
        aliases = dict(getattr(registered, "aliases", {}) or {})
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        versions = []
        for mv in client.search_model_versions(f"name='{name}'"):
            metrics: dict[str, float] = {}
            if mv.run_id:
                try:
                    metrics = dict(client.get_run(mv.run_id).data.metrics)
                except Exception as exc:  # noqa: BLE001 - a missing run must not hide the version
                    log.warning("model %s version %s: run %s unreadable: %s", name, mv.version, mv.run_id, exc)
            versions.append({"version": str(mv.version), "aliases": sorted(by_version.get(str(mv.version), [])),
                             "stage": getattr(mv, "current_stage", None), "status": mv.status,
                             "created": mv.creation_timestamp, "metrics": metrics})
        versions.sort(key=lambda v: int(v["version"]), reverse=True)
        return [{"name": name, "source": "mlflow", "aliases": aliases, "versions": versions}]

    def _cached(self, key: str, compute: Any, ttl_s: float | None = None) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit and now - hit[0] < (ttl_s if ttl_s is not None else self.cache_ttl_s):
                return hit[1]
        value = compute()
        with self._lock:
            self._cache[key] = (now, value)
        return value


def _checked_uri(requested: str, name: str) -> str:
    """A client's ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``, checked before MLflow sees it."""
    rest = requested[len("models:/"):]
    if "@" in rest:
        ref_name, alias = rest.split("@", 1)
        if ref_name == name and not _ALIAS.match(alias):
            raise ModelReferenceInvalid(f"model {requested!r}: alias must be letters, digits, _ or - "
                                        "(starting with a letter)")
    elif "/" in rest:
        ref_name, version = rest.split("/", 1)
        if ref_name == name and not version.isdigit():
            raise ModelReferenceInvalid(f"model {requested!r}: expected models:/{name}/VERSION with a version "
                                        f"number, or models:/{name}@ALIAS (stages are not supported)")
    else:
        ref_name = rest
        if ref_name == name:
            raise ModelReferenceInvalid(f"model {requested!r}: expected models:/{name}@ALIAS or "
                                        f"models:/{name}/VERSION")
    if ref_name != name:
        raise ModelNotFound(f"model {requested!r} not found: this service serves {name!r}")
    return requested


_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _lock_file(path: Path) -> int:
    """A descriptor of ``path`` (created if need be) for ``flock``; the caller closes it."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold ``path`` exclusively: a thread lock within this process, ``flock`` across processes."""
    with _thread_locks_guard:
        lock = _thread_locks.setdefault(str(path), threading.Lock())
    with lock:
        fd = _lock_file(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _local_metrics(model_dir: Path) -> dict[str, float]:
    """Evaluation numbers stored next to a local model (``evaluation.json``/``metrics.json``), if any."""
    for name in ("metrics.json", "evaluation.json", "eval.json"):
        path = model_dir / name
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except ValueError:
                continue
            flat = data.get("summary", data) if isinstance(data, dict) else {}
            return {k: float(v) for k, v in flat.items() if isinstance(v, int | float)}
    return {}
