"""The real automation path: `dagster dev` (webserver + daemon) with the documents sensor running by default.

The sensor registers the folder's documents and the daemon's run queue executes the runs one at a time
(embedded-store tag limit); a deleted and an added file then produce a purge run and an ingest run.
"""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import requests

from resources import MilvusStore
from tests.platform_harness import free_port, stop_process_group

REPO = Path(__file__).resolve().parent.parent
RUNS = """{ runsOrError { ... on Runs { results { jobName status tags { key value } } } } }"""


def runs(url: str) -> list[tuple[str, str, str]]:
    try:
        body = requests.post(f"{url}/graphql", json={"query": RUNS}, timeout=20).json()
    except (requests.ConnectionError, requests.Timeout, ValueError):
        return []
    results = (body.get("data") or {}).get("runsOrError", {}).get("results", [])
    out = []
    for r in results:
        tags = {t["key"]: t["value"] for t in r["tags"]}
        # a one-document run names its partition; a batched run the first and last of its partition range
        key = tags.get("dagster/partition") or "..".join(
            tags[k] for k in ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end") if k in tags)
        out.append((r["jobName"], r["status"], key))
    return out


def covered(key: str, keys: set[str]) -> set[str]:
    """The documents a run covered: partitions are registered in sorted order, so a range is a sorted slice."""
    if ".." not in key:
        return {key}
    start, end = key.split("..")
    return {k for k in keys if start <= k <= end}


def wait_for(url: str, predicate, timeout: float, log: Path):
    deadline = time.time() + timeout
    while time.time() < deadline:
        current = runs(url)
        if predicate(current):
            return current
        assert not any(status == "FAILURE" for _, status, _ in current), (current, log.read_text()[-3000:])
        time.sleep(1)
    raise AssertionError(f"timed out; runs: {runs(url)}\n{log.read_text()[-3000:]}")


def test_sensor_and_daemon_ingest_and_purge(tmp_path, docs_dir):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    data = tmp_path / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # the sensor every 5 s rather than 30: the folder change below is seen within seconds, not half a minute
    env = os.environ | {"DAGSTER_HOME": str(home), "DOCPLATFORM_DATA_DIR": str(data),
                        "DOCPLATFORM_DOCUMENTS_DIR": str(docs_dir), "DOCPLATFORM_SENSOR_INTERVAL_S": "5"}
    log = tmp_path / "dagster-dev.log"
    proc = subprocess.Popen(["dagster", "dev", "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
                            cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        keys = {p.name for p in docs_dir.iterdir()}
        done = wait_for(url, lambda rs: set().union(*[covered(k, keys) for j, s, k in rs
                                                       if j == "ingest_job" and s == "SUCCESS"]) == keys, 420, log)
        assert len(done) == 1, done  # the five new documents: one batched run

        (docs_dir / "team-charter.docx").unlink()
        (docs_dir / "backup-policy.md").write_text("# Backup Policy\n\nThe Data Team restores billing-db every month.\n")
        wait_for(url, lambda rs: ("purge_documents_job", "SUCCESS", "") in rs
                 and ("ingest_job", "SUCCESS", "backup-policy.md") in rs, 240, log)
    finally:
        stop_process_group(proc, signal.SIGINT)

    store = MilvusStore(uri=str(data / "milvus.db"))
    with store.client() as client:
        assert store.count(client, "team-charter.docx") == 0
        assert store.count(client, "backup-policy.md") > 0
        assert store.doc_ids(client) == (keys - {"team-charter.docx"}) | {"backup-policy.md"}
