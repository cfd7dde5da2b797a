"""The README's PostgreSQL storage path runs the whole `make run` job (python -m pipelines.run_main), not only a
storage round trip; run retries are configured in both instance files."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
from dagster._core.instance.config import dagster_instance_config

from tests.test_postgres_storage import PG, pg_database  # noqa: F401  (fixture: a fresh database on the real server)

from resources.documents import SAMPLE_CORPUS

SAMPLE_COUNT = sum(1 for p in SAMPLE_CORPUS.iterdir() if p.is_file())  # the bundled sample documents

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["dagster.yaml", "dagster.postgres.yaml"])
def test_run_retries_are_configured(tmp_path, name):
    shutil.copy(REPO / name, tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_retries"] == {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False}


@pytest.mark.slow
def test_make_run_job_on_postgres_storage(tmp_path, pg_database):  # noqa: F811
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.postgres.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCPLATFORM_")} | {
        "DAGSTER_HOME": str(home), "DOCPLATFORM_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_PG_USERNAME": PG["user"], "DAGSTER_PG_PASSWORD": PG["password"], "DAGSTER_PG_HOST": PG["host"],
        "DAGSTER_PG_PORT": str(PG["port"]), "DAGSTER_PG_DB": pg_database}
    proc = subprocess.run([sys.executable, "-m", "pipelines.run_main"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"ingested {SAMPLE_COUNT}/{SAMPLE_COUNT} changed documents" in proc.stdout and "0 failed" in proc.stdout
    assert not (home / "history").exists() and not (home / "storage" / "runs.db").exists()  # nothing on SQLite
    with psycopg2.connect(dbname=pg_database, **PG) as conn, conn.cursor() as cur:
        cur.execute("SELECT pipeline_name, status FROM runs")
        assert cur.fetchall() == [("ingest_job", "SUCCESS")]
        cur.execute("SELECT count(*) FROM dynamic_partitions")
        assert cur.fetchone()[0] == SAMPLE_COUNT
        cur.execute("SELECT count(DISTINCT partition) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
                    "AND asset_key LIKE '%chunk_vectors%'")
        assert cur.fetchone()[0] == SAMPLE_COUNT
    again = subprocess.run([sys.executable, "-m", "pipelines.run_main"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=900)
    assert again.returncode == 0 and "0 new or changed" in again.stdout, again.stdout[-2000:]
