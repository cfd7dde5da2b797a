"""Dagster run/event/schedule storage on a real PostgreSQL server (dagster-postgres).

.ci/run starts the server (.ci/start_postgres.sh); DOCPLATFORM_PG_HOST/PORT/USER point elsewhere.
"""

import os
import shutil
import uuid
from pathlib import Path

import psycopg2
import pytest
from dagster import DagsterInstance

from pipelines.partitions import DOCUMENTS_PARTITIONS_NAME
from pipelines.definitions import build_defs
from resources import DocumentSource, MilvusStore
from tests.platform_harness import QUIET

REPO = Path(__file__).resolve().parent.parent
PG = {
    "host": os.environ.get("DOCPLATFORM_PG_HOST", "127.0.0.1"),
    "port": int(os.environ.get("DOCPLATFORM_PG_PORT", "55432")),
    "user": os.environ.get("DOCPLATFORM_PG_USER", "postgres"),
    "password": os.environ.get("DOCPLATFORM_PG_PASSWORD", ""),
}


@pytest.fixture
def pg_database():
    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG['host']}:{PG['port']} (start it with .ci/start_postgres.sh): {exc}")
    admin.autocommit = True
    name = f"dagster_test_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_ingest_job_on_postgres_storage(tmp_path, docs_dir, pg_database, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.postgres.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_USERNAME", PG["user"])
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", PG["password"])
    monkeypatch.setenv("DAGSTER_PG_HOST", PG["host"])
    monkeypatch.setenv("DAGSTER_PG_PORT", str(PG["port"]))
    monkeypatch.setenv("DAGSTER_PG_DB", pg_database)
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    from resources.graph_store import GraphStore

    defs = build_defs(documents=DocumentSource(root=str(docs_dir)), milvus=MilvusStore(uri=str(tmp_path / "m.db")),
                      graph_store=GraphStore(path=str(tmp_path / "graph.lbug")))
    with DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        instance.add_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME, ["infrastructure-overview.md"])
        result = defs.resolve_job_def("ingest_job").execute_in_process(
            partition_key="infrastructure-overview.md", instance=instance, run_config=QUIET)
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        assert run.is_success and run.tags["dagster/partition"] == "infrastructure-overview.md"
        from dagster import AssetKey

        materialized = instance.get_materialized_partitions(AssetKey("chunk_vectors"))
        assert materialized == {"infrastructure-overview.md"}

    with psycopg2.connect(dbname=pg_database, **PG) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs WHERE run_id = %s", (result.run_id,))
        assert cur.fetchone()[0] == 1
        cur.execute("SELECT partition FROM dynamic_partitions WHERE partitions_def_name = %s", (DOCUMENTS_PARTITIONS_NAME,))
        assert [row[0] for row in cur.fetchall()] == ["infrastructure-overview.md"]
        cur.execute("SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_CHECK_EVALUATION'",
                    (result.run_id,))
        assert cur.fetchone()[0] >= 5
