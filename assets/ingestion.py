"""Ingestion stage: raw documents -> parsed elements -> chunks -> embeddings in Milvus.

Every asset is partitioned by document (dynamic partitions keyed by the file's relative path) and works
on the run's context.partition_keys: a run covers one document or a batch of them (pipelines.partitions).
In a batch, a bad document is skipped and reported by name (check, run tag, per-partition observation)
while the others proceed; a one-document run fails with the same message. Nothing in Milvus is touched
for a document that failed. Logic lives in plain functions; the assets are thin wrappers: reading a document
(document_reading), chunking (chunking), the stage fingerprint and the Milvus write (vector_index), a batched
run's bookkeeping (batches) and parsing (parsing) are their own modules.
"""

import json
import os
import time

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    Config,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
    Output,
    RetryRequested,
    asset,
    op,
)
from pydantic import Field

from assets import _offline  # noqa: F401
from assets.batches import UNCHANGED_TAG, Progress, batch_of, emit, failed_in_run, report_failures, unchanged_in_run
from assets.chunking import INGEST_CODE_VERSION, ChunkingConfig, chunk_elements, chunk_table_checks
from assets.document_reading import read_document
from assets.faults import fault_point
from assets.parsing import DocumentError, parse_many, shutdown_pools, suffix_of
from assets.vector_index import (
    RetrievalGateConfig,
    index_documents,
    retrieval_gate,
    run_stage_fingerprint,
    stage_fingerprint,
    unchanged_documents,
)
from pipelines.partitions import Batch, documents_backfill_policy, documents_partitions
from resources.documents import DocumentSource
from resources.embedder import Embedder
from resources.milvus import MilvusStore, MilvusUnavailable


GROUP = "ingestion"
# chunk_vectors re-runs its step this often when Milvus fails mid-run, waiting backoff * 2**n seconds between tries
MILVUS_STEP_RETRIES = int(os.environ.get("DOCPLATFORM_MILVUS_STEP_RETRIES", "3"))
MILVUS_STEP_BACKOFF_S = float(os.environ.get("DOCPLATFORM_MILVUS_STEP_BACKOFF_S", "5"))


class ReadConfig(Config):
    reindex_unchanged: bool = Field(
        default=False, description="Index documents again although the index already holds their current content "
                                   "with this run's stage fingerprint (e.g. after a knowledge-graph extractor change). "
                                   "Default: such documents are skipped, so a run queued behind an equal one (sensor, "
                                   "nightly, manual request for the same change) does no work.")


@asset(
    partitions_def=documents_partitions,
    backfill_policy=documents_backfill_policy,
    group_name=GROUP,
    code_version=INGEST_CODE_VERSION,
    description="The document's bytes and content hash, read from the documents folder. In the ingestion job, a "
                "document already indexed with this content and stage fingerprint is skipped (no output for it: the "
                "run does no work for it), unless reindex_unchanged is set.",
    check_specs=[AssetCheckSpec("content_not_empty", asset="raw_documents", blocking=True)],
    output_required=False,
)
def raw_documents(context: AssetExecutionContext, config: ReadConfig, documents: DocumentSource, milvus: MilvusStore,
                  embedder: Embedder):
    results, failures = {}, {}
    for key in context.partition_keys:
        try:
            results[key] = read_document(documents, key)
        except DocumentError as exc:
            failures[key] = exc.description
    report_failures(context, failures)
    # Deduplication at run start: the sensor, the nightly and a manual request may queue runs for the same change;
    # the queue runs them one after the other, and the later ones find the change indexed (state final) and skip it.
    # Only in a run that ends with documents_indexed (the whole ingestion path), which is what makes a state final.
    full_path = AssetKey("documents_indexed") in context.job_def.asset_layer.selected_asset_keys
    fingerprint = run_stage_fingerprint(context, embedder) if full_path and not config.reindex_unchanged else None
    unchanged = unchanged_documents(results, milvus.document_states(), fingerprint) if fingerprint else []
    if unchanged:
        context.instance.add_run_tags(context.run_id, {UNCHANGED_TAG: json.dumps(unchanged)[:20000]})
        for key in unchanged:
            context.log_event(AssetObservation(asset_key=context.asset_key, partition=key, metadata={
                "status": "unchanged", "sha256": results[key]["sha256"],
                "note": "already indexed with this content and stage fingerprint: skipped (reindex_unchanged=true "
                        "indexes it anyway)"}))
            del results[key]
        context.log.info(f"{len(unchanged)} document(s) already indexed with this content and stage fingerprint, "
                         f"skipped: {', '.join(unchanged[:20])}")
        if not results and not failures:
            # nothing to do in this run: no output, so every later step is skipped
            yield AssetCheckResult(check_name="content_not_empty", passed=True,
                                   metadata={"documents": 0, "unchanged": len(unchanged)})
            return
    value = emit(context, results, failures)
    sizes = [r["size"] for r in results.values()]
    metadata = {"documents": len(results), "failed": len(failures), "size_bytes": int(sum(sizes)),
                "failed_documents": MetadataValue.json(failures), "unchanged": len(unchanged),
                "unchanged_documents": MetadataValue.json(unchanged[:200])}
    run = context.instance.get_run_by_id(context.run_id)
    if run and run.tags.get("docplatform/skipped_files"):  # the scan's non-documents (pipelines/sensors.py)
        metadata["skipped_files"] = MetadataValue.json(json.loads(run.tags["docplatform/skipped_files"]))
    attachments = {k: r["attached_to"] for k, r in results.items() if r.get("attached_to")}
    if attachments:
        metadata["attached_to"] = MetadataValue.json(attachments)
    if len(context.partition_keys) == 1:
        only = next(iter(results.values()))
        metadata |= {"sha256": only["sha256"], "path": only["path"]}
        yield Output(value, data_version=DataVersion(only["sha256"]), metadata=metadata)
    else:
        yield Output(value, metadata=metadata)
    yield AssetCheckResult(check_name="content_not_empty", passed=bool(sizes) and min(sizes) > 0,
                           metadata={"documents": len(sizes), "min_size_bytes": min(sizes) if sizes else 0})


