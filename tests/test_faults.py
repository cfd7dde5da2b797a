"""Faults of external services mid-run, on real servers stopped and started by the test: Milvus (milvus-lite server)
restarting during a run is ridden out by retries; Milvus down for good fails the run clearly after them; nothing
already indexed is removed, and a later run recovers."""

import socket
import subprocess
import threading
import time

import pytest

from tests.platform_harness import Platform, after_first_step_retry, failure_message, free_port


class MilvusServer:
    """`milvus-lite server` on a fixed port and data folder, stopped and started again by the test."""

    def __init__(self, root):
        self.root, self.port, self.proc = root, free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self):
        log = (self.root / "milvus-server.log").open("a")
        self.proc = subprocess.Popen(["milvus-lite", "server", "--data-dir", str(self.root / "milvus-data"),
                                      "--host", "127.0.0.1", "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            assert self.proc.poll() is None, (self.root / "milvus-server.log").read_text()[-2000:]
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.3)
        raise AssertionError("milvus-lite server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()  # as a crash or a node loss would
            self.proc.wait(timeout=30)


def _count_once_ready(platform, doc_id: str, timeout_s: float = 60) -> int:
    """The document's vector count, once the restarted server answers queries (its port opens a little earlier)."""
    from pymilvus.exceptions import MilvusException

    deadline = time.time() + timeout_s
    while True:
        try:
            return platform.count(doc_id)
        except MilvusException:
            if time.time() > deadline:
                raise
            time.sleep(1)


@pytest.mark.slow
def test_milvus_restart_mid_run_is_retried_and_milvus_down_fails_clearly(tmp_path, docs_dir, monkeypatch):
    from resources import MilvusStore

    monkeypatch.setattr("assets.ingestion.MILVUS_STEP_BACKOFF_S", 1.0)  # step retries after 1, 2, 4 s
    server = MilvusServer(tmp_path)
    server.start()
    store = MilvusStore(uri=server.uri, retries=2, backoff_s=0.5, timeout_s=2)
    try:
        with Platform.create(tmp_path, docs_dir, milvus=store) as platform:
            platform.milvus = store
            platform.add("infrastructure-overview.md", "oncall-handbook.txt", "security-policy.html")
            assert platform.ingest("infrastructure-overview.md").success
            indexed = platform.count("infrastructure-overview.md")
            assert indexed > 0

            # Milvus dies; a run starts; Milvus comes back (same data) once the step has failed and waits for its
            # retry: the retries ride it out
            server.stop()
            before = {r.run_id for r in platform.instance.get_runs()}
            restart = threading.Thread(target=after_first_step_retry, args=(platform.instance, before, server.start, 300))
            restart.start()
            result = platform.ingest("oncall-handbook.txt")
            restart.join()
            assert result.success, failure_message(result)
            restarts = [e for e in result.all_events if e.event_type_value == "STEP_RESTARTED"]
            assert restarts and all(e.step_key == "chunk_vectors" for e in restarts)
            assert platform.count("oncall-handbook.txt") > 0 and platform.count("infrastructure-overview.md") == indexed

            # Milvus down for good: every retry fails, then the run fails naming Milvus; no state recorded
            server.stop()
            result = platform.ingest("security-policy.html")
            assert not result.success
            message = failure_message(result)
            assert "chunk_vectors" in [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
            assert f"Milvus at {server.uri} failed on all 4 tries of this step" in message, message
            assert len([e for e in result.all_events if e.event_type_value == "STEP_RESTARTED"]) == 3
            assert "security-policy.html" not in platform.milvus.document_states()

            # back up: nothing indexed before was removed, and the next run indexes the document
            server.start()
            assert _count_once_ready(platform, "infrastructure-overview.md") == indexed
            assert platform.ingest("security-policy.html").success
            assert platform.count("security-policy.html") > 0
    finally:
        server.stop()
