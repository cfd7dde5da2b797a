"""Overlapping requests (documents sensor, nightly schedule, manual backfill) for the same documents: the queued run
coordinator of dagster.yaml admits one embedded-store writer at a time, so their writes never interleave; a
fine-tune run (its dataset step reads milvus-lite for RAFT distractors) waits its turn like a writer."""

import shutil
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from pipelines.definitions import defs
from pipelines.sensors import purge_run_config
from pipelines.partitions import DOCUMENTS_PARTITIONS_NAME, range_tags

REPO = Path(__file__).resolve().parent.parent


def _queue(instance, job_name: str, tags: dict, status=DagsterRunStatus.QUEUED, run_config: dict | None = None):
    """A run as the webserver, sensor or schedule submits it: with the job's own tags and its code location."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    job = defs.resolve_job_def(job_name)
    location = InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name="pipelines.definitions"),
                                           location_name="docplatform")
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), job_name)
    return instance.create_run_for_job(job, tags=dict(job.tags) | tags, status=status, remote_job_origin=origin,
                                       run_config=run_config or {})


def test_queue_admits_one_ingestion_writer_at_a_time(tmp_path):
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)

        def admitted() -> set[str]:
            return {run.run_id for run in daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(), None)}

        keys = ("a.md", "b.md")
        instance.add_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME, list(keys))
        sensor = _queue(instance, "ingest_job", range_tags(*keys) | {"trigger": "documents_sensor"})
        nightly = _queue(instance, "ingest_job", range_tags(*keys) | {"trigger": "nightly_reindex"})
        backfill = _queue(instance, "ingest_job", range_tags(*keys) | {"dagster/backfill": "manual"})
        purge = _queue(instance, "purge_documents_job", {}, run_config=purge_run_config(["c.md"]))
        finetune = _queue(instance, "finetune_job", {})
        # all five queued at once: one user of the embedded stores is admitted, the oldest
        first = admitted()
        assert first == {sensor.run_id}, first
        # while it runs, the others wait, whatever started them
        instance.delete_run(sensor.run_id)
        _queue(instance, "ingest_job", range_tags(*keys) | {"trigger": "documents_sensor"}, status=DagsterRunStatus.STARTED)
        assert admitted() == set()
        assert {r.run_id for r in instance.get_runs() if r.status == DagsterRunStatus.QUEUED} == {
            nightly.run_id, backfill.run_id, purge.run_id, finetune.run_id}
