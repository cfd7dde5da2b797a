"""Graph questions with the ontology's semantics, on a real embedded graph (ladybug) written by the graph store.

The ontology is the sample one plus a file declaring an inverse (HOSTS of RUNS_ON), a symmetric (CONNECTED_TO) and
a sub-property (READS_FROM of DEPENDS_ON) relation; DEPENDS_ON is transitive in the sample ontology itself. Every
answer is checked twice: found with the semantics, missing without them (expand(..., semantics=False)).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from assets.ask.graph import GraphContext, expand
from resources.graph_store import GraphStore
from resources.ontology import normalize_name
from resources.ontology_loading import load_ontology

REPO = Path(__file__).resolve().parent.parent
EXTRA_TTL = """
@prefix owl:   <http://www.w3.org/2002/07/owl#> .
@prefix rdfs:  <http://www.w3.org/2000/01/rdf-schema#> .
@prefix infra: <https://docplatform.local/ontology/infra#> .

infra:HOSTS a owl:ObjectProperty ;
    owl:inverseOf infra:RUNS_ON ;
    rdfs:label "hosts" ;
    rdfs:domain infra:Server ;
    rdfs:range infra:Software .

infra:CONNECTED_TO a owl:ObjectProperty, owl:SymmetricProperty ;
    rdfs:label "connected to" ;
    rdfs:domain infra:Server ;
    rdfs:range infra:Server .

infra:READS_FROM a owl:ObjectProperty ;
    rdfs:subPropertyOf infra:DEPENDS_ON ;
    rdfs:label "reads from" ;
    rdfs:domain infra:Software ;
    rdfs:range infra:Database .
