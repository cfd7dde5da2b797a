"""The MCP server on real components, driven by the `mcp` SDK's own client: over stdio (the client starts
`python -m pipelines.mcp_server` as a subprocess) and over streamable HTTP (a running server on a free port, with
API keys). The corpus is tests/test_serving.py's (ops/ and finance/ documents), ingested by the real job."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest
import requests

from resources.llm import free_port
from tests.test_serving import QUESTION, REPO, cli_env, ingested_corpus, make_key


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return ingested_corpus(tmp_path_factory, "mcp")


def payload(result):
    """A tool result's data: the structured content when the SDK gives one, else the JSON text."""
    assert not result.is_error, result.content
    structured = getattr(result, "structured_content", None)
    if structured is not None:
        return structured.get("result", structured)
    return json.loads(result.content[0].text)


async def over_stdio(root, calls, env_extra=None):
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(command=sys.executable, args=["-m", "pipelines.mcp_server", "--no-llm"],
                                   env=cli_env(root) | (env_extra or {}), cwd=str(REPO))
    async with Client(params, read_timeout_seconds=120) as client:
        tools = sorted(t.name for t in (await client.list_tools()).tools)
        return tools, [await client.call_tool(name, arguments) for name, arguments in calls]


def test_stdio_tools_search_graph_paths_and_ask(corpus):
    calls = [("search", {"query": "who manages billing-db?", "top_k": 3}),
             ("graph_paths", {"question": "Which team manages billing-db?"}),
             ("ask", {"question": QUESTION}),
             ("ask", {"question": "   "}),
             ("search", {"query": "billing", "top_k": 500})]
    tools, results = asyncio.run(over_stdio(corpus, calls))
    assert tools == ["ask", "graph_paths", "search", "sparql"]  # sparql: tests/test_sparql.py

    hits = payload(results[0])
    assert 1 <= len(hits) <= 3 and any("billing-db" in h["text"] for h in hits) and all(h["chunk_id"] for h in hits)
    paths = payload(results[1])
    assert "billing-db -MANAGED_BY-> Data Team" in [p["path"] for p in paths["paths"]]
    answer = payload(results[2])
    assert "Billing Service -RUNS_ON-> srv-app-01 -MANAGED_BY-> Platform Team" in answer["answer"]
    assert answer["citations"] and answer["sources"] and "Sources: [" in answer["answer"]

    assert results[3].is_error and "empty question" in results[3].content[0].text
    assert results[4].is_error and "top_k must be from 1 to 50" in results[4].content[0].text


def test_stdio_with_a_prefix_key_in_the_environment_sees_only_its_documents(corpus):
    key = make_key(corpus, "mcp-ops", "ops/")
    calls = [("search", {"query": "quarterly budget code FIN-7731", "top_k": 10}),
             ("graph_paths", {"question": "What does Billing Service depend on?"})]
    _tools, results = asyncio.run(over_stdio(corpus, calls, {"DOCPLATFORM_API_KEY": key}))
    hits = payload(results[0])
    assert hits and all(h["doc_id"].startswith("ops/") for h in hits)
    assert not any("ledger" in p["path"] for p in payload(results[1])["paths"])


@pytest.fixture(scope="module")
def http_server(corpus):
    keys = {"all": make_key(corpus, "mcp-all"), "ops": make_key(corpus, "mcp-http-ops", "ops/")}
    port = free_port()
    log = corpus / "mcp-access.log"
    process = subprocess.Popen([sys.executable, "-m", "pipelines.mcp_server", "--http", "--port", str(port), "--no-llm",
                                "--access-log", str(log), "--rate-limit", "30"],
                               cwd=REPO, env=cli_env(corpus), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.time() + 60
    while time.time() < deadline:
        assert process.poll() is None, process.stdout.read()
        try:
            requests.get(url, timeout=5)
            break
        except requests.ConnectionError:
            time.sleep(0.3)
    try:
        yield {"url": url, "keys": keys, "log": log}
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
        assert "Traceback" not in output, output


async def over_http(url, key, calls):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx2.AsyncClient(headers=headers, timeout=120) as http:
        async with Client(streamable_http_client(url, http_client=http), read_timeout_seconds=120) as client:
            return [await client.call_tool(name, arguments) for name, arguments in calls]


def test_streamable_http_with_keys(http_server):
    url, keys = http_server["url"], http_server["keys"]
    (hits,) = asyncio.run(over_http(url, keys["all"], [("search", {"query": "quarterly budget code FIN-7731"})]))
    assert any(h["doc_id"] == "finance/finance-systems.md" for h in payload(hits))

    hits, paths = asyncio.run(over_http(url, keys["ops"], [
        ("search", {"query": "quarterly budget code FIN-7731", "top_k": 10}),
        ("graph_paths", {"question": "What does Billing Service depend on?"})]))
    assert payload(hits) and all(h["doc_id"].startswith("ops/") for h in payload(hits))
    assert payload(paths)["paths"] and not any("ledger" in p["path"] for p in payload(paths)["paths"])

    # missing and wrong keys are refused before the MCP layer, with a JSON reason
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    missing = requests.post(url, json=init, headers=headers, timeout=30)
    assert missing.status_code == 401 and "API key is required" in missing.json()["error"]["message"]
    wrong = requests.post(url, json=init, headers=headers | {"Authorization": "Bearer dp_000000000000_" + "x" * 43},
                          timeout=30)
    assert wrong.status_code == 401 and "invalid or revoked" in wrong.json()["error"]["message"]
    with pytest.raises(Exception):
        asyncio.run(over_http(url, None, [("search", {"query": "billing"})]))

    log = http_server["log"].read_text()
    assert f"key={keys['ops'].split('_')[1]} endpoint=POST /mcp status=200" in log
    assert "key=- endpoint=POST /mcp status=401" in log
    assert all(k not in log and k.split("_", 2)[2] not in log for k in keys.values())
