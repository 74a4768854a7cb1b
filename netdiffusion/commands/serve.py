"""Run the synthetic data service: an HTTP API (OpenAPI at /docs) that generates labelled,
protocol-valid traffic on request. Tokens come from NETDIFFUSION_API_TOKENS (comma-separated) or
the file named by NETDIFFUSION_API_TOKENS_FILE; other settings from NETDIFFUSION_SERVE_* env
variables (see docs/serve.md), overridden by these flags."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "HTTP service: request synthetic traffic jobs (FastAPI + uvicorn)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="job database and results (default: $NETDIFFUSION_SERVE_STATE_DIR or ./serve-state)")
    parser.add_argument("--model", default=None,
                        help="local model dir or registry URI models:/NAME@ALIAS (default: $NETDIFFUSION_SERVE_MODEL)")
    parser.add_argument("--workers", type=int, default=None, help="concurrent local jobs")
    parser.add_argument("--kfp-host", default=None, help="Kubeflow Pipelines host for large jobs")
    parser.add_argument("--s3-uri", default=None, help="s3://bucket/prefix to upload job results to")
    parser.add_argument("--plain-logs", action="store_true", help="human-readable logs instead of JSON lines")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from netdiffusion.serve import ServeConfig, create_app
    from netdiffusion.serve.logs import configure_json_logging

    try:
        config = ServeConfig.from_env(state_dir=args.state_dir, model=args.model, workers=args.workers,
                                      kfp_host=args.kfp_host, s3_uri=args.s3_uri)
    except ValueError as exc:
        print(f"netdiffusion serve: {exc}")
        return 2
    if not config.tokens:
        print("netdiffusion serve: no API tokens: set NETDIFFUSION_API_TOKENS or NETDIFFUSION_API_TOKENS_FILE")
        return 2
    if not args.plain_logs:
        configure_json_logging()
    app = create_app(config)
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False,
                timeout_graceful_shutdown=10)
    return 0
