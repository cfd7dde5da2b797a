"""Schedules: the nightly re-index of every known document."""

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, SkipReason, schedule

from pipelines.partitions import DOCUMENTS_PARTITIONS_NAME
from pipelines.jobs import ingest_job
from resources.documents import DocumentSource


@schedule(cron_schedule="0 2 * * *", job=ingest_job, execution_timezone="UTC",
          default_status=DefaultScheduleStatus.RUNNING,
          description="Nightly re-index: re-runs every document partition (idempotent; unchanged chunks are not re-embedded).")
def nightly_reindex_schedule(context: ScheduleEvaluationContext, documents: DocumentSource):
    known = set(context.instance.get_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME))
    if not known:
        return SkipReason("no document partitions yet; the documents sensor registers them")
    # partitions whose file is gone are purged by the sensor, not re-run (their run could only fail)
    present = {key for key in known if documents.path_for(key).is_file()}
    if missing := sorted(known - present):
        context.log.info(f"not re-indexing {len(missing)} deleted document(s): {', '.join(missing[:20])}")
    keys = sorted(present)
    if not keys:
        return SkipReason("every registered document has been deleted; the documents sensor purges them")
    stamp = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [RunRequest(partition_key=key, run_key=f"nightly-{stamp}-{key}", tags={"trigger": "nightly_reindex"}) for key in keys]