# ------------------------------------------------------------------------------------------ parsing

@asset(
    partitions_def=documents_partitions,
    backfill_policy=documents_backfill_policy,
    group_name=GROUP,
    code_version=INGEST_CODE_VERSION,
    description="Structured elements (titles, paragraphs, tables) parsed by unstructured with strategy='fast', "
                "in a process pool over all cores with a per-document timeout.",
    check_specs=[AssetCheckSpec("has_text", asset="parsed_elements", blocking=True)],
)
def parsed_elements(context: AssetExecutionContext, raw_documents, documents: DocumentSource):
    raws = batch_of(context, raw_documents)
    progress = Progress(context, "parsed", len(raws))
    try:
        parsed, failures = parse_many([(k, r["suffix"], r["content"]) for k, r in raws.items()],
                                      workers=documents.parse_workers, timeout_s=documents.parse_timeout_s,
                                      progress=progress)
    finally:
        shutdown_pools()
    fault_point("after_parse")
    report_failures(context, failures)
    results = {k: {"doc_id": k, "sha256": raws[k]["sha256"], "elements": parsed[k]} for k in raws if k in parsed}
    strategies = {k: parse_strategy(v["elements"]) for k, v in results.items()}
    value = emit(context, results, failures)
    chars = {k: sum(len((e.get("text") or "").strip()) for e in v["elements"]) for k, v in results.items()}
    types = pd.Series([e["type"] for v in results.values() for e in v["elements"]]).value_counts().to_dict()
    yield Output(value, metadata={"element_count": sum(len(v["elements"]) for v in results.values()),
                                  "text_chars": int(sum(chars.values())), "element_types": MetadataValue.json(types),
                                  "failed": len(failures), "failed_documents": MetadataValue.json(failures),
                                  "parse_strategies": MetadataValue.json(dict(list(strategies.items())[:200])),
                                  **progress.metadata(len(results))})
    yield AssetCheckResult(check_name="has_text", passed=bool(chars) and min(chars.values()) > 0,
                           metadata={"text_chars": int(sum(chars.values())), "documents": len(chars)})


def parse_strategy(elements: list[dict]) -> dict:
    """Which strategy produced a document's elements (fast / ocr_only), with the OCR word confidence (0-1)."""
    meta = (elements[0].get("metadata") or {}) if elements else {}
    out = {"strategy": meta.get("parse_strategy", "fast")}
    if meta.get("ocr_confidence") is not None:
        out |= {"ocr_confidence": meta["ocr_confidence"], "ocr_pages": meta.get("ocr_pages")}
    return out


