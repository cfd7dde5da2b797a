"""Serve the platform over HTTP: an OpenAI-compatible API (model `docplatform-rag`) plus search and graph paths.

    python -m pipelines.serve [--host 127.0.0.1] [--port 8800] [--llm-url http://127.0.0.1:8000] [--no-llm]
                              [--rate-limit 60] [--max-body 65536] [--timeout 180] [--access-log FILE]

Answers come from the vLLM server at --llm-url ($DOCPLATFORM_VLLM_URL); without one, an extractive answer from the
same sources. API keys (python -m pipelines.apikeys) are required when --host is not loopback, or once any key
exists. Endpoints and client set-up: docs/serving.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def configure_access_log(path: str | None) -> None:
    from serving.app import access_log

    handler = logging.FileHandler(path, encoding="utf-8") if path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s access %(message)s"))
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8800)
    parser.add_argument("--llm-url", default=None, help="vLLM server (default $DOCPLATFORM_VLLM_URL or http://127.0.0.1:8000)")
    parser.add_argument("--no-llm", action="store_true", help="answer extractively, never ask a model server")
    parser.add_argument("--require-keys", action="store_true", help="require API keys on loopback too")
    parser.add_argument("--keys-file", default=None, help="API key file (default $DOCPLATFORM_DATA_DIR/api-keys.json)")
    parser.add_argument("--rate-limit", type=int, default=60, help="requests a minute per key (default 60)")
    parser.add_argument("--max-body", type=int, default=64 * 1024, help="largest request body in bytes")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds a request may take")
    parser.add_argument("--access-log", default=None, help="file for the access log (default stderr)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import uvicorn

    from serving.apikeys import KeyStore
    from serving.app import Limits, build_app, is_loopback
    from serving.service import PlatformService

    keys = KeyStore(args.keys_file)
    require = args.require_keys or not is_loopback(args.host)
    if require and not keys.has_active_keys():
        print(f"error: serving on {args.host} needs API keys and {keys.path} holds none; make one with "
              "`python -m pipelines.apikeys create NAME` (or listen on 127.0.0.1)", file=sys.stderr)
        return 2
    configure_access_log(args.access_log)
    service = PlatformService(llm_url=args.llm_url, use_llm=not args.no_llm, answer_timeout_s=args.timeout)
    app = build_app(service, keys, Limits(max_body_bytes=args.max_body, requests_per_minute=args.rate_limit,
                                          request_timeout_s=args.timeout), require_keys=require)
    print(f"docplatform serving on http://{args.host}:{args.port}/v1 (model docplatform-rag; keys "
          f"{'required' if require or keys.has_active_keys() else 'not required on loopback'})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
