"""The vector index side of ingestion: each document's stage fingerprint (what besides its bytes decides its chunks
and vectors), writing a batch of documents' chunks to Milvus with the text-hash vector cache, the retrieval gate."""

import hashlib
import time

import numpy as np
from dagster import Config
from pydantic import Field

from assets import _offline  # noqa: F401
from assets.chunking import ChunkingConfig, chunking_fingerprint, text_sha
from assets.faults import fault_point
from resources.embedder import Embedder, release_free_memory
from resources.milvus import MilvusStore


def run_stage_fingerprint(context, embedder: Embedder) -> str | None:
    """The stage fingerprint this run's chunk_vectors will record: its own chunking config (run config), embedder.
    None for an invalid chunking config (document_chunks reports it)."""
    from pydantic import ValidationError

    ops = ((context.run.run_config if context.run else None) or {}).get("ops") or {}
    try:
        chunking = ChunkingConfig(**(((ops.get("document_chunks") or {}).get("config")) or {}))
    except ValidationError:
        return None
    return stage_fingerprint(chunking_fingerprint(chunking), embedder)


def unchanged_documents(records: dict[str, dict], states: dict[str, dict], fingerprint: str) -> list[str]:
    """Documents whose final index state (vectors and graph written: no pending prefix) has this content hash and
    this stage fingerprint: indexing them again would change nothing."""
    return sorted(k for k, r in records.items()
                  if (s := states.get(k)) and s["sha256"] == r["sha256"] and s["fingerprint"] == fingerprint)


def stage_fingerprint(chunker: str, embedder: Embedder) -> str:
    """What, besides a document's bytes, decides its chunks and vectors: code version, chunking config
    (chunker = chunking_fingerprint, carried on each chunk row), embedder model."""
    return hashlib.sha256(f"{chunker}|{embedder.fingerprint()}".encode()).hexdigest()[:16]


def expected_fingerprint(embedder: Embedder) -> str:
    """The fingerprint a document gets from a run with the configured defaults (what sensor and nightly expect)."""
    return stage_fingerprint(chunking_fingerprint(ChunkingConfig()), embedder)


def index_documents(milvus: MilvusStore, embedder: Embedder, docs: dict[str, list[dict]], fingerprint: str,
                    suffixes: dict[str, str] | None = None, progress=None) -> dict:
    """Write a batch of documents' chunks to Milvus: only new chunk ids are written, vectors come from the
    text-hash cache (any document's stored vector for the same text) or one batched encode across documents;
    moved chunks keep their vectors, stale chunks of these documents are deleted, then each document's state
    (sha256, stage fingerprint) is recorded. Returns counts and the stored rows of these documents."""
    from resources.text_analysis import bm25_terms

    suffixes = suffixes or {}
    loading = time.perf_counter()
    dim = embedder.dimension  # loads the model in a fresh process
    model_load_s = time.perf_counter() - loading
    with milvus.client() as client:
        lookup_started = time.perf_counter()
        milvus.ensure_collection(client, dim, embedder.identity)
        existing = milvus.chunk_index(client, list(docs))  # {chunk_id: seq}
        current = {r["chunk_id"]: r for rows in docs.values() for r in rows}
        new = [r for cid, r in current.items() if cid not in existing]
        moved = [r for cid, r in current.items() if cid in existing and existing[cid] != r["seq"]]
        shas = {r["chunk_id"]: text_sha(r["text"]) for r in new}
        cache = milvus.vectors_by_text_sha(client, set(shas.values()))
        todo = {}
        for r in new:
            if shas[r["chunk_id"]] not in cache:
                todo.setdefault(shas[r["chunk_id"]], r["text"])
        texts, started = list(todo.values()), time.perf_counter()
        timings = {"model_load_s": model_load_s, "lookup_s": started - lookup_started}
        for start in range(0, len(texts), 1024):  # slices: progress for long runs
            vectors = embedder.encode_passages(texts[start : start + 1024])
            cache |= {sha: vec for sha, vec in zip(list(todo)[start : start + 1024], vectors)}
            if progress:
                done = min(start + 1024, len(texts))
                progress(f"embedded {done}/{len(texts)} new chunk texts, "
                         f"{done / max(time.perf_counter() - started, 1e-9):.1f} chunks/s")
        if texts:
            release_free_memory()  # the batches' activations (~300 MB on 1,000 chunks of multilingual-e5)
        timings["encode_s"] = time.perf_counter() - started
        moved_vectors = milvus.vectors_by_id(client, [r["chunk_id"] for r in moved])
        rows = []
        for r in new + moved:
            vector = cache[shas[r["chunk_id"]]] if r["chunk_id"] in shas else moved_vectors[r["chunk_id"]]
            rows.append({"chunk_id": r["chunk_id"], "doc_id": r["doc_id"], "doc_sha256": r["doc_sha256"], "seq": r["seq"],
                         "text": r["text"], "text_sha": text_sha(r["text"]), "doc_type": suffixes.get(r["doc_id"], "")[:16],
                         "vector": np.asarray(vector, dtype=np.float32).tolist()})
        started = time.perf_counter()
        for row in rows:  # BM25 terms (kiwipiepy morphemes for Korean) here, so that their time is seen apart
            row["bm25_text"] = bm25_terms(row["text"])
        timings["bm25_analysis_s"] = time.perf_counter() - started
        milvus.upsert(client, rows)
        fault_point("after_milvus_upsert")
        stale = [cid for cid in existing if cid not in current]
        milvus.delete_ids(client, stale)
        milvus.set_document_states(client, [{"doc_id": k, "sha256": rows_[0]["doc_sha256"], "fingerprint": fingerprint,
                                             "chunks": len(rows_)} for k, rows_ in docs.items()])
        stored = milvus.rows_for_documents(client, list(docs), ["chunk_id", "doc_id", "vector"])
        timings["milvus_write_s"] = time.perf_counter() - started - timings["bm25_analysis_s"]
    return {"written": len(rows), "embedded": len(todo), "cache_hits": len(new) - len([r for r in new if shas[r["chunk_id"]] in todo]),
            "timings": {k: round(v, 3) for k, v in timings.items()}, "moved": len(moved), "removed": len(stale), "stored": stored, "dimension": dim}


class RetrievalGateConfig(Config):
    """The retrieval quality floor checked after each index change (labeled queries: assets/retrieval_queries.json)."""
    min_recall_at_5: float = Field(default=0.8, ge=0.0, le=1.0)
    min_mrr: float = Field(default=0.6, ge=0.0, le=1.0)
    queries_path: str = Field(default="", description="JSON query set; empty = the bundled sample-corpus set.")


def retrieval_gate(milvus: MilvusStore, embedder: Embedder, config: RetrievalGateConfig) -> dict:
    """recall@5 and MRR of hybrid search over the labeled queries whose documents are indexed; passed vs the floor."""
    from assets.retrieval_quality import DEFAULT_QUERIES, evaluate, load_queries

    queries = load_queries(config.queries_path or DEFAULT_QUERIES)
    indexed = set(milvus.document_states())
    with milvus.client() as client:
        milvus.check_embedder(client, embedder.identity)

        def search(text, k):
            return milvus.hybrid_search(client, text, embedder.encode_queries([text])[0].tolist(), limit=k)

        def answerable(doc_id, phrase):
            return milvus.contains_text(client, doc_id, phrase)

        result = evaluate(queries, search, indexed, k=5, answerable=answerable)
    result["passed"] = result["queries"] == 0 or (result["recall_at_k"] >= config.min_recall_at_5
                                                  and result["mrr"] >= config.min_mrr)
    return result
