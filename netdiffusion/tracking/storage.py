"""Move directories between local disk and S3 (AWS or any S3-compatible server such as SeaweedFS).

Stages read and write local directories; the pipelines hand them ``s3://`` URIs. These helpers are
the only place that maps one onto the other, so credentials and endpoint come from one
``TrackingSettings`` and every stage behaves the same against AWS and a self-hosted server.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netdiffusion.tracking.settings import TrackingSettings

log = logging.getLogger(__name__)

_HASH_CHUNK = 1 << 20


def is_s3_uri(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    if not is_s3_uri(uri):
        raise ValueError(f"{uri}: not an s3:// URI")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"{uri}: no bucket in S3 URI")
    return bucket, key.strip("/")


def join_uri(base: str | os.PathLike, *parts: str) -> str:
    """Join path parts onto a local path or an ``s3://`` URI."""
    if is_s3_uri(base):
        return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts if p)])
    return str(Path(base, *parts))


def s3_client(settings: TrackingSettings | None = None, *, timeout: float = 30.0) -> Any:
    """A boto3 S3 client for the configured endpoint/credentials (path-style addressing for
    self-hosted servers, few retries so a wrong endpoint fails fast)."""
    import boto3
    from botocore.config import Config

    from netdiffusion.tracking.settings import TrackingSettings

    settings = settings or TrackingSettings.load()
    config = Config(connect_timeout=timeout, read_timeout=max(timeout, 30.0),
                    retries={"max_attempts": 2, "mode": "standard"},
                    s3={"addressing_style": "path"} if settings.s3_endpoint else None)
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint or None,
        aws_access_key_id=settings.access_key or None,
        aws_secret_access_key=settings.secret_key or None,
        region_name=settings.region or None,
        config=config,
    )


def pyarrow_filesystem(settings: TrackingSettings | None = None) -> Any:
    """A ``pyarrow.fs.S3FileSystem`` for reading Parquet datasets straight from S3."""
    from pyarrow import fs

    from netdiffusion.tracking.settings import TrackingSettings

    settings = settings or TrackingSettings.load()
    kwargs: dict[str, Any] = {"region": settings.region or None}
    if settings.s3_endpoint:
        scheme, _, host = settings.s3_endpoint.partition("://")
        kwargs.update(endpoint_override=host, scheme=scheme)
    if settings.access_key:
        kwargs.update(access_key=settings.access_key, secret_key=settings.secret_key)
    return fs.S3FileSystem(**kwargs)


def iter_objects(uri: str, settings: TrackingSettings | None = None, client: Any = None) -> Iterator[dict]:
    """Every object under an ``s3://`` prefix (``Key``, ``Size``, ``ETag``...), paginated."""
    bucket, prefix = split_s3_uri(uri)
    client = client or s3_client(settings)
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
        yield from page.get("Contents", [])


def list_uri(uri: str | os.PathLike, settings: TrackingSettings | None = None) -> list[str]:
    """Relative paths of the files under a local directory or an ``s3://`` prefix, sorted."""
    if is_s3_uri(uri):
        _, prefix = split_s3_uri(str(uri))
        cut = len(prefix) + 1 if prefix else 0
        return sorted(obj["Key"][cut:] for obj in iter_objects(str(uri), settings))
    root = Path(uri)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def upload_dir(local: str | os.PathLike, uri: str, settings: TrackingSettings | None = None) -> int:
    """Upload every file under ``local`` to ``uri`` (keeps relative paths); returns the file count."""
    from tqdm import tqdm

    local = Path(local)
    if not local.is_dir():
        raise FileNotFoundError(f"{local}: not a directory")
    bucket, prefix = split_s3_uri(uri)
    client = s3_client(settings)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    for path in tqdm(files, desc=f"upload {local.name}", unit="file", disable=len(files) < 20):
        key = "/".join(x for x in (prefix, path.relative_to(local).as_posix()) if x)
        client.upload_file(str(path), bucket, key)
    log.info("uploaded %d files from %s to %s", len(files), local, uri)
    return len(files)


def download_dir(uri: str, local: str | os.PathLike, settings: TrackingSettings | None = None) -> Path:
    """Download every object under ``uri`` into ``local`` (created); returns ``local``."""
    from tqdm import tqdm

    local = Path(local)
    bucket, prefix = split_s3_uri(uri)
    client = s3_client(settings)
    objects = list(iter_objects(uri, client=client))
    if not objects:
        raise FileNotFoundError(f"{uri}: no objects under this prefix")
    cut = len(prefix) + 1 if prefix else 0
    for obj in tqdm(objects, desc=f"download {uri}", unit="file", disable=len(objects) < 20):
        target = local / obj["Key"][cut:]
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, obj["Key"], str(target))
    log.info("downloaded %d files from %s to %s", len(objects), uri, local)
    return local


def upload_file(local: str | os.PathLike, uri: str, settings: TrackingSettings | None = None) -> None:
    bucket, key = split_s3_uri(uri)
    s3_client(settings).upload_file(str(local), bucket, key)


def download_file(uri: str, local: str | os.PathLike, settings: TrackingSettings | None = None) -> Path:
    bucket, key = split_s3_uri(uri)
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    s3_client(settings).download_file(bucket, key, str(local))
    return local


def localize(uri: str | os.PathLike, cache_dir: str | os.PathLike,
             settings: TrackingSettings | None = None) -> Path:
    """A local directory holding ``uri``: the path itself if local, else a download into ``cache_dir``."""
    if not is_s3_uri(uri):
        path = Path(uri)
        if not path.exists():
            raise FileNotFoundError(f"{path}: does not exist")
        return path
    bucket, prefix = split_s3_uri(str(uri))
    target = Path(cache_dir) / bucket / prefix
    return download_dir(str(uri), target, settings)


def publish(local: str | os.PathLike, uri: str | os.PathLike, settings: TrackingSettings | None = None) -> str:
    """Put a local directory at ``uri``: upload for ``s3://``, copy for a local path. Returns ``uri``."""
    if is_s3_uri(uri):
        upload_dir(local, str(uri), settings)
    elif Path(local).resolve() != Path(uri).resolve():
        shutil.copytree(local, uri, dirs_exist_ok=True)
    return str(uri)


def content_hash(path: str | os.PathLike, settings: TrackingSettings | None = None) -> str:
    """``sha256:<hex>`` over relative paths + file bytes of a directory (or one file), so the same data
    gives the same hash wherever it lives. For ``s3://`` prefixes, over keys + ETags (no download)."""
    digest = hashlib.sha256()
    if is_s3_uri(path):
        _, prefix = split_s3_uri(str(path))
        cut = len(prefix) + 1 if prefix else 0
        for obj in sorted(iter_objects(str(path), settings), key=lambda o: o["Key"]):
            digest.update(obj["Key"][cut:].encode() + b"\0" + str(obj.get("ETag", "")).encode() + b"\0")
        return "s3etag-sha256:" + digest.hexdigest()
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()
                                                  and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"{root}: no files to hash")
    for file in files:
        rel = file.name if file == root else file.relative_to(root).as_posix()
        digest.update(rel.encode() + b"\0")
        with open(file, "rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    return "sha256:" + digest.hexdigest()
