"""Retrieval quality gate: recall@k and MRR of hybrid search over a labeled query set (plain functions)."""

import json
from pathlib import Path

DEFAULT_QUERIES = Path(__file__).resolve().parent / "retrieval_queries.json"


def load_queries(path: str | Path = DEFAULT_QUERIES) -> list[dict]:
    return json.loads(Path(path).read_text())["queries"]


def is_relevant(hit: dict, labels: list[dict]) -> bool:
    return any(hit["doc_id"] == label["doc_id"] and label["phrase"].lower() in hit["text"].lower() for label in labels)


def evaluate(queries: list[dict], search, indexed: set[str], k: int = 5, answerable=None) -> dict:
    """search(query, k) -> hits [{doc_id, text}]. Only applicable queries count: a relevant document is indexed
    and (answerable(doc_id, phrase), when given) one of its stored chunks still contains the labeled phrase,
    so an edited or partly indexed corpus is measured on what it can answer.

    recall@k: share of applicable queries with a relevant chunk in the top k; MRR: mean 1/rank of the first one."""
    applicable = [q for q in queries
                  if any(label["doc_id"] in indexed and (answerable is None or answerable(label["doc_id"], label["phrase"]))
                         for label in q["relevant"])]
    reciprocal, found, misses = [], 0, []
    for q in applicable:
        hits = search(q["query"], k)
        rank = next((i for i, hit in enumerate(hits, 1) if is_relevant(hit, q["relevant"])), None)
        found += rank is not None
        reciprocal.append(1.0 / rank if rank else 0.0)
        if rank is None:
            misses.append(q["query"])
    n = len(applicable)
    return {"queries": n, "recall_at_k": found / n if n else None, "mrr": sum(reciprocal) / n if n else None,
            "k": k, "misses": misses}
