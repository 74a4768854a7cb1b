"""Service settings: one dataclass, filled from CLI flags and ``NETDIFFUSION_*`` env variables.

The Helm chart sets the env variables (from a ConfigMap and secrets), so every setting the chart
exposes has an env name here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

ENV_PREFIX = "NETDIFFUSION_SERVE_"


@dataclass
class ServeConfig:
    """Everything the service needs; defaults suit a laptop, the chart overrides them."""

    state_dir: Path = Path("serve-state")
    model: str | None = None  # local model dir, or a registry URI such as models:/netdiffusion@champion
    registry_model: str = "netdiffusion"  # registered model name listed by /v1/models
    workers: int = 2  # concurrent local jobs
    job_threads: int = 1  # torch threads per job process
    job_timeout_s: float = 3600.0
    # request limits (per request); larger values are rejected with 422
    max_count: int = 10_000  # flows per class
    max_classes: int = 64
    max_packets: int = 1024
    # jobs with more flows than this are submitted as pipeline runs (or rejected without KFP)
    local_max_flows: int = 2_000
    # per-token quotas over a sliding window; exceeding them gives 429
    quota_window_s: float = 3600.0
    quota_jobs: int = 100
    quota_flows: int = 100_000
    # optional integrations
    kfp_host: str | None = None
    pipeline_poll_s: float = 30.0  # how often submitted jobs' KFP runs are checked
    kfp_timeout_s: float = 30.0  # bound on each KFP API call (connect: at most 10 s of it)
    s3_uri: str | None = None  # s3://bucket/prefix for job results
    # stored results (archive, files, log) of jobs that ended longer ago are removed (0: keep all)
    result_retention_s: float = 7 * 86400.0
    # registry models downloaded into the state volume: the most recently used ones kept (0: all)
    model_cache_versions: int = 3  # models.DEFAULT_KEEP_VERSIONS
    tokens: list[str] = field(default_factory=list, repr=False)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> ServeConfig:
        """Defaults ← ``NETDIFFUSION_SERVE_<FIELD>`` env variables ← explicit overrides (CLI)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            if f.name == "tokens":
                continue
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _coerce(f.type, raw, f.name)
        if "kfp_host" not in values and env.get("KFP_HOST"):
            values["kfp_host"] = env["KFP_HOST"]
        values["tokens"] = load_tokens(env)
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)  # type: ignore[arg-type]
        config.state_dir = Path(config.state_dir)
        return config


def _coerce(type_name: object, raw: str, name: str) -> object:
    text = str(type_name)
    try:
        if text.startswith("int"):
            return int(raw)
        if text.startswith("float"):
            return float(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r}: not a number") from exc
    if text.startswith("Path"):
        return Path(raw)
    return raw


def load_tokens(environ: dict[str, str] | os._Environ[str]) -> list[str]:
    """API tokens from ``NETDIFFUSION_API_TOKENS`` (comma-separated) and/or the file named by
    ``NETDIFFUSION_API_TOKENS_FILE`` (one per line or comma-separated; ``#`` comments), which is
    how a Kubernetes secret is mounted."""
    tokens: list[str] = []
    inline = environ.get("NETDIFFUSION_API_TOKENS", "")
    tokens += [t.strip() for t in inline.split(",") if t.strip()]
    path = environ.get("NETDIFFUSION_API_TOKENS_FILE")
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ValueError(f"NETDIFFUSION_API_TOKENS_FILE={path}: cannot read ({exc.strerror})") from exc
        for line in text.splitlines():
            line = line.split("#", 1)[0]
            tokens += [t.strip() for t in line.split(",") if t.strip()]
    return tokens
