"""Run the synthetic data service: an HTTP API (OpenAPI at /docs) that generates labelled,
protocol-valid traffic on request. Tokens come from NETDIFFUSION_API_TOKENS (comma-separated) or
the file named by NETDIFFUSION_API_TOKENS_FILE; other settings from NETDIFFUSION_SERVE_* env
variables (see docs/serve.md), overridden by these flags."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "HTTP service: request synthetic traffic jobs (FastAPI + uvicorn)"


def _port(text: str) -> int:
    """A TCP port number (argparse type): out of range is a usage error, not a bind() traceback."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0-65535)")
    return port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=_port, default=8080, help="port to listen on")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="job database and results (default: $NETDIFFUSION_SERVE_STATE_DIR or ./serve-state)")
    parser.add_argument("--model", default=None,
                        help="local model dir or registry URI models:/NAME@ALIAS (default: $NETDIFFUSION_SERVE_MODEL)")
    parser.add_argument("--workers", type=int, default=None, help="concurrent local jobs")
    parser.add_argument("--kfp-host", default=None, help="Kubeflow Pipelines host for large jobs")
    parser.add_argument("--kfp-timeout", type=float, default=None, metavar="SECONDS",
                        help="timeout of each KFP API call (default: $NETDIFFUSION_SERVE_KFP_TIMEOUT_S or 30)")
    parser.add_argument("--s3-uri", default=None, help="s3://bucket/prefix to upload job results to")
    parser.add_argument("--plain-logs", action="store_true", help="human-readable logs instead of JSON lines")


def run(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from netdiffusion.serve import ServeConfig, create_app
    from netdiffusion.serve.lock import StateDirBusy
    from netdiffusion.serve.lock import acquire as lock_state_dir
    from netdiffusion.serve.logs import configure_json_logging
    from netdiffusion.serve.models import is_registry_uri

    try:
        config = ServeConfig.from_env(state_dir=args.state_dir, model=args.model, workers=args.workers,
                                      kfp_host=args.kfp_host, s3_uri=args.s3_uri, kfp_timeout_s=args.kfp_timeout)
    except ValueError as exc:
        print(f"netdiffusion serve: {exc}")
        return 2
    if not config.tokens:
        print("netdiffusion serve: no API tokens: set NETDIFFUSION_API_TOKENS or NETDIFFUSION_API_TOKENS_FILE")
        return 2
    if not config.kfp_timeout_s > 0:
        print(f"netdiffusion serve: KFP timeout must be > 0 seconds, got {config.kfp_timeout_s:g}")
        return 2
    if is_registry_uri(config.model) and not os.environ.get("MLFLOW_TRACKING_URI"):
        # otherwise MLflow would quietly create an empty local store and report the model "not found"
        print(f"netdiffusion serve: --model {config.model}: models:/ references need MLFLOW_TRACKING_URI "
              "(the MLflow tracking server or store holding the registry); it is not set")
        return 2
    # the state dir and the port first: a second instance must fail before restart recovery
    # touches the jobs of the one already running
    try:
        lock_state_dir(config.state_dir)
    except StateDirBusy as exc:
        print(f"netdiffusion serve: {exc}")
        return 2
    try:
        sock = _listen(args.host, args.port)
    except OSError as exc:
        print(f"netdiffusion serve: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        return 2
    if not args.plain_logs:
        configure_json_logging()
    app = create_app(config)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_config=None, access_log=False,
                                           timeout_graceful_shutdown=10))
    server.run(sockets=[sock])
    return 0 if server.started else 3


def _listen(host: str, port: int):  # noqa: ANN202 - socket imported lazily
    """A bound listening socket (as uvicorn would make it), so 'address in use' shows up first."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock
