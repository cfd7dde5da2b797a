"""Schedules: the nightly change-only re-index."""

import time

from dagster import DefaultScheduleStatus, ScheduleDefinition, ScheduleEvaluationContext, SkipReason, schedule

from assets.vector_index import expected_fingerprint
from pipelines.jobs import audit_job, ingest_job
from pipelines.partitions import DOCUMENTS_PARTITIONS_NAME
from pipelines.sensors import batched_run_requests, stale_documents
from resources.documents import DocumentSource
from resources.embedder import Embedder
from resources.milvus import MilvusStore


@schedule(cron_schedule="0 2 * * *", job=ingest_job, execution_timezone="UTC",
          default_status=DefaultScheduleStatus.RUNNING,
          description="Nightly: re-indexes, in batched runs, every registered document whose content hash or stage "
                      "fingerprint (code version, chunking config, embedder) differs from the index's record, and "
                      "retries documents that failed. An unchanged corpus requests nothing.")
def nightly_reindex_schedule(context: ScheduleEvaluationContext, documents: DocumentSource, milvus: MilvusStore,
                             embedder: Embedder):
    started = time.perf_counter()
    partitions = list(context.instance.get_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME))
    if not partitions:
        return SkipReason("no document partitions yet; the documents sensor registers them")
    scanned = documents.scan_cached()
    # partitions whose file is gone are purged by the sensor, not re-run (their run could only fail)
    current = {k: scanned[k].sha256 for k in partitions if k in scanned}
    missing = len(partitions) - len(current)
    fingerprint = expected_fingerprint(embedder)
    stale = stale_documents(current, milvus.document_states(), fingerprint)
    summary = (f"checked {len(current)} documents (fingerprint {fingerprint}) in {time.perf_counter() - started:.2f} s: "
               f"{len(stale)} changed or never indexed, {missing} deleted (left to the sensor)")
    context.log.info(summary)
    if not stale:
        return SkipReason(f"nothing to re-index: {summary}")
    stamp = context.scheduled_execution_time.strftime("%Y-%m-%d")
    tokens = {k: f"{current[k][:16]}:{fingerprint}" for k in stale}
    return batched_run_requests([k for k in partitions if k in current], stale, tokens, f"nightly-{stamp}-",
                                {"trigger": "nightly_reindex", "docplatform/nightly_checked": str(len(current))})


weekly_index_audit_schedule = ScheduleDefinition(
    name="weekly_index_audit_schedule", cron_schedule="0 3 * * 0", job=audit_job, execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Sundays 03:00 UTC: the full audit (whole Milvus collection vs document state, whole graph).")
