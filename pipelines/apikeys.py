"""Make, list and revoke the API keys of the serving endpoints (python -m pipelines.serve / pipelines.mcp_server).

    python -m pipelines.apikeys create NAME [--prefix hr/ --prefix policies/]   # the key alone on the last line
    python -m pipelines.apikeys list
    python -m pipelines.apikeys revoke NAME

Keys are stored hashed (salted PBKDF2-SHA256) in $DOCPLATFORM_API_KEYS or $DOCPLATFORM_DATA_DIR/api-keys.json; the
key itself is shown once, at creation. --prefix limits a key to documents whose key starts with one of the prefixes
(search hits, answer sources and graph facts); no --prefix = every document.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys-file", default=None, help="key file (default $DOCPLATFORM_DATA_DIR/api-keys.json)")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="make a key; prints it once")
    create.add_argument("name")
    create.add_argument("--prefix", action="append", default=[], help="allowed document-key prefix; repeatable")
    commands.add_parser("list", help="the keys (never their secrets)")
    revoke = commands.add_parser("revoke", help="revoke the active key of that name")
    revoke.add_argument("name")
    args = parser.parse_args(argv)

    from serving.apikeys import ApiKeyError, KeyStore

    store = KeyStore(args.keys_file)
    try:
        if args.command == "create":
            record, key = store.create(args.name, args.prefix)
            scope = ", ".join(record.prefixes) or "all documents"
            print(f"created key {record.name!r} (id {record.key_id}; {scope}) in {store.path}")
            print("the key is shown this once; send it as 'Authorization: Bearer KEY':")
            print(key)
        elif args.command == "list":
            keys = store.keys()
            if not keys:
                print(f"no keys in {store.path}")
            for k in keys:
                state = "active" if k.active else "revoked " + time.strftime("%Y-%m-%d %H:%M", time.gmtime(k.revoked))
                print(f"{k.name}\t{k.key_id}\t{','.join(k.prefixes) or '*'}\t"
                      f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(k.created))}\t{state}")
        else:
            count = store.revoke(args.name)
            if not count:
                print(f"error: no active key named {args.name!r} in {store.path}", file=sys.stderr)
                return 1
            print(f"revoked key {args.name!r}")
    except ApiKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
