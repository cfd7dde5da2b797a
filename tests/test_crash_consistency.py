"""Crash consistency: `make run`'s job (python -m pipelines.run_main) SIGKILLed at several points, then run again:
the index and the graph converge to the documents as they are (DOCPLATFORM_FAULT_POINT, assets/faults.py)."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from assets.chunking import ChunkingConfig, chunk_elements
from assets.ingestion import GRAPH_PENDING
from assets.vector_index import expected_fingerprint
from assets.parsing import parse_records
from resources import Embedder, MilvusStore
from resources.graph_store import GraphStore

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_corpus"
OLD = "The database billing-db runs on srv-db-07 and is managed by the Data Team.\n"
NEW = "The database billing-db runs on srv-db-09 and is managed by the Data Team.\n"


def _run(home: Path, data: Path, docs: Path, fault: str | None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCPLATFORM_")} | {
        "DAGSTER_HOME": str(home), "DOCPLATFORM_DATA_DIR": str(data)}
    if fault:
        env["DOCPLATFORM_FAULT_POINT"] = fault
    return subprocess.run([sys.executable, "-m", "pipelines.run_main", "--documents", str(docs), "--ask", ""],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_runs_killed_at_each_point_converge_on_the_next_run(tmp_path):
    docs, home, data = tmp_path / "docs", tmp_path / "home", tmp_path / "data"
    docs.mkdir(), home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    for name in ("infrastructure-overview.md", "oncall-handbook.txt"):
        shutil.copy(SAMPLE / name, docs / name)
    (docs / "servers.md").write_text("# Servers\n\n" + OLD)
    store, graph_store = MilvusStore(uri=str(data / "milvus.db")), GraphStore(path=str(data / "graph.lbug"))

    # killed: mid-parse, after the vectors' upsert (before stale deletion and state), between Milvus and graph writes
    for fault in ("after_parse", "after_milvus_upsert", "before_graph_write"):
        killed = _run(home, data, docs, fault)
        assert killed.returncode == -signal.SIGKILL, (fault, killed.stdout[-2000:], killed.stderr[-3000:])
        states = store.document_states()
        assert all(s["fingerprint"].startswith(GRAPH_PENDING) for s in states.values()), (fault, states)
    # the document changes; the next run writes its new vectors and facts, and is killed before its state is final
    (docs / "servers.md").write_text("# Servers\n\n" + NEW)
    killed = _run(home, data, docs, "after_graph_write")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "3 new or changed" in killed.stdout  # nothing was recorded as done by the killed runs

    final = _run(home, data, docs, None)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    assert "3 new or changed" in final.stdout and "0 failed" in final.stdout
    # converged: nothing left to do (run before this process opens the milvus-lite file, which one process holds)
    again = _run(home, data, docs, None)
    assert again.returncode == 0 and "0 new or changed" in again.stdout, again.stdout[-2000:] + again.stderr[-2000:]

    # Milvus: per document exactly the chunks of its current content, no orphans, no leftovers of the old version
    # the command ran with the user's default embedder (the suite pins MiniLM for itself): the one recorded
    config, fingerprint = ChunkingConfig(), expected_fingerprint(Embedder(model=store.recorded_embedder().split("@")[0]))
    states = store.document_states()
    assert set(states) == {"infrastructure-overview.md", "oncall-handbook.txt", "servers.md"}
    with store.client() as client:
        assert store.doc_ids(client) == set(states)
        total = store.count(client)
        for doc_id, state in states.items():
            data_bytes = (docs / doc_id).read_bytes()
            rows = chunk_elements(doc_id, state["sha256"], parse_records(doc_id, Path(doc_id).suffix, data_bytes), config)
            stored = store.rows(client, doc_id, ["chunk_id", "doc_sha256", "text"])
            assert sorted(r["chunk_id"] for r in stored) == sorted(r["chunk_id"] for r in rows), doc_id
            assert {r["doc_sha256"] for r in stored} == {state["sha256"]}
            assert state["fingerprint"] == fingerprint and state["chunks"] == len(rows)
        assert total == sum(s["chunks"] for s in states.values())
        assert not any("srv-db-07" in r["text"] for r in store.rows(client, "servers.md", ["text"]))
    # the graph: the document's current facts only, nothing orphaned or untraceable
    with graph_store.session() as graph:
        names = {e.get("name") for e in graph.document_facts("servers.md")["entities"]}
        assert "srv-db-09" in names and "srv-db-07" not in names
        assert not graph.find_entities("srv-db-07")
        assert graph.orphan_nodes() == [] and graph.untraceable_edges() == []
