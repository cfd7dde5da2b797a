"""A batched run's per-document bookkeeping: each step's value as {doc_id: value} (a Batch), failed documents
reported by name (observation, run tag) while the others proceed, documents skipped as unchanged, progress logs."""

import json
import time

from dagster import AssetObservation

from assets.parsing import DocumentError
from pipelines.partitions import Batch


FAILED_TAG = "docplatform/failed_documents"


# ------------------------------------------------------------------------------------------ batches

def batch_of(context, value) -> dict:
    """{doc_id: value} for an input: a batched run passes a Batch, a one-document run the value itself."""
    if isinstance(value, Batch):
        # the IO manager loads every stored partition of the range: those of documents this run skipped as
        # unchanged are earlier runs' values, not this run's work
        skipped = unchanged_in_run(context)
        return {k: v for k, v in value.items() if k not in skipped}
    if value is None:
        return {}
    return {context.partition_keys[0]: value}


def emit(context, results: dict, failures: dict[str, str]):
    """The asset's value: the document's own value in a one-document run (raising its error), else a Batch."""
    keys = list(context.partition_keys)
    if len(keys) == 1:
        if keys[0] in failures:
            error = failures[keys[0]]
            raise DocumentError(keys[0], error.split(": ", 1)[1] if error.startswith("document ") else error)
        return results[keys[0]]
    batch = Batch(results)
    batch.kept = unchanged_in_run(context)  # their stored values stay: this run skipped them, they did not fail
    return batch


def report_failures(context, failures: dict[str, str]) -> None:
    """Each failed document: an observation on its partition (UI status) and the run's failed-documents tag."""
    if not failures or len(context.partition_keys) == 1:
        return
    for key, error in failures.items():
        context.log.warning(error)
        context.log_event(AssetObservation(asset_key=context.asset_key, partition=key,
                                           metadata={"status": "failed", "error": error[:2000]}))
    run = context.instance.get_run_by_id(context.run_id)
    merged = json.loads((run.tags if run else {}).get(FAILED_TAG, "{}")) | {k: v[:300] for k, v in failures.items()}
    context.instance.add_run_tags(context.run_id, {FAILED_TAG: json.dumps(merged)[:20000]})


UNCHANGED_TAG = "docplatform/unchanged_documents"


def unchanged_in_run(context) -> set[str]:
    """The documents this run found already indexed with the same content and stage fingerprint (skipped)."""
    run = context.instance.get_run_by_id(context.run_id)
    return set(json.loads((run.tags if run else {}).get(UNCHANGED_TAG, "[]")))


def failed_in_run(context) -> dict[str, str]:
    run = context.instance.get_run_by_id(context.run_id)
    return json.loads((run.tags if run else {}).get(FAILED_TAG, "{}"))


class Progress:
    """Documents done/total and rate, logged at most every few seconds and summarised as metadata."""

    def __init__(self, context, stage: str, total: int, unit: str = "documents"):
        self.context, self.stage, self.total, self.unit = context, stage, total, unit
        self.start = self.last = time.perf_counter()

    def __call__(self, done: int, total: int | None = None, chunks: int | None = None) -> None:
        now = time.perf_counter()
        if now - self.last < 5 and done < (total or self.total):
            return
        self.last = now
        rate = f", {chunks / (now - self.start):.1f} chunks/s" if chunks else ""
        self.context.log.info(f"{self.stage}: {done}/{total or self.total} {self.unit}{rate}")

    def metadata(self, done: int, chunks: int | None = None) -> dict:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        out = {"documents_done": done, "documents_total": self.total, "seconds": round(elapsed, 3),
               "documents_per_s": round(done / elapsed, 2)}
        if chunks is not None:
            out["chunks_per_s"] = round(chunks / elapsed, 2)
        return out
