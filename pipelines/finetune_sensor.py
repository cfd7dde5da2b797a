"""Re-fine-tune when the corpus moved: requests finetune_job when the documents the deployed adapter's dataset was
built from changed (content hash), went away, or new ones were indexed, by more than a share of its source chunks.

Off by default (STOPPED: it shows in the UI and can be started there); DOCPLATFORM_REFINETUNE_SENSOR=on starts it,
DOCPLATFORM_REFINETUNE_SHARE (default 0.2) sets the share. Chunks are weighted per document from the index's
per-document state (content sha256, chunk count), which is read without opening Milvus.
"""

import json
import os
from pathlib import Path

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SkipReason, sensor

from assets.finetune.dataset import SOURCE_DOCUMENTS
from pipelines.jobs import finetune_job
from resources.llm import AdapterRegistry
from resources.milvus import MilvusStore


def refinetune_share() -> float:
    return float(os.environ.get("DOCPLATFORM_REFINETUNE_SHARE", "0.2"))


def changed_share(dataset_sources: dict[str, dict], index_states: dict[str, dict]) -> tuple[float, dict]:
    """Share of the dataset's source chunks whose document changed or left, plus chunks of documents new since."""
    total = sum(int(s.get("chunks", 0)) for s in dataset_sources.values()) or 1
    changed = [d for d, s in dataset_sources.items()
               if d not in index_states or index_states[d].get("sha256") != s.get("sha256")]
    added = [d for d in index_states if d not in dataset_sources]
    moved = (sum(int(dataset_sources[d].get("chunks", 0)) for d in changed)
             + sum(int(index_states[d].get("chunks", 0)) for d in added))
    return moved / total, {"changed_or_removed": sorted(changed), "added": sorted(added), "source_chunks": total}


@sensor(job=finetune_job, minimum_interval_seconds=3600,
        default_status=DefaultSensorStatus.RUNNING if os.environ.get("DOCPLATFORM_REFINETUNE_SENSOR") == "on"
        else DefaultSensorStatus.STOPPED,
        description="Requests finetune_job when the corpus moved by more than DOCPLATFORM_REFINETUNE_SHARE of the "
                    "deployed adapter's source chunks (off unless DOCPLATFORM_REFINETUNE_SENSOR=on).")
def corpus_moved_refinetune_sensor(context: SensorEvaluationContext, adapter_registry: AdapterRegistry,
                                   milvus: MilvusStore):
    active = adapter_registry.deployments().get("active")
    if not active:
        return SkipReason("no adapter is deployed yet: launch finetune_job once")
    manifest = adapter_registry.manifest(active)
    sources_file = Path(manifest.get("dataset", {}).get("path", "")) / SOURCE_DOCUMENTS
    if not sources_file.is_file():
        return SkipReason(f"the deployed adapter {active}'s dataset has no {SOURCE_DOCUMENTS}; nothing to compare")
    share, details = changed_share(json.loads(sources_file.read_text()), milvus.document_states())
    threshold = refinetune_share()
    if share <= threshold:
        return SkipReason(f"{share:.1%} of {active}'s source chunks changed (threshold {threshold:.0%})")
    fingerprint = manifest.get("dataset", {}).get("fingerprint", "")
    return RunRequest(run_key=f"refinetune-{active}-{fingerprint}-{round(share, 3)}",
                      tags={"docplatform/trigger": "corpus_moved", "docplatform/changed_share": f"{share:.3f}",
                            "docplatform/deployed_adapter": active})
