"""The platform as an MCP server: tools search, graph_paths and ask, over stdio (default) or streamable HTTP.

    python -m pipelines.mcp_server                          # stdio: an MCP client starts it as a subprocess
    python -m pipelines.mcp_server --http [--host 127.0.0.1] [--port 8801] [--no-llm] [--access-log FILE]

Over HTTP the endpoint is http://HOST:PORT/mcp; API keys (python -m pipelines.apikeys) are checked on every
request, and required when --host is not loopback or once any key exists. Client set-up: docs/serving.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8801)
    parser.add_argument("--llm-url", default=None, help="vLLM server (default $DOCPLATFORM_VLLM_URL or http://127.0.0.1:8000)")
    parser.add_argument("--no-llm", action="store_true", help="answer extractively, never ask a model server")
    parser.add_argument("--require-keys", action="store_true")
    parser.add_argument("--keys-file", default=None)
    parser.add_argument("--rate-limit", type=int, default=60, help="requests a minute per key (HTTP)")
    parser.add_argument("--access-log", default=None, help="file for the access log (default stderr)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.disable(logging.WARNING)  # stdout is the protocol channel over stdio; the SDK logs to stderr anyway

    from pipelines.serve import configure_access_log
    from serving.apikeys import KeyStore
    from serving.app import is_loopback
    from serving.mcp_tools import build_mcp, http_app
    from serving.service import PlatformService

    keys = KeyStore(args.keys_file)
    service = PlatformService(llm_url=args.llm_url, use_llm=not args.no_llm)
    if not args.http:
        build_mcp(service, keys).run("stdio")
        return 0
    require = args.require_keys or not is_loopback(args.host)
    if require and not keys.has_active_keys():
        print(f"error: serving on {args.host} needs API keys and {keys.path} holds none; make one with "
              "`python -m pipelines.apikeys create NAME`", file=sys.stderr)
        return 2
    logging.disable(logging.NOTSET)
    configure_access_log(args.access_log)
    import uvicorn

    app = http_app(build_mcp(service, keys, require), keys, require, args.host, args.rate_limit)
    print(f"docplatform MCP on http://{args.host}:{args.port}/mcp", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
