"""Where runs, models and artifacts go: settings from env / a config file, checked before any work.

A refresh run takes minutes to hours; finding out at the end that the bucket name was mistyped
wastes all of it. ``TrackingSettings.check()`` therefore talks to the real tracking server and the
real S3 endpoint up front and raises ``ConfigError`` whose message starts with the setting to fix.

Precedence (lowest first): built-in defaults < config file (YAML/JSON, keys = field names) <
environment variables < explicit keyword arguments.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "netdiffusion"
DEFAULT_MODEL_NAME = "netdiffusion"
DEFAULT_REGION = "us-east-1"

# field -> environment variables, first one set wins (the first is the name used in error messages)
ENV_VARS: dict[str, tuple[str, ...]] = {
    "tracking_uri": ("MLFLOW_TRACKING_URI",),
    "registry_uri": ("MLFLOW_REGISTRY_URI",),
    "experiment": ("MLFLOW_EXPERIMENT_NAME",),
    "model_name": ("NETDIFFUSION_MODEL_NAME",),
    "s3_endpoint": ("NETDIFFUSION_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"),
    "bucket": ("NETDIFFUSION_S3_BUCKET",),
    "prefix": ("NETDIFFUSION_S3_PREFIX",),
    "access_key": ("AWS_ACCESS_KEY_ID",),
    "secret_key": ("AWS_SECRET_ACCESS_KEY",),
    "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
}


class ConfigError(ValueError):
    """A setting is wrong; ``setting`` names it (env var name) so the message says what to fix."""

    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(f"{setting}: {reason}")
        self.setting = setting
        self.reason = reason


@dataclass
class TrackingSettings:
    """MLflow + S3 settings. Empty S3 fields mean "no S3": artifacts stay beside the tracking store."""

    tracking_uri: str = ""
    registry_uri: str = ""
    experiment: str = DEFAULT_EXPERIMENT
    model_name: str = DEFAULT_MODEL_NAME
    s3_endpoint: str = ""
    bucket: str = ""
    prefix: str = "netdiffusion"
    access_key: str = ""
    secret_key: str = field(default="", repr=False)
    region: str = DEFAULT_REGION
    out: str = "out"

    # ----------------------------------------------------------------------------------- loading
    @classmethod
    def load(cls, config: str | os.PathLike | None = None, *, out: str | os.PathLike | None = None,
             env: Mapping[str, str] | None = None, **overrides: Any) -> TrackingSettings:
        """Defaults < ``config`` file < environment < ``overrides`` (``None`` overrides are ignored)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        if config:
            values.update(_read_config(Path(config)))
        for name, variables in ENV_VARS.items():
            for var in variables:
                if env.get(var):
                    values[name] = env[var]
                    break
        if out is not None:
            values["out"] = str(out)
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(str(config or "settings"), f"unknown setting(s) {', '.join(unknown)}")
        settings = cls(**{k: str(v) for k, v in values.items()})
        if not settings.tracking_uri:
            settings.tracking_uri = local_tracking_uri(settings.out)
        return settings

    # ------------------------------------------------------------------------------- properties
    @property
    def uses_s3(self) -> bool:
        return bool(self.bucket or self.s3_endpoint)

    @property
    def is_remote_tracking(self) -> bool:
        return urllib.parse.urlparse(self.tracking_uri).scheme in ("http", "https")

    @property
    def artifact_root(self) -> str:
        """Where a *new* experiment stores artifacts when the tracking store is local (sqlite/file).

        A remote MLflow server decides itself (``--artifacts-destination``), so this is only used for
        local tracking: ``s3://bucket/prefix/mlartifacts`` with S3, else ``<out>/mlartifacts``.
        """
        if self.bucket:
            return f"s3://{self.bucket}/{self.prefix.strip('/') + '/' if self.prefix.strip('/') else ''}mlartifacts"
        return (Path(self.out).resolve() / "mlartifacts").as_uri()

    def s3_uri(self, *parts: str) -> str:
        """``s3://bucket/prefix/<parts>`` for data this project writes itself (datasets, outputs)."""
        if not self.bucket:
            raise ConfigError("NETDIFFUSION_S3_BUCKET", "not set, but an S3 location was requested")
        keys = [p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/")]
        return "s3://" + "/".join([self.bucket, *keys])

    def apply_env(self) -> None:
        """Export the settings for libraries that only read env (MLflow's S3 artifact repo, boto3)."""
        if self.s3_endpoint:
            os.environ["MLFLOW_S3_ENDPOINT_URL"] = self.s3_endpoint
        if self.access_key:
            os.environ["AWS_ACCESS_KEY_ID"] = self.access_key
        if self.secret_key:
            os.environ["AWS_SECRET_ACCESS_KEY"] = self.secret_key
        if self.region:
            os.environ.setdefault("AWS_DEFAULT_REGION", self.region)

    def redacted(self) -> dict[str, str]:
        """The settings as a dict safe to log (no secret)."""
        data = dataclasses.asdict(self)
        data["secret_key"] = "***" if self.secret_key else ""
        return data

    # ----------------------------------------------------------------------------------- checks
    def require_store(self) -> None:
        """For read-only use (registry look-ups, promotion): the tracking store must exist already.

        A sqlite URI naming a missing file would otherwise make MLflow create an empty store, and
        the caller would report "model not found" instead of the setting that is missing."""
        require_store(self.tracking_uri, defaulted=self.tracking_uri == local_tracking_uri(self.out))

    def check(self, *, timeout: float = 5.0) -> None:
        """Fail early, naming the setting, if tracking or S3 is unusable. Makes real requests."""
        self._check_tracking(timeout)
        if self.uses_s3:
            self._check_s3(timeout)

    def _check_tracking(self, timeout: float) -> None:
        parsed = urllib.parse.urlparse(self.tracking_uri)
        if parsed.scheme in ("http", "https"):
            url = self.tracking_uri.rstrip("/") + "/health"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (configured URL)
                    if response.status != 200:
                        raise ConfigError("MLFLOW_TRACKING_URI", f"{url} answered HTTP {response.status}")
            except urllib.error.HTTPError as exc:
                raise ConfigError("MLFLOW_TRACKING_URI", f"{url} answered HTTP {exc.code}") from exc
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise ConfigError("MLFLOW_TRACKING_URI", f"cannot reach MLflow server at {self.tracking_uri} "
                                  f"({reason})") from exc
        elif parsed.scheme == "sqlite":
            # sqlite:////abs/path.db -> "//abs/path.db"; sqlite:///rel/path.db -> "/rel/path.db"
            db = Path(parsed.path[1:])
            if str(db) == ":memory:":
                return
            try:
                db.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError("MLFLOW_TRACKING_URI", f"cannot create {db.parent}: {exc}") from exc
        elif parsed.scheme in ("", "file"):
            pass
        elif parsed.scheme not in ("databricks", "postgresql", "mysql", "mssql"):
            raise ConfigError("MLFLOW_TRACKING_URI", f"unsupported scheme {parsed.scheme!r} in {self.tracking_uri}")

    def _check_s3(self, timeout: float) -> None:
        import botocore.exceptions

        from netdiffusion.tracking.storage import s3_client

        if not self.bucket:
            raise ConfigError("NETDIFFUSION_S3_BUCKET", f"not set (S3 endpoint {self.s3_endpoint} is configured)")
        if self.s3_endpoint and urllib.parse.urlparse(self.s3_endpoint).scheme not in ("http", "https"):
            raise ConfigError("NETDIFFUSION_S3_ENDPOINT", f"{self.s3_endpoint!r} is not an http(s) URL")
        if bool(self.access_key) != bool(self.secret_key):
            missing = "AWS_SECRET_ACCESS_KEY" if self.access_key else "AWS_ACCESS_KEY_ID"
            raise ConfigError(missing, "not set (the other half of the S3 credentials is)")
        where = self.s3_endpoint or "AWS S3"
        client = s3_client(self, timeout=timeout)
        try:
            client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
        except botocore.exceptions.EndpointConnectionError as exc:
            raise ConfigError("NETDIFFUSION_S3_ENDPOINT", f"cannot connect to {where} ({exc})") from exc
        except (botocore.exceptions.ConnectTimeoutError, botocore.exceptions.ReadTimeoutError) as exc:
            raise ConfigError("NETDIFFUSION_S3_ENDPOINT", f"{where} timed out ({exc})") from exc
        except botocore.exceptions.NoCredentialsError as exc:
            raise ConfigError("AWS_ACCESS_KEY_ID", f"no S3 credentials found for {where}") from exc
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchBucket", "404") or status == 404:
                raise ConfigError("NETDIFFUSION_S3_BUCKET",
                                  f"bucket {self.bucket!r} does not exist at {where}") from exc
            if code in ("InvalidAccessKeyId",):
                raise ConfigError("AWS_ACCESS_KEY_ID", f"access key rejected by {where} ({code})") from exc
            if code in ("SignatureDoesNotMatch", "InvalidSignature"):
                raise ConfigError("AWS_SECRET_ACCESS_KEY",
                                  f"secret key rejected by {where} ({code})") from exc
            if code in ("AccessDenied", "403") or status == 403:
                raise ConfigError("AWS_ACCESS_KEY_ID",
                                  f"credentials have no access to bucket {self.bucket!r} at {where} ({code})") from exc
            raise ConfigError("NETDIFFUSION_S3_ENDPOINT", f"{where} answered {code or status}: {exc}") from exc
        log.info("S3 ok: s3://%s at %s", self.bucket, where)


def require_store(tracking_uri: str, *, defaulted: bool = False) -> None:
    """Raise ``ConfigError`` (naming MLFLOW_TRACKING_URI) if ``tracking_uri`` is a sqlite store that
    does not exist; ``defaulted``: the URI is the built-in ``<out>/mlflow.db``, nothing was set."""
    parsed = urllib.parse.urlparse(tracking_uri)
    if parsed.scheme != "sqlite":
        return
    db = Path(parsed.path[1:])
    if str(db) in (":memory:", "") or db.exists():
        return
    if defaulted:
        raise ConfigError("MLFLOW_TRACKING_URI", f"not set (nor --tracking-uri), and no tracking store at {db}; "
                                                 "models:/ references and promotion need the MLflow store that "
                                                 "holds the model registry")
    raise ConfigError("MLFLOW_TRACKING_URI", f"no tracking store at {db} ({tracking_uri})")


def local_tracking_uri(out: str | os.PathLike) -> str:
    """The default tracking store: ``sqlite:///<out>/mlflow.db`` (absolute path)."""
    return f"sqlite:///{Path(out).resolve() / 'mlflow.db'}"


def ui_hint(settings: TrackingSettings | None = None) -> str:
    """One line telling the user how to look at the results in the MLflow UI."""
    settings = settings or TrackingSettings.load()
    if settings.is_remote_tracking:
        return f"MLflow UI: open {settings.tracking_uri} (experiment {settings.experiment!r})"
    # the venv's mlflow when it is not on PATH (make run never activates the venv)
    venv_mlflow = Path(sys.executable).parent / "mlflow"
    exe = "mlflow" if shutil.which("mlflow") or not venv_mlflow.exists() else os.path.relpath(venv_mlflow)
    cmd = f"{exe} ui --backend-store-uri {settings.tracking_uri}"
    return f"MLflow UI: run `{cmd}` and open http://127.0.0.1:5000"


def _read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(str(path), "config file not found")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 (any parse error is a config error)
        raise ConfigError(str(path), f"cannot parse: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(str(path), "must hold a mapping of setting -> value")
    data = data.get("tracking", data)
    return {str(k): v for k, v in data.items()}
