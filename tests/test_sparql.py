"""SPARQL over the knowledge graph on real components: the graph of tests/test_graph_semantics.py written into an
embedded ladybug file, queried through `python -m pipelines.sparql`, the server's POST /v1/sparql (a real
`python -m pipelines.serve` process with API keys) and the MCP server's `sparql` tool (the SDK's client over stdio).
Checked: inferred facts answer, provenance travels with them, a key's document prefixes hold, updates, malformed
queries and queries past the time limit are clear refusals, and the server keeps serving after each."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest
import requests

from resources.graph_store import GraphStore
from resources.llm import free_port
from tests.test_graph_semantics import entity_id, semantic_ontology_dir, write_graph
from tests.test_serving import REPO, cli_env, make_key

DEPENDS = "SELECT ?x WHERE { ?p kg:name 'Customer Portal' ; infra:DEPENDS_ON ?x } ORDER BY ?x"
# a four-way cross product of the view: billions of rows to count, far past any time limit
SLOW = "SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i . ?j ?k ?l }"
INFERRED_PROVENANCE = """
SELECT ?rule ?chunk ?under WHERE {
  GRAPH <urn:docplatform:graph:inferred> {
    ?fact rdf:subject ?p ; rdf:predicate infra:DEPENDS_ON ; rdf:object ?x ; kg:rule ?rule ; kg:mentionedIn ?chunk ;
          kg:derivedFrom ?under .
  }
  ?p kg:name 'Customer Portal' . ?x kg:name 'ledger-db' .
}"""


def iri(name: str) -> str:
    from resources.ontology import entity_uri

    return str(entity_uri(entity_id(name)))


def sparql_env(root) -> dict:
    return cli_env(root) | {"DOCPLATFORM_ONTOLOGY_DIR": str(root / "ontology")}


@pytest.fixture(scope="module")
def graph_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sparql")
    write_graph(GraphStore(path=str(root / "graph.lbug"), ontology_dir=str(semantic_ontology_dir(root))))
    return root


def cli(root, *args):
    return subprocess.run([sys.executable, "-m", "pipelines.sparql", *args], cwd=REPO, env=sparql_env(root),
                          capture_output=True, text=True, timeout=120)


def values(result: dict, name: str = "x") -> list[str]:
    return [row[name]["value"] for row in result["results"]["bindings"] if name in row]


def test_cli_inferred_answers_prefixes_and_refusals(graph_root):
    done = cli(graph_root, "--json", DEPENDS)
    assert done.returncode == 0, done.stderr
    assert values(json.loads(done.stdout)) == sorted([iri("Billing Service"), iri("Ledger Service"), iri("ledger-db"),
                                                      iri("vault-db")])
    # only what ops/ documents state: the finance/ fact ledger-db -> vault-db, and what follows from it, is gone
    ops = cli(graph_root, "--json", "--prefix", "ops/", DEPENDS)
    assert values(json.loads(ops.stdout)) == sorted([iri("Billing Service"), iri("Ledger Service"), iri("ledger-db")])
    table = cli(graph_root, "SELECT ?n WHERE { ?s a infra:Software ; kg:name ?n } ORDER BY ?n")
    assert table.returncode == 0 and table.stdout.splitlines()[0] == "?n" and '"Customer Portal"' in table.stdout
    assert '"ledger-db"' in table.stdout  # a Database is Software (rdfs:subClassOf, inferred types)
    asked = cli(graph_root, "ASK { ?s infra:RUNS_ON ?server . ?s kg:name 'ledger-db' }")  # HOSTS' inverse
    assert asked.stdout.strip() == "true"

    bad = cli(graph_root, "SELECT ?x WHERE { ?x ")
    assert bad.returncode == 2 and "malformed SPARQL: error at 1:" in bad.stderr and "Traceback" not in bad.stderr
    update = cli(graph_root, "PREFIX ex: <http://example.com/> DELETE WHERE { ?s ?p ?o }")
    assert update.returncode == 2 and "read-only" in update.stderr
    slow = cli(graph_root, "--timeout", "1", SLOW)
    assert slow.returncode == 2 and "time limit of 1 s" in slow.stderr


@pytest.fixture(scope="module")
def server(graph_root):
    keys = {"all": make_key(graph_root, "sparql-all"), "ops": make_key(graph_root, "sparql-ops", "ops/")}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-m", "pipelines.serve", "--port", str(port), "--no-llm",
                                "--access-log", str(graph_root / "access.log")],
                               cwd=REPO, env=sparql_env(graph_root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    deadline = time.time() + 120
    while True:
        assert process.poll() is None and time.time() < deadline, "server did not start"
        try:
            if requests.get(url + "/v1/models", headers={"Authorization": f"Bearer {keys['all']}"}, timeout=10).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.3)
    try:
        yield {"url": url, "keys": keys}
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
        assert "Traceback" not in output, output


def post(server, body, key="all", **kwargs):
    headers = {"Authorization": f"Bearer {server['keys'][key]}"} if key else {}
    if isinstance(body, str):
        return requests.post(server["url"] + "/v1/sparql", data=body.encode(), timeout=60,
                             headers=headers | {"Content-Type": "application/sparql-query"}, **kwargs)
    return requests.post(server["url"] + "/v1/sparql", json=body, headers=headers, timeout=60, **kwargs)


def test_http_sparql_with_provenance_and_prefixes(server):
    everything = post(server, {"query": DEPENDS})
    assert everything.status_code == 200 and iri("vault-db") in values(everything.json())
    assert everything.headers["content-type"].startswith("application/sparql-results+json")
    ops = post(server, DEPENDS, key="ops")  # the SPARQL protocol's own body form
    assert ops.status_code == 200 and iri("ledger-db") in values(ops.json()) and iri("vault-db") not in values(ops.json())
    # the vault-db fact and the one entity only finance/ mentions are invisible to the ops/ key, asserted or not
    assert values(post(server, {"query": "SELECT ?x WHERE { ?x kg:name 'vault-db' }"}, key="ops").json()) == []
    assert values(post(server, {"query": "SELECT ?x WHERE { ?x infra:port ?p }"}, key="ops").json()) == [iri("ledger-db")]

    rows = post(server, {"query": INFERRED_PROVENANCE}).json()["results"]["bindings"]
    assert {r["rule"]["value"] for r in rows} == {"owl:TransitiveProperty"}
    assert {r["chunk"]["value"] for r in rows} == {"urn:docplatform:chunk:ops-platform%230",
                                                   "urn:docplatform:chunk:ops-platform%231"}
    assert len({r["under"]["value"] for r in rows}) == 3  # the three asserted hops it rests on

    # graph paths apply the same prefixes to inferred hops
    question = {"question": "What does Customer Portal depend on, directly or indirectly?"}
    headers = {"Authorization": f"Bearer {server['keys']['all']}"}
    paths = requests.post(server["url"] + "/v1/graph/paths", json=question, headers=headers, timeout=60).json()["paths"]
    assert any(p["ids"][-1] == entity_id("vault-db") and p["inferred"] for p in paths)
    headers = {"Authorization": f"Bearer {server['keys']['ops']}"}
    paths = requests.post(server["url"] + "/v1/graph/paths", json=question, headers=headers, timeout=60).json()["paths"]
    assert any(p["ids"][-1] == entity_id("ledger-db") and p["inferred"] for p in paths)
    assert not any(entity_id("vault-db") in p["ids"] for p in paths)


@pytest.mark.parametrize("body, status, words", [
    ({"query": "INSERT DATA { <urn:a> <urn:b> <urn:c> }"}, 403, "read-only"),
    ("LOAD <http://example.com/data.ttl>", 403, "read-only"),
    ({"query": "SELECT * WHERE { ?s ?p "}, 400, "malformed SPARQL: error at 1:"),
    ({"query": "SELECT * WHERE { SERVICE <http://example.com/sparql> { ?s ?p ?o } }"}, 400, "SERVICE"),
    ({"query": ""}, 400, "empty SPARQL query"),
    ({"query": SLOW, "timeout_s": 1}, 408, "time limit of 1 s"),
])
def test_http_refusals_are_clear_4xx_and_the_server_keeps_serving(server, body, status, words):
    response = post(server, body)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"] and "Traceback" not in response.text
    assert post(server, {"query": "ASK { ?s a infra:Server }"}).json()["boolean"] is True


def test_http_sparql_needs_a_key(server):
    assert post(server, {"query": DEPENDS}, key=None).status_code == 401


def test_mcp_sparql_tool_over_stdio(graph_root):
    from mcp import Client, StdioServerParameters

    from tests.test_mcp_server import payload

    async def calls():
        params = StdioServerParameters(command=sys.executable, args=["-m", "pipelines.mcp_server", "--no-llm"],
                                       env=sparql_env(graph_root), cwd=str(REPO))
        async with Client(params, read_timeout_seconds=120) as client:
            tools = sorted(t.name for t in (await client.list_tools()).tools)
            return tools, [await client.call_tool("sparql", {"query": DEPENDS}),
                           await client.call_tool("sparql", {"query": "CLEAR ALL"}),
                           await client.call_tool("sparql", {"query": SLOW, "timeout_s": 1}),
                           await client.call_tool("sparql", {"query": "ASK { ?s a infra:Team }"})]

    tools, (answer, update, slow, after) = asyncio.run(calls())
    assert tools == ["ask", "graph_paths", "search", "sparql"]
    assert iri("ledger-db") in values(payload(answer))
    assert update.is_error and "read-only" in update.content[0].text
    assert slow.is_error and "time limit" in slow.content[0].text
    assert payload(after)["boolean"] is True


def test_bench_engines_agree_on_a_small_graph():
    from bench.sparql import QUERIES, run

    rows, info = run(apps=10, repeat=1)
    assert info["entities"] > 10 and info["quads"] > 100
    counts = [row[-1] for row in rows[1:]]
    assert len(counts) == len(QUERIES)
    for count in counts:
        ox_rows, rdflib_rows = (int(n) for n in count.split(" / "))
        assert ox_rows == rdflib_rows and ox_rows > 0, rows
