"""Partitioning shared by every per-document stage: one dynamic partition per document, run in batches.

A run covers one document (partition_key) or a range of document partitions (the backfill policy
below, or a sensor/nightly request carrying the range tags): the assets work on
context.partition_keys, and one bad document in a batch is reported, not raised (see README "Scale").
"""

import os
import pickle
from typing import Any

from dagster import BackfillPolicy, DynamicPartitionsDefinition, FilesystemIOManager, InputContext, OutputContext
from dagster._core.storage.fs_io_manager import PickledObjectFilesystemIOManager
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

DOCUMENTS_PARTITIONS_NAME = "documents"
documents_partitions = DynamicPartitionsDefinition(name=DOCUMENTS_PARTITIONS_NAME)

# Documents per run: large enough to amortise run start-up, model load and Milvus round trips,
# small enough that a run's intermediate values fit in memory (see bench/ingest.py for the figures).
MAX_DOCUMENTS_PER_RUN = int(os.environ.get("DOCPLATFORM_DOCUMENTS_PER_RUN", "200"))
documents_backfill_policy = BackfillPolicy.multi_run(max_partitions_per_run=MAX_DOCUMENTS_PER_RUN)


def range_tags(start: str, end: str) -> dict[str, str]:
    """Run tags that make one run cover the document partitions start..end (inclusive, partition order)."""
    return {ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end}


def contiguous_batches(ordered_keys: list[str], wanted: set[str], max_size: int = MAX_DOCUMENTS_PER_RUN) -> list[list[str]]:
    """Split the wanted keys into runs of keys adjacent in partition order, at most max_size each.

    A range run covers every partition between its ends, so a batch never spans a key that is not wanted.
    """
    batches: list[list[str]] = []
    current: list[str] = []
    for key in ordered_keys:
        if key in wanted and len(current) < max_size:
            current.append(key)
            continue
        if current:
            batches.append(current)
        current = [key] if key in wanted else []
    if current:
        batches.append(current)
    return batches


class Batch(dict):
    """{partition_key: value} for the documents of a multi-partition run that produced a value.

    The IO manager stores each value under its own partition, so later single-document runs and
    consumers of every partition (fine-tune dataset) read them as if each had its own run. A document
    of the batch missing from it (it failed) gets its stale stored value removed, unless it is in `kept` (the run
    skipped it as already indexed: its stored value is current).
    """

    kept: set = frozenset()


class _BatchPickleIOManager(PickledObjectFilesystemIOManager):
    def handle_output(self, context: OutputContext, obj: Any):
        if not (isinstance(obj, Batch) and context.has_asset_partitions):
            return super().handle_output(context, obj)
        paths = self._get_paths_for_partitions(context)
        for key, path in paths.items():
            if key in obj:
                self.make_directory(path.parent)
                with path.open("wb") as handle:
                    pickle.dump(obj[key], handle, protocol=pickle.HIGHEST_PROTOCOL)
            elif path.exists() and key not in getattr(obj, "kept", ()):  # kept: skipped as unchanged, not failed
                path.unlink()
        context.add_output_metadata({"stored_partitions": len(obj), "missing_partitions": len(paths) - len(obj)})

    def load_input(self, context: InputContext) -> Any:
        if not (context.has_asset_key and context.has_asset_partitions) or len(context.asset_partition_keys) <= 1:
            return super().load_input(context)
        if (context.definition_metadata or {}).get("allow_missing_partitions"):
            return super().load_input(context)
        # a range of partitions inside one batched run: the documents that failed upstream are absent
        batch = Batch()
        for key, path in self._get_paths_for_partitions(context).items():
            if path.exists():
                with path.open("rb") as handle:
                    batch[key] = pickle.load(handle)
        return batch


class BatchFilesystemIOManager(FilesystemIOManager):
    """The default filesystem pickle IO manager, plus per-partition storage of batched (Batch) outputs."""

    def create_io_manager(self, context) -> _BatchPickleIOManager:
        base_dir = self.base_dir or context.instance.storage_directory()
        return _BatchPickleIOManager(base_dir=base_dir)