@asset(
    partitions_def=documents_partitions,
    backfill_policy=documents_backfill_policy,
    group_name=GROUP,
    code_version=INGEST_CODE_VERSION,
    description="Title-aware chunks (chunk_by_title, split to the embedder's token window) with deterministic, "
                "position-free ids: the unit that is embedded and graphed.",
    check_specs=[AssetCheckSpec("chunk_table_valid", asset="document_chunks", blocking=True,
                                description="Great Expectations: non-empty text, unique non-null ids."),
                 AssetCheckSpec("junk_text_skipped", asset="document_chunks", blocking=False,
                                description="Chunks without words (repeated characters, base64/hex blobs, minified "
                                            "code, punctuation runs) were left out; warns naming each document.")],
)
def document_chunks(context: AssetExecutionContext, config: ChunkingConfig, parsed_elements, embedder: Embedder):
    from assets.junk import MOSTLY_JUNK_SHARE

    parsed = batch_of(context, parsed_elements)
    results, failures, junk_by_doc = {}, {}, {}
    started = time.perf_counter()
    for key, doc in parsed.items():
        junk: list[tuple[int, str]] = []
        rows = chunk_elements(key, doc["sha256"], doc["elements"], config, embedder, junk=junk)
        junk_chars = sum(n for n, _ in junk)
        share = junk_chars / (junk_chars + sum(len(r["text"]) for r in rows)) if junk else 0.0
        if junk:
            junk_by_doc[key] = {"skipped_share": round(share, 4), "skipped_chunks": len(junk),
                                "reason": max(junk)[1]}
        if rows and share <= MOSTLY_JUNK_SHARE:
            results[key] = rows
        elif junk:
            failures[key] = (f"document {key!r}: {share:.0%} of its text has no words: {max(junk)[1]}; "
                             f"skipped, nothing of it indexed")
        else:
            failures[key] = f"document {key!r}: chunking produced no text"
    report_failures(context, failures)
    value = emit(context, results, failures)
    all_rows = [r for rows in results.values() for r in rows]
    chunking_s, started = time.perf_counter() - started, time.perf_counter()
    passed, details = chunk_table_checks(all_rows) if all_rows else (False, {"rows": 0})
    checks_s = time.perf_counter() - started
    lengths = [len(r["text"]) for r in all_rows] or [0]
    yield Output(value, metadata={"chunk_count": len(all_rows), "documents": len(results), "failed": len(failures),
                                  "mean_chars": float(np.mean(lengths)), "max_chars": max(lengths),
                                  "chunking": MetadataValue.json(config.model_dump()),
                                  "preview": MetadataValue.md(all_rows[0]["text"][:300] if all_rows else ""),
                                  "junk_skipped": MetadataValue.json(junk_by_doc),
                                  "seconds": round(chunking_s, 3), "checks_seconds": round(checks_s, 3)})
    yield AssetCheckResult(check_name="chunk_table_valid", passed=passed, metadata={"expectations": MetadataValue.json(details)})
    yield AssetCheckResult(check_name="junk_text_skipped", passed=not junk_by_doc, severity=AssetCheckSeverity.WARN,
                           description=("junk left out of: " + ", ".join(
                               f"{k} ({v['skipped_share']:.0%})" for k, v in sorted(junk_by_doc.items())))
                           if junk_by_doc else "no junk chunks",
                           metadata={"documents": MetadataValue.json(junk_by_doc)})


# ------------------------------------------------------------------------------------------ vectors

