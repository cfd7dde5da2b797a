"""Re-fine-tune sensor (issue 9 point 6): requests finetune_job once the corpus moved past the configured share of the
deployed adapter's source chunks; stopped by default."""

import json

from dagster import DefaultSensorStatus, RunRequest, SkipReason, build_sensor_context

from assets.finetune.dataset import SOURCE_DOCUMENTS
from pipelines.finetune_sensor import changed_share, corpus_moved_refinetune_sensor
from resources.llm import AdapterRegistry
from resources.milvus import MilvusStore


def _deployed(tmp_path, sources: dict) -> AdapterRegistry:
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / SOURCE_DOCUMENTS).write_text(json.dumps(sources))
    registry = AdapterRegistry(root=str(tmp_path / "adapters"))
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "adapter_model.safetensors").write_bytes(b"w")
    registry.publish(staging, {"dataset": {"path": str(dataset), "fingerprint": "f1"}, "status": "candidate"})
    registry.record_deployment(version="v0001", status="deployed")
    return registry


def _evaluate(registry, milvus):
    with build_sensor_context(resources={"adapter_registry": registry, "milvus": milvus}) as context:
        return corpus_moved_refinetune_sensor(context)


def test_sensor_requests_finetune_only_when_the_corpus_moved(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCPLATFORM_REFINETUNE_SHARE", "0.25")
    sources = {"a.md": {"sha256": "a1", "chunks": 6}, "b.md": {"sha256": "b1", "chunks": 2},
               "c.md": {"sha256": "c1", "chunks": 2}}
    registry = _deployed(tmp_path, sources)
    milvus = MilvusStore(uri=str(tmp_path / "milvus.db"))
    states = [{"doc_id": d, "sha256": s["sha256"], "fingerprint": "fp", "chunks": s["chunks"]} for d, s in sources.items()]
    milvus.set_document_states(None, states)
    assert isinstance(_evaluate(registry, milvus), SkipReason)
    # b.md edited: 2 of 10 source chunks = 20 % <= 25 %
    milvus.set_document_states(None, [dict(states[1], sha256="b2")])
    skipped = _evaluate(registry, milvus)
    assert isinstance(skipped, SkipReason) and "20.0%" in skipped.skip_message
    # plus a new document of 2 chunks: 40 % > 25 % -> finetune_job is requested
    milvus.set_document_states(None, [{"doc_id": "d.md", "sha256": "d1", "fingerprint": "fp", "chunks": 2}])
    request = _evaluate(registry, milvus)
    assert isinstance(request, RunRequest) and request.tags["docplatform/changed_share"] == "0.400"
    assert corpus_moved_refinetune_sensor.job_name == "finetune_job"


def test_sensor_is_off_by_default_and_skips_without_a_deployment(tmp_path):
    assert corpus_moved_refinetune_sensor.default_status == DefaultSensorStatus.STOPPED
    registry = AdapterRegistry(root=str(tmp_path / "adapters"))
    result = _evaluate(registry, MilvusStore(uri=str(tmp_path / "milvus.db")))
    assert isinstance(result, SkipReason) and "no adapter is deployed" in result.skip_message
    share, details = changed_share({"a": {"sha256": "1", "chunks": 4}}, {})
    assert share == 1.0 and details["changed_or_removed"] == ["a"]
