"""Schedules: the nightly re-index of every known document."""

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, SkipReason, schedule

from pipelines.partitions import DOCUMENTS_PARTITIONS_NAME
from pipelines.jobs import ingest_job


@schedule(cron_schedule="0 2 * * *", job=ingest_job, execution_timezone="UTC",
          default_status=DefaultScheduleStatus.RUNNING,
          description="Nightly re-index: re-runs every document partition (idempotent; unchanged chunks are not re-embedded).")
def nightly_reindex_schedule(context: ScheduleEvaluationContext):
    keys = sorted(context.instance.get_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME))
    if not keys:
        return SkipReason("no document partitions yet; the documents sensor registers them")
    stamp = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [RunRequest(partition_key=key, run_key=f"nightly-{stamp}-{key}", tags={"trigger": "nightly_reindex"}) for key in keys]