@asset(
    partitions_def=documents_partitions,
    backfill_policy=documents_backfill_policy,
    group_name=GROUP,
    code_version=INGEST_CODE_VERSION,
    description="Chunk embeddings upserted into Milvus (dense + BM25 sparse); only new chunk texts are encoded, "
                "batched across documents; a changed document's stale vectors are deleted.",
    check_specs=[
        AssetCheckSpec("embedding_dimension_and_norm", asset="chunk_vectors", blocking=True),
        AssetCheckSpec("milvus_count_matches_chunks", asset="chunk_vectors", blocking=True),
        AssetCheckSpec("batch_documents_ok", asset="chunk_vectors", blocking=False,
                       description="Every document of the run was indexed; failed ones are listed by name."),
        AssetCheckSpec("retrieval_quality", asset="chunk_vectors", blocking=True,
                       description="Hybrid search recall@5 and MRR over the labeled queries whose documents are "
                                   "indexed, against the configured floor (after each index change)."),
    ],
)
def chunk_vectors(context: AssetExecutionContext, config: RetrievalGateConfig, document_chunks, embedder: Embedder,
                  milvus: MilvusStore):
    docs = batch_of(context, document_chunks)
    progress = Progress(context, "indexed", len(docs))
    chunkers = {rows[0].get("chunker", "") for rows in docs.values() if rows}
    fingerprint = stage_fingerprint(next(iter(chunkers)) if len(chunkers) == 1 else "mixed", embedder)
    chunk_count = sum(len(rows) for rows in docs.values())
    # when documents_indexed runs after the graph in this run, the state stays pending until then (crash consistency)
    pending = GRAPH_PENDING if AssetKey("documents_indexed") in context.job_def.asset_layer.selected_asset_keys else ""
    try:
        summary = index_documents(milvus, embedder, docs, pending + fingerprint, {k: suffix_of(k) for k in docs},
                                  progress=context.log.info) if docs else \
            {"written": 0, "embedded": 0, "cache_hits": 0, "moved": 0, "removed": 0, "stored": [], "dimension": embedder.dimension,
             "timings": {}}
    except Exception as exc:
        # Milvus gone or restarting (each connection already retried with backoff): the step again, later; nothing was
        # deleted (stale vectors go only after the new ones are written) and no state recorded
        from pymilvus.exceptions import MilvusException

        if not isinstance(exc, (MilvusUnavailable, MilvusException)):
            raise
        if context.retry_number >= MILVUS_STEP_RETRIES:
            raise Failure(description=f"Milvus at {milvus.uri} failed on all {MILVUS_STEP_RETRIES + 1} tries of this step: "
                                      f"{type(exc).__name__}: {str(exc)[:500]}; nothing indexed was removed and these "
                                      "documents stay stale, so the next run indexes them") from exc
        wait = MILVUS_STEP_BACKOFF_S * 2 ** context.retry_number
        context.log.warning(f"Milvus failed ({type(exc).__name__}: {exc}); retry {context.retry_number + 1}/"
                            f"{MILVUS_STEP_RETRIES} of this step in {wait:g} s")
        raise RetryRequested(max_retries=MILVUS_STEP_RETRIES, seconds_to_wait=wait) from exc
    progress(len(docs), chunks=chunk_count)
    stored, dim, timings = summary.pop("stored"), summary["dimension"], summary.pop("timings")
    stored_by_doc: dict[str, set] = {}
    for row in stored:
        stored_by_doc.setdefault(row["doc_id"], set()).add(row["chunk_id"])
    matrix = np.asarray([row["vector"] for row in stored], dtype=np.float32).reshape(len(stored), -1)
    norms = np.linalg.norm(matrix, axis=1) if len(stored) else np.zeros(0)
    dims_ok = bool(len(stored)) and matrix.shape[1] == dim
    norms_ok = bool(len(norms)) and bool(np.all(np.abs(norms - 1.0) < 1e-3))
    mismatched = sorted(k for k, rows in docs.items() if stored_by_doc.get(k, set()) != {r["chunk_id"] for r in rows})
    failed = {k: v for k, v in failed_in_run(context).items() if k in set(context.partition_keys)}
    unchanged = unchanged_in_run(context)
    failed |= {k: "failed upstream (see raw_documents / parsed_elements)" for k in context.partition_keys
               if k not in docs and k not in failed and k not in unchanged}
    chunk_ids = {k: sorted(r["chunk_id"] for r in rows) for k, rows in docs.items()}
    if len(context.partition_keys) == 1:
        key = context.partition_keys[0]
        value = {"doc_id": key, "chunk_ids": chunk_ids[key], "embedded": summary["embedded"],
                 "removed": summary["removed"], "dimension": dim, "fingerprint": fingerprint}
    else:
        value = Batch({k: {"doc_id": k, "chunk_ids": ids, "fingerprint": fingerprint} for k, ids in chunk_ids.items()})
    yield Output(
        value,
        metadata={"vectors": len(stored), "chunks": chunk_count, "newly_embedded": summary["embedded"],
                  "cache_hits": summary["cache_hits"], "written": summary["written"], "moved": summary["moved"],
                  "reused": chunk_count - summary["written"] + summary["moved"], "stale_removed": summary["removed"],
                  "dimension": dim, "collection": milvus.collection, "fingerprint": fingerprint,
                  "embedder_precision": embedder.resolved_precision(),
                  "failed": len(failed), "failed_documents": MetadataValue.json(failed),
                  "stage_seconds": MetadataValue.json(timings),  # lookup, encode, BM25 analysis, Milvus writes
                  **progress.metadata(len(docs), chunk_count)},
    )
    yield AssetCheckResult(
        check_name="embedding_dimension_and_norm",
        passed=bool(dims_ok and norms_ok),
        severity=AssetCheckSeverity.ERROR,
        metadata={"expected_dimension": dim, "dimension": int(matrix.shape[1]) if len(stored) else 0,
                  "min_norm": float(norms.min()) if len(norms) else 0.0, "max_norm": float(norms.max()) if len(norms) else 0.0},
    )
    yield AssetCheckResult(
        check_name="milvus_count_matches_chunks",
        passed=bool(docs) and not mismatched,
        metadata={"chunks": chunk_count, "vectors_in_milvus": len(stored), "documents": len(docs),
                  "mismatched_documents": MetadataValue.json(mismatched[:50])},
    )
    changed = summary["written"] or summary["removed"]
    started = time.perf_counter()
    gate = retrieval_gate(milvus, embedder, config) if changed else {"queries": 0, "passed": True, "skipped": "index unchanged"}
    yield AssetCheckResult(
        check_name="retrieval_quality", passed=bool(gate["passed"]),
        metadata={"seconds": round(time.perf_counter() - started, 3),
                  "queries": gate["queries"], "recall_at_5": gate.get("recall_at_k") if gate.get("recall_at_k") is not None else -1.0,
                  "mrr": gate.get("mrr") if gate.get("mrr") is not None else -1.0,
                  "floor": MetadataValue.json({"recall_at_5": config.min_recall_at_5, "mrr": config.min_mrr}),
                  "misses": MetadataValue.json(gate.get("misses", [])), "note": gate.get("skipped", "")},
    )
    yield AssetCheckResult(
        check_name="batch_documents_ok", passed=not failed, severity=AssetCheckSeverity.WARN,
        metadata={"documents": len(context.partition_keys), "indexed": len(docs), "failed": len(failed),
                  "failed_documents": MetadataValue.json(failed)},
    )


