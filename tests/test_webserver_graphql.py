"""The real dagster-webserver loads workspace.yaml and its GraphQL API lists the assets and checks."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.platform_harness import free_port

REPO = Path(__file__).resolve().parent.parent

QUERY = """
{
  assetNodes {
    assetKey { path }
    groupName
    assetChecksOrError { __typename ... on AssetChecks { checks { name blocking } } }
  }
  repositoriesOrError { ... on RepositoryConnection { nodes { name jobs { name } schedules { name } sensors { name } } } }
}
"""


def test_graphql_lists_assets_checks_jobs_schedules_sensors(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    env = os.environ | {"DAGSTER_HOME": str(home), "DOCPLATFORM_DATA_DIR": str(tmp_path / "data")}
    log = (tmp_path / "webserver.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 180
        data = None
        while time.time() < deadline:
            assert proc.poll() is None, (tmp_path / "webserver.log").read_text()[-3000:]
            try:
                response = requests.post(f"{url}/graphql", json={"query": QUERY}, timeout=30)
                body = response.json()
                if response.ok and body.get("data", {}).get("assetNodes"):
                    data = body["data"]
                    break
            except (requests.ConnectionError, requests.Timeout, ValueError):
                pass
            time.sleep(2)
        assert data is not None, (tmp_path / "webserver.log").read_text()[-3000:]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()

    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    for key in ("raw_documents", "parsed_elements", "document_chunks", "chunk_vectors"):
        assert nodes[key]["groupName"] == "ingestion"
    checks = {name: {c["name"] for c in node["assetChecksOrError"].get("checks", [])} for name, node in nodes.items()}
    assert checks["document_chunks"] == {"chunk_table_valid", "junk_text_skipped"}
    assert checks["chunk_vectors"] == {"embedding_dimension_and_norm", "milvus_count_matches_chunks",
                                       "batch_documents_ok", "retrieval_quality"}
    assert all(checks[name] for name in nodes), "every asset has at least one check"
    repo = data["repositoriesOrError"]["nodes"][0]
    assert {"ingest_job", "purge_documents_job"} <= {j["name"] for j in repo["jobs"]}
    assert "nightly_reindex_schedule" in {s["name"] for s in repo["schedules"]}
    assert "documents_folder_sensor" in {s["name"] for s in repo["sensors"]}
