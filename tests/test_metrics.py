"""The Prometheus exporter (python -m pipelines.metrics), scraped over loopback after a real ingestion: every value
matches what the stores hold."""

import os
import subprocess
import sys
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from resources.llm import AdapterRegistry
from tests.platform_harness import free_port

from resources.documents import SAMPLE_CORPUS

SAMPLE_COUNT = sum(1 for p in SAMPLE_CORPUS.iterdir() if p.is_file())  # the bundled sample documents

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


def _scrape(url: str, proc) -> dict:
    deadline = time.time() + 120
    while True:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        try:
            text = requests.get(url, timeout=60).text
            break
        except requests.ConnectionError:
            assert time.time() < deadline, "the exporter did not start"
            time.sleep(0.5)
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items())) + "}"
                                 if sample.labels else "")
            values[key] = sample.value
    return values


@pytest.mark.slow
def test_exporter_serves_values_that_match_the_stores(platform, tmp_path):
    (platform.docs / "broken.pdf").write_bytes(b"this is not a pdf at all")
    keys = sorted(p.name for p in platform.docs.iterdir())
    platform.add(*keys)
    result = platform.ingest_batch(keys)
    assert result.success
    # a later edit, not ingested yet: pending, with a lag
    edited = platform.docs / "oncall-handbook.txt"
    edited.write_text(edited.read_text() + "\nA new paragraph about escalation.\n")
    os.utime(edited, (time.time() - 120, time.time() - 120))
    registry = AdapterRegistry(root=str(tmp_path / "adapters"))
    registry.family_dir.mkdir(parents=True)
    registry.record_deployment(version="v0003", status="deployed")

    states = platform.milvus.document_states()
    with platform.milvus.client() as client:
        vectors = platform.milvus.count(client)
    from resources.graph_store import GraphStore

    with GraphStore(path=str(platform.root / "graph.lbug")).session() as graph:
        stats = graph.stats()

    port = free_port()
    env = os.environ | {"DAGSTER_HOME": str(platform.root / "dagster"), "DOCPLATFORM_DATA_DIR": str(tmp_path / "data"),
                        "DOCPLATFORM_DOCUMENTS_DIR": str(platform.docs), "DOCPLATFORM_MILVUS_URI": platform.milvus.uri,
                        "DOCPLATFORM_GRAPH_PATH": str(platform.root / "graph.lbug"),
                        "DOCPLATFORM_ADAPTER_DIR": registry.root}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.metrics", "--port", str(port), "--host", "127.0.0.1",
                             ], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        values = _scrape(f"http://127.0.0.1:{port}/metrics", proc)
        again = _scrape(f"http://127.0.0.1:{port}/metrics", proc)  # counters read incrementally: not counted twice
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert values["docplatform_store_up{store=dagster}"] == 1 and values["docplatform_store_up{store=graph}"] == 1
    assert values["docplatform_documents_processed_total"] == SAMPLE_COUNT == again["docplatform_documents_processed_total"]
    assert values["docplatform_chunks_processed_total"] == sum(s["chunks"] for s in states.values()) == vectors
    assert values["docplatform_failures_total{stage=raw_documents}"] == 1
    assert values["docplatform_failures_total{stage=chunk_vectors}"] == 0
    assert values["docplatform_documents_indexed"] == len(states) == SAMPLE_COUNT
    assert values["docplatform_chunks_indexed"] == vectors
    # a milvus-lite file is held by one process at a time: its size comes from the state table, not a Milvus count
    assert "docplatform_index_vectors" not in values and "docplatform_store_up{store=milvus}" not in values
    assert values["docplatform_documents_in_folder"] == SAMPLE_COUNT + 1  # and broken.pdf
    assert values["docplatform_documents_pending"] == 2  # the edited document and the broken one
    assert 100 < values["docplatform_ingestion_lag_seconds"] < 3600
    assert values["docplatform_graph_entities"] == stats["entities"] > 0
    assert all(values[f"docplatform_graph_relations{{type={kind}}}"] == n for kind, n in stats["relations"].items())
    assert values["docplatform_adapter_served{version=v0003}"] == 3