class PurgeConfig(Config):
    doc_ids: list[str]


@op(description="Remove every trace of deleted documents from the vector index.")
def purge_document_vectors(context: OpExecutionContext, config: PurgeConfig, milvus: MilvusStore) -> list[str]:
    with milvus.client() as client:
        removed = milvus.delete_documents(client, config.doc_ids)
    context.log.info(f"purged {removed} vectors of {len(config.doc_ids)} deleted document(s): {config.doc_ids[:20]}")
    return config.doc_ids


# A document's state row (what sensor and nightly compare with) is written with this prefix by chunk_vectors and made
# final by documents_indexed once the knowledge graph holds the document too: a run killed in between leaves the
# document stale (re-indexed by the next run) instead of recorded as done with an outdated graph.
GRAPH_PENDING = "pending:"


@asset(
    partitions_def=documents_partitions,
    backfill_policy=documents_backfill_policy,
    group_name=GROUP,
    deps=[AssetKey("knowledge_graph")],
    code_version=INGEST_CODE_VERSION,
    description="The documents' index state made final, after their vectors and their graph facts are written.",
    check_specs=[AssetCheckSpec("state_final", asset="documents_indexed",
                                description="Every document of the run has a final state row with its fingerprint.")],
)
def documents_indexed(context: AssetExecutionContext, chunk_vectors, milvus: MilvusStore):
    values = batch_of(context, chunk_vectors)
    done = sorted(values)
    fault_point("after_graph_write")
    finalized = milvus.finalize_document_states(done, GRAPH_PENDING)
    states = milvus.document_states()
    wrong = [k for k in done if (states.get(k) or {}).get("fingerprint") != values[k]["fingerprint"]]
    return MaterializeResult(
        metadata={"documents": len(done), "finalized": finalized},
        check_results=[AssetCheckResult(check_name="state_final", passed=not wrong,
                                        metadata={"not_final": MetadataValue.json(wrong[:50])})])


ingestion_assets = [raw_documents, parsed_elements, document_chunks, chunk_vectors, documents_indexed]
