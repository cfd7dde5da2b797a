"""Sensor: keeps the document partitions in step with the documents folder, requesting change-only work.

A document is (re-)indexed when its content hash or the stage fingerprint (ingestion code version,
chunking config, embedder) differs from what the index recorded for it; requests are batched into
runs over adjacent document partitions (pipelines.partitions.contiguous_batches).
"""

import hashlib
import json
import os
import time

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from assets.vector_index import expected_fingerprint
from pipelines.jobs import ingest_job, purge_documents_job
from pipelines.partitions import DOCUMENTS_PARTITIONS_NAME, contiguous_batches, documents_partitions, range_tags
from resources.documents import DocumentSource, ScanReport
from resources.embedder import Embedder
from resources.milvus import MilvusStore

# how often the daemon evaluates the folder sensor; read when the code location loads (tests shorten it)
SENSOR_INTERVAL_S = int(os.environ.get("DOCPLATFORM_SENSOR_INTERVAL_S", "30"))


def plan_changes(previous: dict[str, str], current: dict[str, str], partitions: set[str]):
    """(to_ingest, to_delete) from the last seen {key: sha256}, the folder now, and the registered partitions."""
    to_ingest = sorted(k for k, sha in current.items() if k not in partitions or previous.get(k) != sha)
    to_delete = sorted((partitions | set(previous)) - set(current))
    return to_ingest, to_delete


def stale_documents(current: dict[str, str], states: dict[str, dict], fingerprint: str) -> list[str]:
    """Documents whose content hash or stage fingerprint differs from what the index recorded (or never indexed)."""
    return sorted(k for k, sha in current.items()
                  if (s := states.get(k)) is None or s["sha256"] != sha or s["fingerprint"] != fingerprint)


def batched_run_requests(order: list[str], keys: list[str], tokens: dict[str, str], run_key_prefix: str,
                         tags: dict | None = None, job_name: str = "ingest_job") -> list[RunRequest]:
    """One run per batch of adjacent partitions: a single document by partition_key, more by a partition range."""
    requests = []
    for batch in contiguous_batches(order, set(keys)):
        digest = hashlib.sha256("|".join(f"{k}@{tokens[k]}" for k in batch).encode()).hexdigest()[:16]
        if len(batch) == 1:
            requests.append(RunRequest(job_name=job_name, partition_key=batch[0], run_key=f"{run_key_prefix}{batch[0]}@{tokens[batch[0]]}",
                                       tags=dict(tags or {}) | {"docplatform/documents": "1"}))
        else:
            requests.append(RunRequest(job_name=job_name, run_key=f"{run_key_prefix}batch:{digest}",
                                       tags=dict(tags or {}) | range_tags(batch[0], batch[-1])
                                       | {"docplatform/documents": str(len(batch))}))
    return requests


@sensor(
    jobs=[ingest_job, purge_documents_job],
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=DefaultSensorStatus.RUNNING,
    description="Adds/removes document partitions; requests batched runs only for documents whose content or "
                "stage fingerprint changed, and a purge run for deleted ones.",
)
def documents_folder_sensor(context: SensorEvaluationContext, documents: DocumentSource, milvus: MilvusStore,
                            embedder: Embedder):
    started = time.perf_counter()
    pending = json.loads(context.cursor) if context.cursor and context.cursor.startswith("{") else {}
    report = ScanReport()
    scanned = documents.scan_cached(report=report)
    current = {key: doc.sha256 for key, doc in scanned.items()}
    for warning in report.warnings:
        context.log.warning(f"skipped at scan: {warning}")
    states = milvus.document_states()
    fingerprint = expected_fingerprint(embedder)
    tokens = {key: f"{sha[:16]}:{fingerprint}" for key, sha in current.items()}
    stale = stale_documents(current, states, fingerprint)
    # requested earlier and not done yet (queued, running, or failed on this very content): not asked again
    to_ingest = [k for k in stale if pending.get(k) != tokens[k]]
    partitions = list(context.instance.get_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME))
    known = set(partitions)
    to_delete = sorted((known | set(states)) - set(current))
    stale_set = set(stale)
    cursor = {k: v for k, v in pending.items() if k in stale_set and tokens.get(k) == v} | {k: tokens[k] for k in to_ingest}
    cursor_text = json.dumps(cursor, sort_keys=True)
    summary = (f"checked {len(current)} documents in {time.perf_counter() - started:.2f} s: {len(to_ingest)} to index, "
               f"{len(to_delete)} deleted, {len(stale) - len(to_ingest)} pending; {skipped_summary(report)}")
    context.log.info(summary)
    if not to_ingest and not to_delete:
        return SensorResult(skip_reason=SkipReason(f"no document added, changed or deleted ({summary})"), cursor=cursor_text)
    new_keys = [k for k in to_ingest if k not in known]
    order = [k for k in partitions if k not in set(to_delete)] + new_keys
    run_requests = batched_run_requests(order, to_ingest, tokens, "", {"trigger": "documents_sensor"}
                                        | skipped_tags(report))
    dynamic_requests = []
    if new_keys:
        dynamic_requests.append(documents_partitions.build_add_request(new_keys))
    if to_delete:
        gone = [k for k in to_delete if k in known]
        if gone:
            dynamic_requests.append(documents_partitions.build_delete_request(gone))
        run_requests.append(
            RunRequest(
                job_name=purge_documents_job.name,
                run_key="purge:" + hashlib.sha256(json.dumps([to_delete, current], sort_keys=True).encode()).hexdigest()[:16],
                run_config=purge_run_config(to_delete),
            )
        )
    return SensorResult(run_requests=run_requests, dynamic_partitions_requests=dynamic_requests, cursor=cursor_text)


def purge_run_config(doc_ids: list[str]) -> dict:
    """Every op of the purge job takes the same list of deleted document ids."""
    return {"ops": {node.name: {"config": {"doc_ids": doc_ids}} for node in purge_documents_job.graph.nodes}}


SKIPPED_TAG = "docplatform/skipped_files"


def skipped_summary(report: ScanReport) -> str:
    """'3 files skipped (not included (.exe): 2, ...), e.g. a.exe, b.ttf' — never a failed run."""
    if not report.count:
        return "0 files skipped"
    reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(report.skipped.items()))
    return f"{report.count} files skipped ({reasons}), e.g. {', '.join(report.sample[:5])}"


def skipped_tags(report: ScanReport) -> dict[str, str]:
    """The scan's skipped files (count, reasons, sample, warnings) as a run tag: the run's metadata shows it."""
    return {SKIPPED_TAG: json.dumps(report.as_metadata())[:4000]} if report.count else {}