"""
ENTITIES = {"Customer Portal": "Application", "Billing Service": "Application", "Ledger Service": "Application",
            "Reporting Engine": "Application", "ledger-db": "Database", "analytics-db": "Database",
            "vault-db": "Database", "srv-app-01": "Server", "srv-db-01": "Server", "Data Team": "Team"}
# (source, relation, target, chunk): ops/ documents, and one finance/ fact
FACTS = {"ops/platform.md": [("Customer Portal", "DEPENDS_ON", "Billing Service", "ops-platform#0"),
                             ("Billing Service", "DEPENDS_ON", "Ledger Service", "ops-platform#0"),
                             ("Ledger Service", "DEPENDS_ON", "ledger-db", "ops-platform#1"),
                             ("Billing Service", "RUNS_ON", "srv-app-01", "ops-platform#1"),
                             ("srv-app-01", "CONNECTED_TO", "srv-db-01", "ops-platform#1"),
                             ("srv-db-01", "HOSTS", "ledger-db", "ops-platform#1"),
                             ("Reporting Engine", "READS_FROM", "analytics-db", "ops-platform#2"),
                             ("analytics-db", "MANAGED_BY", "Data Team", "ops-platform#2")],
         "finance/vault.md": [("ledger-db", "DEPENDS_ON", "vault-db", "finance-vault#0")]}
ATTRIBUTES = {"ops/platform.md": [("ledger-db", "port", "5432", "ops-platform#1")],
              "finance/vault.md": [("vault-db", "port", "8200", "finance-vault#0")]}


def entity_id(name: str) -> str:
    return f"{ENTITIES[name].lower()}:{normalize_name(name)}"


def semantic_ontology_dir(root: Path) -> Path:
    """The sample ontology plus EXTRA_TTL in a folder of its own."""
    folder = root / "ontology"
    shutil.copytree(REPO / "ontology_schemas", folder)
    (folder / "semantics-extra.ttl").write_text(EXTRA_TTL, encoding="utf-8")
    return folder


def write_graph(store: GraphStore) -> None:
    """FACTS and ATTRIBUTES written per document by the graph store, as the knowledge-graph asset writes them."""
    with store.session() as backend:
        for doc_id, facts in FACTS.items():
            names = {n for s, _r, t, _c in facts for n in (s, t)} | {e for e, *_ in ATTRIBUTES.get(doc_id, [])}
            chunks_of = {n: sorted({c for s, _r, t, c in facts if n in (s, t)} |
                                   {c for e, _p, _v, c in ATTRIBUTES.get(doc_id, []) if e == n}) for n in names}
            backend.replace_document(doc_id, {
                "entities": [{"id": entity_id(n), "label": ENTITIES[n], "name": n, "aliases": [],
                              "chunk_ids": chunks_of[n]} for n in sorted(names)],
                "relations": [{"source": entity_id(s), "type": r, "target": entity_id(t), "chunk_id": c,
                               "sentence": f"{s} {r} {t}"} for s, r, t, c in facts],
                "attributes": [{"entity": entity_id(e), "property": p, "value": v, "chunk_id": c, "sentence": ""}
                               for e, p, v, c in ATTRIBUTES.get(doc_id, [])]},
                chunks=[{"chunk_id": c, "seq": int(c.rsplit("#", 1)[1]), "doc_sha256": ""}
                        for c in sorted({c for *_x, c in facts})])


@pytest.fixture(scope="module")
def graph_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("semantics")
    store = GraphStore(path=str(root / "graph.lbug"), ontology_dir=str(semantic_ontology_dir(root)))
    write_graph(store)
    return store


def paths_for(store: GraphStore, question: str, semantics: bool = True, max_hops: float = 2):
    with store.session() as backend:
        _entities, paths = expand(question, GraphContext(backend), max_hops=max_hops, semantics=semantics)
    return paths


def test_the_loader_keeps_the_declarations(graph_store):
    ontology = load_ontology(graph_store.ontology_dir)
    assert ontology.relations["DEPENDS_ON"].transitive
    assert ontology.relations["HOSTS"].inverse_of == "RUNS_ON" and ontology.relations["RUNS_ON"].inverse_of == "HOSTS"
    assert ontology.relations["CONNECTED_TO"].symmetric and not ontology.relations["RUNS_ON"].symmetric
    assert ontology.relations["READS_FROM"].super_properties == ("DEPENDS_ON",)
    assert load_ontology(REPO / "ontology_schemas").relations["DEPENDS_ON"].transitive  # the sample ontology's own


def test_transitive_dependency_beyond_the_cost_bound_with_its_provenance(graph_store):
    question = "What does Customer Portal depend on, directly or indirectly?"
    paths = paths_for(graph_store, question)
    inferred = [p for p in paths if p.ids == [entity_id("Customer Portal"), entity_id("ledger-db")]]
    assert inferred, [p.text for p in paths]
    path = inferred[0]
    assert path.relations == ["DEPENDS_ON"] and path.inferred
    hop = path.hops[0]
    assert hop["rule"] == "owl:TransitiveProperty"
    assert [(v["source"], v["target"]) for v in hop["via"]] == [
        (entity_id("Customer Portal"), entity_id("Billing Service")),
        (entity_id("Billing Service"), entity_id("Ledger Service")),
        (entity_id("Ledger Service"), entity_id("ledger-db"))]
    assert [v["evidence"] for v in hop["via"]] == [["ops-platform#0"], ["ops-platform#0"], ["ops-platform#1"]]
    assert path.evidence == [["ops-platform#0", "ops-platform#1"]] and path.doc_ids == ["ops/platform.md"]
    assert "DEPENDS_ON is transitive: Customer Portal -DEPENDS_ON-> Billing Service" in path.text
    # vault-db is four asserted hops away, across documents: the closure reaches it too
    assert any(p.ids == [entity_id("Customer Portal"), entity_id("vault-db")] for p in paths)
    # and backwards: what depends on ledger-db, directly or not
    dependants = paths_for(graph_store, "What depends on ledger-db?")
    assert any(p.ids == [entity_id("Customer Portal"), entity_id("ledger-db")] and p.inferred for p in dependants)
    # without the semantics a bound of 2 reaches Ledger Service at most
    plain = paths_for(graph_store, question, semantics=False)
    assert plain and not any(entity_id("ledger-db") in p.ids for p in plain)
    assert not any(p.inferred for p in plain)


def test_inverse_property(graph_store):
    paths = paths_for(graph_store, "Which server does ledger-db run on?")
    runs_on = [p for p in paths if p.relations == ["RUNS_ON"] and p.ids == [entity_id("ledger-db"), entity_id("srv-db-01")]]
    assert runs_on and runs_on[0].hops[0]["rule"] == "owl:inverseOf"
    assert runs_on[0].hops[0]["via"] == [{"source": entity_id("srv-db-01"), "type": "HOSTS",
                                          "target": entity_id("ledger-db"), "evidence": ["ops-platform#1"]}]
    plain = paths_for(graph_store, "Which server does ledger-db run on?", semantics=False)
    assert not any("RUNS_ON" in p.relations for p in plain if p.ids[0] == entity_id("ledger-db"))


def test_symmetric_property(graph_store):
    question = "Which servers is srv-db-01 connected to?"
    paths = paths_for(graph_store, question)
    assert any(p.ids == [entity_id("srv-db-01"), entity_id("srv-app-01")] and p.relations == ["CONNECTED_TO"]
               and p.hops[0]["rule"] == "owl:SymmetricProperty" for p in paths), [p.text for p in paths]
    plain = paths_for(graph_store, question, semantics=False)
    assert not any(p.ids[:2] == [entity_id("srv-db-01"), entity_id("srv-app-01")] for p in plain)


def test_sub_property(graph_store):
    question = "What does Reporting Engine depend on?"
    paths = paths_for(graph_store, question)
    best = [p for p in paths if p.relations == ["DEPENDS_ON"] and p.ids[0] == entity_id("Reporting Engine")]
    assert best and best[0].ids[-1] == entity_id("analytics-db") and best[0].hops[0]["rule"] == "rdfs:subPropertyOf"
    assert "READS_FROM is a sub-property of DEPENDS_ON" in best[0].text
    plain = paths_for(graph_store, question, semantics=False)
    assert not any(p.relations == ["DEPENDS_ON"] for p in plain)
    assert any(p.relations == ["READS_FROM"] for p in plain)


def test_subclass_drives_the_schema_walk(graph_store):
    # 'software' is a superclass of Application: the walk from srv-app-01 may go to an application
    question = "Which software runs on srv-app-01?"
    paths = paths_for(graph_store, question)
    assert paths[0].ids == [entity_id("Billing Service"), entity_id("srv-app-01")], [p.text for p in paths]
    plain = paths_for(graph_store, question, semantics=False)
    assert not any(entity_id("Billing Service") in p.ids for p in plain)


def test_cost_bound_still_bounds_asserted_chains(graph_store):
    one = paths_for(graph_store, "What does Billing Service run on?", max_hops=1)
    assert one and all(len(p.relations) == 1 for p in one)
    three = paths_for(graph_store, "Which team manages what Reporting Engine reads from?", max_hops=3)
    assert any(p.names == ["Reporting Engine", "analytics-db", "Data Team"] for p in three)


def test_a_question_naming_only_classes_links_them(graph_store):
    paths = paths_for(graph_store, "Which applications depend on databases?")
    assert paths and all(len(p.ids) >= 2 for p in paths)
    linked = {(p.names[0], p.names[-1]): p for p in paths if len(p.relations) == 1}
    assert linked[("Ledger Service", "ledger-db")].relations == ["DEPENDS_ON"]
    assert linked[("Customer Portal", "ledger-db")].inferred
    assert linked[("Reporting Engine", "analytics-db")].relations == ["READS_FROM"]  # a sub-property of DEPENDS_ON
    assert not paths_for(graph_store, "Which applications are there?")  # one class links nothing
