"""The Dagster instance on PostgreSQL (dagster.postgres.yaml) while its server restarts: a PostgreSQL server of the
test's own (initdb in a temporary folder, the same binaries as .ci/start_postgres.sh; the shared test server is never
touched) restarted between runs, restarted during a run, and down when a run starts. dagster-postgres opens a new
connection per operation (NullPool) and retries a failed connection 5 times with exponential backoff (~10 s in all):
a planned restart (SIGTERM: queries in flight finish, new connections wait) shorter than that is ridden out, a
server down at a run's launch fails it clearly before any step; nothing stored before is lost and a later run
succeeds. (A crash or fast shutdown cuts a query in flight, which dagster-postgres does not retry: see README.)"""

import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg2
import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance
from dagster_postgres.utils import DagsterPostgresException

from assets.ingestion import GRAPH_PENDING
from pipelines.definitions import build_defs
from pipelines.partitions import DOCUMENTS_PARTITIONS_NAME
from resources import DocumentSource, MilvusStore
from resources.graph_store import GraphStore
from tests.platform_harness import QUIET, failure_message, free_port

REPO = Path(__file__).resolve().parent.parent
DOCS = ["infrastructure-overview.md", "oncall-handbook.txt", "security-policy.html", "backup-policy.md"]


def _pg_bin() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not versions:
        pytest.fail("PostgreSQL binaries not found (install the postgresql package, see .ci/start_postgres.sh)")
    return versions[-1]


class PostgresServer:
    """A throwaway PostgreSQL server (trust auth, loopback) that the test stops and starts."""

    def __init__(self):
        self.bin, self.port = _pg_bin(), free_port()
        self.root = Path(tempfile.mkdtemp(prefix="docplatform-pg-restart-"))  # /tmp: reachable by the postgres user
        self.data = self.root / "data"
        self.runas = []
        if os.getuid() == 0:  # initdb refuses root: run the server as the postgres user
            os.chmod(self.root, 0o755)
            shutil.chown(self.root, "postgres")
            self.runas = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(self.runas + [str(self.bin / tool), *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                  "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root}", "start")

    def stop(self, mode: str = "fast") -> None:
        """fast: active sessions are cut; smart: what SIGTERM does (a planned restart, e.g. a pod replaced): new
        connections are refused at once, queries in flight finish first."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.root, ignore_errors=True)

    def query(self, sql: str, *params) -> list[tuple]:
        with psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="dagster") as conn, \
                conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()


def _restart_when(instance, step_key: str, server: PostgresServer, down_s: float, seen: list, timeout_s: float = 120):
    """Stop the server once a new run (not in seen) has started step_key, keep it down for down_s, start it again."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        runs = instance.get_runs(limit=1)
        if runs and runs[0].run_id not in seen and any(
                r.event_log_entry.step_key == step_key for r in instance.get_records_for_run(
                    runs[0].run_id, of_type=DagsterEventType.STEP_START).records):
            server.stop("smart")
            time.sleep(down_s)
            server.start()
            seen.append(runs[0].run_id)
            return
        time.sleep(0.1)


@pytest.mark.slow
def test_postgres_storage_restarts_between_and_during_runs(tmp_path, docs_dir, monkeypatch):
    server = PostgresServer()
    try:
        server.start()
        admin = psycopg2.connect(host="127.0.0.1", port=server.port, user="postgres", dbname="postgres")
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("CREATE DATABASE dagster")
        admin.close()
        home = tmp_path / "home"
        home.mkdir()
        shutil.copy(REPO / "dagster.postgres.yaml", home / "dagster.yaml")
        for key, value in {"USERNAME": "postgres", "PASSWORD": "", "HOST": "127.0.0.1", "PORT": str(server.port),
                           "DB": "dagster"}.items():
            monkeypatch.setenv(f"DAGSTER_PG_{key}", value)
        (docs_dir / "backup-policy.md").write_text("# Backup Policy\n\nThe Data Team restores billing-db monthly.\n")
        milvus = MilvusStore(uri=str(tmp_path / "milvus.db"))
        defs = build_defs(documents=DocumentSource(root=str(docs_dir)), milvus=milvus,
                          graph_store=GraphStore(path=str(tmp_path / "graph.lbug")))
        job = defs.resolve_job_def("ingest_job")

        with DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            instance.add_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME, DOCS)

            def ingest(key):
                return job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False,
                                              run_config=QUIET)

            first = ingest(DOCS[0])
            assert first.success, failure_message(first)
            events_first = len(instance.all_logs(first.run_id))

            # 1. restarted between two runs: the next run (same instance object, new connections) just works
            server.stop()
            server.start()
            second = ingest(DOCS[1])
            assert second.success, failure_message(second)

            # 2. restarted (SIGTERM, down 2 s) while a run is in its chunk_vectors step: the event writes are retried
            seen = [r.run_id for r in instance.get_runs()]
            restart = threading.Thread(target=_restart_when, args=(instance, "chunk_vectors", server, 2.0, seen))
            restart.start()
            third = ingest(DOCS[2])
            restart.join()
            assert seen[-1] == third.run_id, "the server was not restarted during the run"
            assert third.success, failure_message(third)
            # its events, those written during the outage included, are all stored: start to success, 7 steps
            stored = [e.dagster_event.event_type for e in instance.all_logs(third.run_id) if e.dagster_event]
            assert {DagsterEventType.RUN_START, DagsterEventType.ASSET_MATERIALIZATION,
                    DagsterEventType.RUN_SUCCESS} <= set(stored)
            assert stored.count(DagsterEventType.STEP_SUCCESS) == stored.count(DagsterEventType.STEP_START) == 7

            # 3. down when a run starts: creating the run fails after dagster-postgres' retries, before any step ran
            server.stop()
            started = time.monotonic()
            with pytest.raises(DagsterPostgresException, match="too many retries for DB connection"):
                ingest(DOCS[3])
            assert time.monotonic() - started > 2  # it retried with backoff before giving up
            assert DOCS[3] not in milvus.document_states()  # nothing of the document was written anywhere

            # back up: nothing stored before was lost, and the run succeeds
            server.start()
            assert len(instance.all_logs(first.run_id)) == events_first
            fourth = ingest(DOCS[3])
            assert fourth.success, failure_message(fourth)
            assert instance.get_materialized_partitions(AssetKey("documents_indexed")) == set(DOCS)
            assert {r.status.value for r in instance.get_runs()} == {"SUCCESS"}

        # straight from PostgreSQL: four successful runs, every document partition, every document's materialization
        assert sorted(server.query("SELECT status FROM runs")) == [("SUCCESS",)] * 4
        assert sorted(r[0] for r in server.query(
            "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = %s", DOCUMENTS_PARTITIONS_NAME)) \
            == sorted(DOCS)
        states = milvus.document_states()
        assert set(states) == set(DOCS) and not any(s["fingerprint"].startswith(GRAPH_PENDING) for s in states.values())
    finally:
        server.close()
