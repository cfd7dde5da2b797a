"""A Milvus server URI by config: `milvus-lite server` serves several processes at once."""

import socket
import subprocess
import sys
import time

import pytest

from tests.platform_harness import Platform, failure_message, free_port


@pytest.fixture
def milvus_server(tmp_path):
    port = free_port()
    log = (tmp_path / "milvus-server.log").open("w")
    proc = subprocess.Popen(
        ["milvus-lite", "server", "--data-dir", str(tmp_path / "milvus-data"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline:
        assert proc.poll() is None, (tmp_path / "milvus-server.log").read_text()
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:  # the gRPC server can linger on open streams
        proc.kill()
        proc.wait(timeout=15)


def test_ingest_into_milvus_server_shared_by_processes(tmp_path, docs_dir, milvus_server):
    from resources import MilvusStore

    store = MilvusStore(uri=milvus_server)
    with Platform.create(tmp_path, docs_dir, milvus=store) as platform:
        platform.milvus = store
        results = platform.ingest_all()
        assert all(r.success for r in results.values()), {k: failure_message(r) for k, r in results.items()}
        expected = sum(len(r.output_for_node("document_chunks")) for r in results.values())
        with store.client() as client:  # this process keeps a connection open ...
            assert store.count(client) == expected
            # ... while another process reads the same collection
            other = subprocess.run(
                [sys.executable, "-c",
                 "import sys; from resources import MilvusStore; s = MilvusStore(uri=sys.argv[1]);\n"
                 "with s.client() as c: print(s.count(c))", milvus_server],
                capture_output=True, text=True, timeout=120)
            assert other.returncode == 0, other.stderr[-2000:]
            assert int(other.stdout.strip().splitlines()[-1]) == expected
