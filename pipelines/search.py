"""Hybrid retrieval over the chunk index: Milvus BM25 full text (Korean as morphemes) + dense vectors of the
configured embedder (MiniLM or multilingual-e5, query side), fused with RRF.

    python -m pipelines.search "who manages billing-db?" [--top-k 5] [--filter doc=a.md] [--filter path=ops/]
                               [--filter type=.pdf] [--mode hybrid|dense|bm25] [--json]

Filters: doc=<document key> (exact), path=<prefix of the document key>, type=<suffix such as .pdf>; repeat
--filter to combine them (AND). The same search is a plain function: search(query, top_k=..., filters=...).
"""

from __future__ import annotations

import argparse
import json
import sys

from resources.embedder import Embedder
from resources.milvus import MilvusStore, _quote

FILTER_FIELDS = {"doc": "doc_id", "path": "doc_id", "type": "doc_type"}


def filter_expression(filters: dict | None) -> str:
    """A Milvus boolean expression from {doc|path|type: value} (path: a prefix or a list of them); values always quoted."""
    parts = []
    for name, value in (filters or {}).items():
        if name not in FILTER_FIELDS:
            raise ValueError(f"unknown filter {name!r}; use one of {', '.join(FILTER_FIELDS)}")
        if name == "path":
            # a string range, not LIKE: Milvus' LIKE treats backslashes inconsistently, a range has no wildcards
            # (keys are prefix + anything up to U+10FFFF; only a key continuing with U+10FFFF itself is missed);
            # several prefixes (a list: an API key's allowed documents) are OR-ed
            prefixes = [value] if isinstance(value, str) else list(value)
            if not prefixes:
                raise ValueError("filter path: an empty list of prefixes matches nothing")
            parts.append("(" + " or ".join(f"(doc_id >= {_quote(v)} and doc_id < {_quote(v + chr(0x10FFFF))})"
                                            for v in prefixes) + ")")
        elif name == "type":
            parts.append(f"doc_type == {_quote(value if value.startswith('.') else '.' + value)}")
        else:
            parts.append(f"doc_id == {_quote(value)}")
    return " and ".join(parts)


def search(query: str, top_k: int = 5, filters: dict[str, str] | None = None, mode: str = "hybrid",
           milvus: MilvusStore | None = None, embedder: Embedder | None = None) -> list[dict]:
    """[{chunk_id, score, doc_id, path, seq, text}] best first. mode: hybrid (BM25 + dense, RRF), dense or bm25."""
    milvus, embedder = milvus or MilvusStore(), embedder or Embedder()
    expression = filter_expression(filters)
    with milvus.client() as client:
        milvus.check_embedder(client, embedder.identity)
        if mode == "hybrid":
            vector = embedder.encode_queries([query])[0].tolist()
            hits = milvus.hybrid_search(client, query, vector, limit=top_k, filter=expression)
        elif mode == "dense":
            hits = milvus.search(client, embedder.encode_queries([query])[0].tolist(), limit=top_k, filter=expression)
        elif mode == "bm25":
            hits = milvus.bm25_search(client, query, limit=top_k, filter=expression)
        else:
            raise ValueError(f"unknown mode {mode!r}: hybrid, dense or bm25")
    from resources.documents import DocumentSource

    root = DocumentSource().root_path
    return [{"chunk_id": h["chunk_id"], "score": float(h["score"]), "doc_id": h["doc_id"], "path": str(root / h["doc_id"]),
             "seq": int(h["seq"]), "text": h["text"]} for h in hits]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("query")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--filter", action="append", default=[], metavar="FIELD=VALUE",
                        help="doc=<key>, path=<key prefix>, type=<suffix>; repeatable")
    parser.add_argument("--mode", choices=["hybrid", "dense", "bm25"], default="hybrid")
    parser.add_argument("--json", action="store_true", help="print the hits as a JSON list")
    args = parser.parse_args(argv)
    filters = {}
    for item in args.filter:
        if "=" not in item:
            parser.error(f"--filter {item!r}: expected FIELD=VALUE")
        name, value = item.split("=", 1)
        filters[name.strip()] = value
    try:
        hits = search(args.query, top_k=args.top_k, filters=filters, mode=args.mode)
    except ValueError as exc:
        parser.error(str(exc))
    if args.json:
        print(json.dumps(hits, indent=2, ensure_ascii=False))
    else:
        for rank, hit in enumerate(hits, 1):
            print(f"{rank:2d}. {hit['score']:.4f}  {hit['doc_id']}#{hit['seq']}  [{hit['chunk_id'][:12]}]  {hit['text'][:120]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
