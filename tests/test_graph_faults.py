"""Graph store faults during the ingestion job's knowledge_graph step: the embedded ladybug file held by a real
second process (released during the step's retries, then held for good), and Neo4j unreachable (the real neo4j
driver against a closed local port). Retries with backoff, then a clear failure naming the store; nothing already
stored is removed; the documents stay pending, and a later run writes them."""

import subprocess
import sys
import threading
import time

import pytest

from assets.ingestion import GRAPH_PENDING
from resources.graph_store import GraphStore, GraphStoreUnavailable
from pipelines.sensors import purge_run_config
from tests.platform_harness import QUIET, Platform, after_first_step_retry, failure_message, free_port

A, B, C = "infrastructure-overview.md", "oncall-handbook.txt", "security-policy.html"


class Holder:
    """Another process that opens the embedded graph file and keeps it (ladybug admits one process per file)."""

    def __init__(self, path):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys, ladybug; db = ladybug.Database(sys.argv[1]); print('held', flush=True); "
                                   "sys.stdin.read(); db.close()", str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "held"

    def release(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


def _restarts(result) -> list[str]:
    return [e.step_key for e in result.all_events if e.event_type_value == "STEP_RESTARTED"]


def _facts(store: GraphStore, doc_id: str) -> tuple:
    with store.session() as graph:
        facts = graph.document_facts(doc_id)
    return (sorted(e["id"] for e in facts["entities"]),
            sorted((r["source"], r["type"], r["target"], r["chunk_id"]) for r in facts["relations"]))


@pytest.mark.slow
def test_graph_store_held_by_another_process(tmp_path, docs_dir, monkeypatch):
    monkeypatch.setattr("assets.knowledge_graph.assets.GRAPH_STEP_RETRIES", 2)
    monkeypatch.setattr("assets.knowledge_graph.assets.GRAPH_STEP_BACKOFF_S", 0.5)  # step retries after 0.5, 1 s
    path = tmp_path / "graph.lbug"
    store = GraphStore(path=str(path), lock_timeout_s=1.0)  # each try waits 1 s for the file
    with Platform.create(tmp_path, docs_dir, graph_store=store) as platform:
        platform.add(A, B, C)
        assert platform.ingest(A).success
        facts_a, vectors_a = _facts(store, A), platform.count(A)
        assert facts_a[0] and vectors_a > 0

        # held when the run reaches the graph; released once the step waits for its first retry: ridden out
        holder = Holder(path)
        before = {r.run_id for r in platform.instance.get_runs()}
        release = threading.Thread(target=after_first_step_retry, args=(platform.instance, before, holder.release, 120, 0.2))
        release.start()
        try:
            result = platform.ingest(B)
        finally:
            release.join()
            holder.release()
        assert result.success, failure_message(result)
        assert _restarts(result) and set(_restarts(result)) == {"knowledge_graph"}
        facts_b = _facts(store, B)
        assert facts_b[0]

        # held for good: every try waits, then the run fails naming the file; the document stays pending
        holder = Holder(path)
        try:
            result = platform.ingest(C)
        finally:
            holder.release()
        assert not result.success
        message = failure_message(result)
        assert f"graph database {path} failed on all 3 tries of this step" in message, message
        assert "held by another process" in message, message
        assert _restarts(result) == ["knowledge_graph", "knowledge_graph"]
        assert platform.milvus.document_states()[C]["fingerprint"].startswith(GRAPH_PENDING)
        # nothing already stored was removed: the other documents' facts and vectors are as they were
        assert _facts(store, A) == facts_a and _facts(store, B) == facts_b and platform.count(A) == vectors_a
        assert _facts(store, C) == ([], [])

        # released: the next run writes the document and makes its state final
        result = platform.ingest(C)
        assert result.success, failure_message(result)
        assert _facts(store, C)[0]
        assert not platform.milvus.document_states()[C]["fingerprint"].startswith(GRAPH_PENDING)
        assert _facts(store, A) == facts_a

        # the purge of a deleted document while the file is held: its graph step is retried, then fails saying what
        # to re-run (its vectors and state row are gone already); re-run once released, the facts go too
        purge = platform.defs.resolve_job_def("purge_documents_job")
        holder = Holder(path)
        try:
            result = purge.execute_in_process(run_config=purge_run_config([C]) | QUIET, instance=platform.instance,
                                              raise_on_error=False)
        finally:
            holder.release()
        assert not result.success
        message = failure_message(result)
        assert f"graph database {path} failed on all 3 tries" in message and "run purge_documents_job again" in message
        assert _restarts(result) == ["purge_document_graph", "purge_document_graph"]
        assert platform.count(C) == 0 and _facts(store, C)[0]
        assert purge.execute_in_process(run_config=purge_run_config([C]) | QUIET, instance=platform.instance).success
        assert _facts(store, C) == ([], []) and _facts(store, A) == facts_a


def test_neo4j_unreachable_fails_clearly_after_retries(tmp_path, docs_dir, monkeypatch):
    monkeypatch.setattr("assets.knowledge_graph.assets.GRAPH_STEP_RETRIES", 1)
    monkeypatch.setattr("assets.knowledge_graph.assets.GRAPH_STEP_BACKOFF_S", 0.2)
    uri = f"bolt://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("NEO4J_URI", uri)
    store = GraphStore(backend="neo4j", retries=2, backoff_s=0.1)
    assert store.uri == uri

    started = time.monotonic()
    with pytest.raises(GraphStoreUnavailable, match=f"Neo4j at {uri} is unreachable after 3 attempt"):
        with store.session():
            pass
    assert time.monotonic() - started >= 0.3  # it backed off (0.1 + 0.2 s) between the attempts

    with Platform.create(tmp_path, docs_dir, graph_store=store) as platform:
        platform.add(A)
        result = platform.ingest(A)
        assert not result.success
        message = failure_message(result)
        assert f"Neo4j at {uri} failed on all 2 tries of this step" in message, message
        assert "ServiceUnavailable" in message or "unreachable" in message, message
        assert _restarts(result) == ["knowledge_graph"]
        # the vectors were written before the graph step; the document stays pending, so the next run redoes it
        assert platform.count(A) > 0
        assert platform.milvus.document_states()[A]["fingerprint"].startswith(GRAPH_PENDING)
