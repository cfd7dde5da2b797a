"""pipelines/event_log.py: a batch run's per-document materializations written in one transaction per step store the
same rows as Dagster's one-event-at-a-time path (run shard, cross-run index, the asset's latest record)."""

from dagster import (AssetExecutionContext, AssetKey, DagsterEventType, DynamicPartitionsDefinition, EventRecordsFilter,
                     MaterializeResult, asset, define_asset_job, instance_for_test, Definitions)
from dagster._core.storage.event_log.base import EventLogStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

import pipelines  # noqa: F401  (installs the batched writes)
from pipelines.partitions import range_tags

parts = DynamicPartitionsDefinition(name="docs")
KEYS = [f"doc-{i}.md" for i in range(7)]


@asset(partitions_def=parts)
def per_document(context: AssetExecutionContext):
    return MaterializeResult(metadata={"documents": len(context.partition_keys)})


@asset(partitions_def=parts, deps=[per_document])
def downstream(context: AssetExecutionContext):
    return MaterializeResult(metadata={"first": context.partition_keys[0]})


job = Definitions(assets=[per_document, downstream], jobs=[define_asset_job("batch", partitions_def=parts)]
                  ).resolve_job_def("batch")


def _stored(tmp_path, name: str, batch_size: str, monkeypatch) -> dict:
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", batch_size)
    (tmp_path / name).mkdir()
    with instance_for_test(temp_dir=str(tmp_path / name)) as instance:
        instance.add_dynamic_partitions("docs", KEYS)
        result = job.execute_in_process(instance=instance, tags=range_tags(KEYS[0], KEYS[-1]))
        assert result.success
        index = instance.get_event_records(EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION), limit=1000)
        run_shard = [e for e in instance.all_logs(result.run_id) if e.dagster_event_type == DagsterEventType.ASSET_MATERIALIZATION]
        latest = {key: instance.get_latest_materialization_event(key).dagster_event.partition
                  for key in (AssetKey("per_document"), AssetKey("downstream"))}
        materialized = {key: instance.get_materialized_partitions(key) for key in (AssetKey("per_document"), AssetKey("downstream"))}
        return {
            "index": sorted((r.asset_key.to_user_string(), r.partition_key) for r in index),
            "index_ids_follow_order": [r.storage_id for r in sorted(index, key=lambda r: r.storage_id)] == sorted(r.storage_id for r in index),
            "run_shard": sorted((e.dagster_event.asset_key.to_user_string(), e.dagster_event.partition) for e in run_shard),
            "latest": latest, "materialized": materialized,
        }


def test_batched_materializations_store_the_same_rows(tmp_path, monkeypatch):
    assert SqliteEventLogStorage.store_event_batch is not EventLogStorage.store_event_batch
    one_by_one = _stored(tmp_path, "single", "0", monkeypatch)
    batched = _stored(tmp_path, "batched", "500", monkeypatch)
    assert len(batched["index"]) == 2 * len(KEYS)
    assert batched["run_shard"] == batched["index"]
    assert batched == one_by_one
    assert set(batched["latest"].values()) <= set(KEYS)
    assert batched["materialized"][AssetKey("downstream")] == set(KEYS)
