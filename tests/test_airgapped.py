"""Air-gapped proof: `make run`'s job (python -m pipelines.run_main) inside a network namespace with only loopback.

`unshare -n` gives the process a namespace with no interface but `lo` (brought up: milvus-lite talks gRPC over
127.0.0.1). Any download at run time (hub models, pip, telemetry) would fail there, so a green run proves none.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from resources.documents import SAMPLE_CORPUS

SAMPLE_COUNT = sum(1 for p in SAMPLE_CORPUS.iterdir() if p.is_file())  # the bundled sample documents

REPO = Path(__file__).resolve().parent.parent


def _unshare_works() -> str:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "unshare/ip not installed"
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True)
    return "" if probe.returncode == 0 else f"unshare -n not permitted here: {probe.stderr.strip()}"


@pytest.mark.slow
def test_make_run_job_passes_without_network(tmp_path):
    reason = _unshare_works()
    if reason:
        pytest.skip(reason)
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCPLATFORM_")} | {
        "DAGSTER_HOME": str(home), "DOCPLATFORM_DATA_DIR": str(data),
        # nothing may be fetched: hub libraries are told they are offline, and there is no route anyway
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    # the namespace really has no way out: a connection to a public address fails before the job starts
    script = (f"ip link set lo up && "
              f"! {sys.executable} -c \"import socket; socket.create_connection(('1.1.1.1', 443), timeout=3)\" 2>/dev/null && "
              f"{sys.executable} -m pipelines.run_main")
    proc = subprocess.run(["unshare", "-n", "sh", "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert f"ingested {SAMPLE_COUNT}/{SAMPLE_COUNT} changed documents" in proc.stdout, output[-4000:]
    assert "0 failed" in proc.stdout
    assert "Milvus collection 'document_chunks'" in proc.stdout and " 0 vectors" not in proc.stdout
    assert (data / "milvus.db").exists()
