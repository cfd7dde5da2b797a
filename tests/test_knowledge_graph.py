"""Knowledge graph: real spaCy model, real rdflib/pyshacl, real embedded ladybug database, real Dagster runs."""

import shutil
from pathlib import Path

import pytest
from dagster import DagsterInstance, Definitions, materialize

from assets.chunking import ChunkingConfig, chunk_elements
from assets.ingestion import document_chunks, parsed_elements, raw_documents
from assets.parsing import partition_document
from assets.knowledge_graph import domain_range_violations, extract_facts, graph_facts, knowledge_graph
from pipelines.partitions import DOCUMENTS_PARTITIONS_NAME
from resources.documents import SAMPLE_CORPUS, DocumentSource
from resources.embedder import Embedder
from resources.graph_store import GraphStore
from resources.milvus import MilvusStore
from resources.ontology import OntologyError
from resources.ontology_loading import load_ontology, parse_ontology

KG_ASSETS = [raw_documents, parsed_elements, document_chunks, graph_facts, knowledge_graph]


def chunks_of(path: Path, doc_id: str | None = None) -> list[dict]:
    doc_id = doc_id or path.name
    elements = partition_document(doc_id, path.suffix.lower(), path.read_bytes())
    return chunk_elements(doc_id, "sha-" + doc_id, [e.to_dict() for e in elements], ChunkingConfig())


def text_chunks(doc_id: str, *texts: str) -> list[dict]:
    return [{"chunk_id": f"{doc_id}#{i}", "doc_id": doc_id, "doc_sha256": "x", "seq": i, "text": t, "page_numbers": []}
            for i, t in enumerate(texts)]


def triples(facts: dict) -> set[tuple[str, str, str]]:
    return {(r["source"], r["type"], r["target"]) for r in facts["relations"]}


@pytest.fixture(scope="module")
def ontology():
    return load_ontology()


@pytest.fixture(scope="module")
def corpus_facts(ontology):
    return {p.name: extract_facts(chunks_of(p), ontology) for p in sorted(SAMPLE_CORPUS.iterdir())}


# ------------------------------------------------------------------------------------------ ontology

def test_ontology_classes_relations_and_hierarchy(ontology):
    assert {"Server", "Application", "Database", "Team", "Software", "Resource"} <= set(ontology.classes)
    assert ontology.is_a("Database", "Software") and ontology.is_a("Application", "Resource")
    assert not ontology.is_a("Team", "Resource")
    runs_on = ontology.relations["RUNS_ON"]
    assert (runs_on.domain, runs_on.range) == ("Software", "Server")
    assert (ontology.relations["MANAGED_BY"].domain, ontology.relations["MANAGED_BY"].range) == ("Resource", "Team")
    assert ontology.labels_of("Database") == ["Database", "Software", "Resource", "Entity"]


# ------------------------------------------------------------------------------------------ extraction + resolution

def test_extraction_on_sample_corpus(corpus_facts):
    infra = corpus_facts["infrastructure-overview.md"]
    assert {
        ("Application:billing", "RUNS_ON", "Server:srv-app-01"),
        ("Application:billing", "DEPENDS_ON", "Database:billing-db"),
        ("Application:customer-portal", "RUNS_ON", "Server:srv-app-02"),
        ("Application:customer-portal", "DEPENDS_ON", "Application:billing"),
        ("Application:reporting-engine", "RUNS_ON", "Server:srv-app-01"),
        ("Application:reporting-engine", "DEPENDS_ON", "Database:analytics-db"),
        ("Database:billing-db", "RUNS_ON", "Server:srv-db-01"),
        ("Database:billing-db", "MANAGED_BY", "Team:data"),
        ("Database:analytics-db", "MANAGED_BY", "Team:data"),
    } <= triples(infra)
    charter = triples(corpus_facts["team-charter.docx"])
    assert {("Server:srv-app-01", "MANAGED_BY", "Team:platform"),
            ("Server:srv-app-02", "MANAGED_BY", "Team:platform"),
            ("Server:srv-db-01", "MANAGED_BY", "Team:platform"),
            ("Application:billing", "MANAGED_BY", "Team:payments"),
            ("Application:customer-portal", "MANAGED_BY", "Team:payments")} <= charter
    # "... escalate to the Platform Team, which manages srv-db-01."
    assert ("Server:srv-db-01", "MANAGED_BY", "Team:platform") in triples(corpus_facts["oncall-handbook.txt"])
    runbook = triples(corpus_facts["deployment-runbook.pdf"])
    assert {("Application:inventory", "RUNS_ON", "Server:srv-app-02"),
            ("Database:inventory-db", "RUNS_ON", "Server:srv-db-01"),
            ("Application:reporting-engine", "MANAGED_BY", "Team:data")} <= runbook
    # "It runs on srv-app-02": the previous sentence's subject
    assert ("Application:customer-portal", "RUNS_ON", "Server:srv-app-02") in triples(corpus_facts["security-policy.html"])

    for doc_id, facts in corpus_facts.items():
        assert facts["doc_id"] == doc_id
        ids = {e["id"] for e in facts["entities"]}
        for entity in facts["entities"]:
            assert set(entity) == {"id", "label", "name", "aliases", "chunk_ids", "merges"}
            assert set(entity["merges"]) == set(entity["aliases"])  # every merged surface says why
            assert entity["id"].startswith(entity["label"] + ":") and entity["chunk_ids"]
        for rel in facts["relations"]:
            assert set(rel) == {"source", "type", "target", "chunk_id", "sentence", "layer", "score"}
            assert rel["layer"] in ("structure", "sentence", "korean", "llm") and 0 < rel["score"] <= 1.01
            assert rel["source"] in ids and rel["target"] in ids and rel["sentence"]
        # no spurious entities: "Acme Corp", "reverse proxy" etc. are not ontology individuals
        assert all(e["label"] in {"Server", "Application", "Database", "Team"} for e in facts["entities"])
        # srv-db-01 is a server, never a database (name patterns are disjoint)
        assert "Database:srv-db-01" not in ids


def test_entity_resolution_merges_aliases_and_variants(ontology):
    facts = extract_facts(text_chunks(
        "notes.md",
        "The Infra Team manages the server srv-web-01. The application Order API runs on srv-web-01.",
        "The Platform Team also manages srv-web-02. The application Order API uses the billing database.",
        "Later, order api depends on billing-db and is managed by the Payments Squad.",
    ), ontology)
    entities = {e["id"]: e for e in facts["entities"]}
    assert "Team:infra" not in entities and "Payments Squad" in entities["Team:payments"]["aliases"]
    platform = entities["Team:platform"]
    assert platform["name"] == "Platform Team" and "Infra Team" in platform["aliases"]
    assert platform["chunk_ids"] == ["notes.md#0", "notes.md#1"]
    assert "billing database" in entities["Database:billing-db"]["aliases"]
    order = entities["Application:order"]
    assert order["name"] == "Order API" and "order api" in order["aliases"]
    assert order["chunk_ids"] == ["notes.md#0", "notes.md#1", "notes.md#2"]
    assert {
        ("Server:srv-web-01", "MANAGED_BY", "Team:platform"),
        ("Server:srv-web-02", "MANAGED_BY", "Team:platform"),
        ("Application:order", "RUNS_ON", "Server:srv-web-01"),
        ("Application:order", "DEPENDS_ON", "Database:billing-db"),
        ("Application:order", "MANAGED_BY", "Team:payments"),
    } == triples(facts)
    by_key = {(r["source"], r["type"], r["target"]): r for r in facts["relations"]}
    assert by_key[("Application:order", "MANAGED_BY", "Team:payments")]["chunk_id"] == "notes.md#2"


def test_relations_respect_domain_and_range(ontology):
    # "Data Team runs on srv-x-01" would break RUNS_ON's domain: not extracted
    facts = extract_facts(text_chunks("bad.md", "The Data Team runs on srv-x-01. The server srv-x-01 depends on the Data Team."),
                          ontology)
    assert facts["relations"] == []
    assert {e["id"] for e in facts["entities"]} == {"Team:data", "Server:srv-x-01"}


# ------------------------------------------------------------------------------------------ checks

def test_shacl_and_domain_range_pass_on_extracted_facts(ontology, corpus_facts):
    for facts in corpus_facts.values():
        conforms, report, violations = ontology.validate_shacl(facts)
        assert conforms, report
        assert violations == 0 and domain_range_violations(facts, ontology) == []


def test_shacl_and_domain_range_fail_on_bad_facts(ontology, corpus_facts):
    facts = corpus_facts["infrastructure-overview.md"]
    chunk = facts["relations"][0]["chunk_id"]
    bad = dict(facts, relations=facts["relations"] + [
        {"source": "Team:data", "type": "RUNS_ON", "target": "Server:srv-db-01", "chunk_id": chunk, "sentence": "x"}])
    conforms, report, violations = ontology.validate_shacl(bad)
    assert not conforms and violations >= 1 and "RunsOnShape" in report
    assert any("needs Software -> Server" in p for p in domain_range_violations(bad, ontology))

    unknown = dict(facts, relations=facts["relations"] + [
        {"source": "Server:srv-db-01", "type": "HOSTS_TEAM", "target": "Team:data", "chunk_id": chunk, "sentence": "x"}])
    assert not ontology.validate_shacl(unknown)[0]
    assert any("not an ontology relation" in p for p in domain_range_violations(unknown, ontology))

    untraced = dict(facts, entities=[dict(e, chunk_ids=[]) if e["id"] == "Team:data" else e for e in facts["entities"]])
    conforms, report, _ = ontology.validate_shacl(untraced)
    assert not conforms and "traceable" in report


# ------------------------------------------------------------------------------------------ graph store

@pytest.fixture
def store(tmp_path):
    return GraphStore(backend="ladybug", path=str(tmp_path / "graph.lbug"))


def load_corpus(graph, corpus_facts):
    for doc_id, facts in corpus_facts.items():
        graph.replace_document(doc_id, facts)


def test_injection_attempts_are_refused(store, corpus_facts):
    facts = corpus_facts["oncall-handbook.txt"]
    with store.session() as graph:
        graph.replace_document("oncall-handbook.txt", facts)
        before = graph.stats()
        chunk = facts["relations"][0]["chunk_id"]
        evil_label = dict(facts, entities=facts["entities"] + [
            {"id": "x", "label": "Server) DETACH DELETE n //", "name": "x", "aliases": [], "chunk_ids": [chunk]}])
        with pytest.raises(OntologyError, match="not a class of the ontology"):
            graph.replace_document("evil.md", evil_label)
        evil_type = dict(facts, relations=facts["relations"] + [
            {"source": facts["entities"][0]["id"], "type": "RUNS_ON]->() WITH 1 AS x MATCH (n) DETACH DELETE n //",
             "target": facts["entities"][1]["id"], "chunk_id": chunk, "sentence": ""}])
        with pytest.raises(OntologyError, match="not a relation of the ontology"):
            graph.replace_document("oncall-handbook.txt", evil_type)
        # a lower-case look-alike of a real label is not a label either
        with pytest.raises(OntologyError):
            graph.multi_hop("server", [("RUNS_ON", "Server")])
        with pytest.raises(OntologyError):
            graph.multi_hop("Application", [("RUNS_ON` ]->() DETACH DELETE n //", "Server")])
        # values are parameters: Cypher-looking names are stored verbatim and harm nothing
        odd = {"doc_id": "odd.md", "entities": [
            {"id": "Team:odd", "label": "Team", "name": "x'}) MATCH (n) DETACH DELETE n //", "aliases": ["\" OR 1=1"],
             "chunk_ids": ["odd#0"]}], "relations": []}
        graph.replace_document("odd.md", odd)
        assert graph.entity("Team:odd")["name"] == "x'}) MATCH (n) DETACH DELETE n //"
        graph.purge_document("odd.md")
        assert graph.stats() == before
        assert graph.document_facts("oncall-handbook.txt")["relations"]


def test_replace_keeps_shared_entities_and_multi_hop(store, corpus_facts):
    with store.session() as graph:
        load_corpus(graph, corpus_facts)
        assert graph.orphan_nodes() == [] and graph.untraceable_edges() == [] and graph.domain_range_violations() == []
        apps = graph.applications_on_servers_managed_by("Platform Team")
        assert [p["names"][0] for p in apps] == ["Billing Service", "Customer Portal", "Inventory API", "Reporting Engine"]
        for path in apps:
            assert path["names"][2] == "Platform Team" and all(path["evidence"])
        # by alias of the known individual, and by id
        assert graph.applications_on_servers_managed_by("Infra Team") == apps
        assert graph.applications_on_servers_managed_by("Team:platform") == apps
        assert graph.applications_on_servers_managed_by("Payments Team") == []
        assert graph.applications_on_servers_managed_by("Nobody") == []
        # three hops: applications depending on software that runs on a server the Platform Team manages
        deep = graph.multi_hop("Application", [("DEPENDS_ON", "Software"), ("RUNS_ON", "Server"),
                                               ("MANAGED_BY", "Team")], end="platform team")
        assert ["Billing Service", "billing-db", "srv-db-01", "Platform Team"] in [p["names"] for p in deep]
        # Software covers applications and databases (class hierarchy)
        on_db01 = {p["names"][0] for p in graph.multi_hop("Software", [("RUNS_ON", "Server")], end="srv-db-01")}
        assert on_db01 == {"billing-db", "analytics-db", "inventory-db"}

        # srv-db-01 is mentioned by several documents: purging one keeps it and the other documents' facts
        graph.purge_document("team-charter.docx")
        assert graph.entity("Server:srv-db-01") is not None
        assert graph.document_facts("team-charter.docx") == {"doc_id": "team-charter.docx", "entities": [], "relations": [],
                                                                 "attributes": []}
        assert graph.entity("Team:security") is not None  # security-policy.html still mentions it
        apps = graph.applications_on_servers_managed_by("Platform Team")
        assert apps == []  # srv-app-0x were said to be Platform-managed only by the charter
        assert graph.orphan_nodes() == [] and graph.untraceable_edges() == []


def test_embedded_store_is_released_between_sessions(store, corpus_facts):
    with store.session() as graph:
        graph.replace_document("oncall-handbook.txt", corpus_facts["oncall-handbook.txt"])
    with store.session() as graph:  # reopen the same file: nothing held
        assert graph.stats()["entities"] == len(corpus_facts["oncall-handbook.txt"]["entities"])


# ------------------------------------------------------------------------------------------ Dagster assets

def run_kg(instance, docs: Path, key: str, graph_store: GraphStore):
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    # an ephemeral Dagster instance a resource context entered and the garbage collector half-disposed can
    # leave a dead "current defs-state storage" behind, which Definitions then fail to resolve
    with set_defs_state_storage(None):
        result = materialize(KG_ASSETS, partition_key=key, instance=instance,
                             resources={"documents": DocumentSource(root=str(docs)), "graph_store": graph_store,
                                        "embedder": Embedder(),
                                        "milvus": MilvusStore(uri=str(docs.parent / "milvus.db"))},
                             raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    checks = {(c.asset_key.to_user_string(), c.check_name): c.passed for c in result.get_asset_check_evaluations()}
    for name in ("shacl_conformance", "domain_range_valid"):
        assert checks[("graph_facts", name)], name
    for name in ("no_orphan_nodes", "edges_traceable_to_chunks", "graph_matches_facts"):
        assert checks[("knowledge_graph", name)], name
    return result


def test_pipeline_changed_document_replaces_facts_and_purge(tmp_path):
    from pipelines.jobs import purge_documents_job
    from pipelines.sensors import purge_run_config

    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(SAMPLE_CORPUS / "infrastructure-overview.md", docs / "infra.md")
    (docs / "ops.txt").write_text("Operations notes\n\nThe Platform Team manages srv-app-01 and srv-db-01.\n"
                                  "The application Billing Service runs on srv-app-01.\n")
    store = GraphStore(backend="ladybug", path=str(tmp_path / "graph.lbug"))
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME, ["infra.md", "ops.txt"])
    first = run_kg(instance, docs, "infra.md", store)
    assert first.output_for_node("knowledge_graph")["relations"] > 5
    run_kg(instance, docs, "ops.txt", store)
    with store.session() as graph:
        infra_before = graph.document_facts("infra.md")
        assert ("Application:reporting-engine", "RUNS_ON", "Server:srv-app-01") in triples(infra_before)
        assert graph.entity("Database:analytics-db") is not None

    # the document changes: Reporting Engine moves to srv-app-03, analytics-db is no longer mentioned
    text = (docs / "infra.md").read_text()
    text = text.replace("The application Reporting Engine runs on srv-app-01 and depends\non the database analytics-db.",
                        "The application Reporting Engine runs on srv-app-03.")
    text = text.replace("The database analytics-db runs on srv-db-01 and is managed by the Data Team.", "")
    assert "analytics-db" not in text
    (docs / "infra.md").write_text(text)
    changed = run_kg(instance, docs, "infra.md", store)
    assert changed.output_for_node("knowledge_graph")["removed_relations"] >= 1
    with store.session() as graph:
        after = triples(graph.document_facts("infra.md"))
        assert ("Application:reporting-engine", "RUNS_ON", "Server:srv-app-03") in after
        assert ("Application:reporting-engine", "RUNS_ON", "Server:srv-app-01") not in after
        assert graph.entity("Database:analytics-db") is None  # only the old version mentioned it
        old_chunks = {e for ent in infra_before["entities"] for e in ent["chunk_ids"]}
        new_chunks = {e for ent in graph.document_facts("infra.md")["entities"] for e in ent["chunk_ids"]}
        assert old_chunks != new_chunks  # provenance points to the new chunks only
        assert graph.orphan_nodes() == [] and graph.untraceable_edges() == []
        answer = {p["names"][0] for p in graph.applications_on_servers_managed_by("Platform Team")}
        assert answer == {"Billing Service"}  # ops.txt: srv-app-01 is Platform-managed

    # the document is deleted: the purge job (both ops, as the sensor configures them) removes its facts
    defs = Definitions(jobs=[purge_documents_job],
                       resources={"graph_store": store, "milvus": MilvusStore(uri=str(tmp_path / "m.db"))})
    result = defs.resolve_job_def("purge_documents_job").execute_in_process(
        run_config=purge_run_config(["infra.md"]), instance=instance)
    assert result.success
    with store.session() as graph:
        assert graph.document_facts("infra.md")["entities"] == []
        assert graph.entity("Application:reporting-engine") is None
        # shared entities survive with the other document's facts
        assert graph.entity("Server:srv-app-01") is not None and graph.entity("Application:billing") is not None
        assert triples(graph.document_facts("ops.txt")) == {
            ("Server:srv-app-01", "MANAGED_BY", "Team:platform"),
            ("Server:srv-db-01", "MANAGED_BY", "Team:platform"),
            ("Application:billing", "RUNS_ON", "Server:srv-app-01")}
        assert graph.orphan_nodes() == [] and graph.untraceable_edges() == []


def test_embedded_store_waits_for_another_process_then_gives_up_clearly(tmp_path):
    import subprocess
    import sys
    import time

    path = tmp_path / "graph.lbug"
    with GraphStore(path=str(path)).session():
        pass
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time, ladybug; db = ladybug.Database(sys.argv[1]); print('held', flush=True); "
                               "time.sleep(float(sys.argv[2]))", str(path), "3"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match="held by another process"):
            with GraphStore(path=str(path), lock_timeout_s=0.5).session():
                pass
        started = time.monotonic()
        with GraphStore(path=str(path), lock_timeout_s=60).session() as graph:
            assert graph.stats()["entities"] == 0
        assert time.monotonic() - started > 0.5  # it waited for the holder to exit
    finally:
        holder.wait(timeout=30)


def test_aliases_merge_across_documents_and_leave_with_them(store, ontology):
    a = extract_facts(text_chunks("a.md", "The application Order API runs on the server srv-web-01."), ontology)
    b = extract_facts(text_chunks("b.md", "The Infra Team manages srv-web-01. The application ORDER API uses the billing database."),
                      ontology)
    with store.session() as graph:
        graph.replace_document("a.md", a)
        graph.replace_document("b.md", b)
        order = graph.entity("Application:order")
        assert order["name"] == "Order API" and order["aliases"] == ["ORDER API"]  # b.md's spelling is an alias
        assert "Infra Team" in graph.entity("Team:platform")["aliases"]
        assert [p["names"][0] for p in graph.applications_on_servers_managed_by("Platform Team")] == ["Order API"]
        graph.purge_document("b.md")
        assert graph.entity("Application:order")["aliases"] == []
        assert graph.entity("Team:platform") is None and graph.entity("Database:billing-db") is None
        assert graph.orphan_nodes() == [] and graph.untraceable_edges() == []


def test_failing_shacl_check_blocks_the_graph_write(tmp_path, monkeypatch):
    """A stricter shapes file (team names must start with 'x') makes graph_facts' blocking check fail:
    knowledge_graph does not run and the store keeps nothing from the document."""
    onto = tmp_path / "onto"
    shutil.copytree(load_ontology().directory, onto)
    with (onto / "shapes.ttl").open("a") as handle:
        handle.write('\nshapes:StrictTeamShape a sh:NodeShape ; sh:targetClass infra:Team ;\n'
                     '    sh:property [ sh:path kg:name ; sh:pattern "^x" ] .\n')
    monkeypatch.setenv("DOCPLATFORM_ONTOLOGY_DIR", str(onto))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ops.txt").write_text("The Platform Team manages srv-app-01.\n")
    store = GraphStore(path=str(tmp_path / "graph.lbug"))
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME, ["ops.txt"])
    result = materialize(KG_ASSETS, partition_key="ops.txt", instance=instance, raise_on_error=False,
                         resources={"documents": DocumentSource(root=str(docs)), "graph_store": store,
                                    "embedder": Embedder(), "milvus": MilvusStore(uri=str(tmp_path / "milvus.db"))})
    assert not result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["shacl_conformance"] is False and checks["domain_range_valid"] is True
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "graph_facts" in materialized and "knowledge_graph" not in materialized
    with store.session() as graph:
        assert graph.stats()["entities"] == 0


# ------------------------------------------------------------------------------------------ hardening

def test_failed_write_keeps_the_real_error_and_the_old_facts(store, corpus_facts):
    """ladybug rolls a transaction back itself when a query fails; the error must be the query's own
    ('Binder exception ...'), not 'No active transaction for ROLLBACK', and nothing may be half-written."""
    with store.session() as graph:
        graph.replace_document("oncall-handbook.txt", corpus_facts["oncall-handbook.txt"])
        before = graph.document_facts("oncall-handbook.txt")
        with pytest.raises(RuntimeError, match="NoSuchTable") as failure, graph._transaction() as tx:
            tx("MATCH (k:Chunk) DETACH DELETE k")
            tx("MATCH (k:NoSuchTable) RETURN k")
        assert "ROLLBACK" not in str(failure.value)
        assert graph.document_facts("oncall-handbook.txt") == before
        # a Python error inside the transaction still rolls back (ladybug still has it open)
        with pytest.raises(KeyError), graph._transaction() as tx:
            tx("MATCH (k:Chunk) DETACH DELETE k")
            raise KeyError("boom")
        assert graph.document_facts("oncall-handbook.txt") == before


def test_same_document_twice_is_idempotent_and_an_entity_free_version_empties_it(store, ontology, recwarn):
    chunks = text_chunks("a.md", "The application Order API runs on the server srv-web-01.",
                         "The Platform Team manages srv-web-01. Order API is backed by billing-db.")
    facts = extract_facts(chunks, ontology)
    with store.session() as graph:
        graph.replace_document("a.md", facts, chunks)
        first, stats = graph.document_facts("a.md"), graph.stats()
        again = graph.replace_document("a.md", facts, chunks)
        assert again["removed_entities"] == 0 and again["removed_relations"] == again["relations"] == len(facts["relations"])
        assert graph.document_facts("a.md") == first and graph.stats() == stats
        # the document changes to text without any entity: its facts go, the run must not fail
        empty = extract_facts(text_chunks("a.md", "Lunch menu: soup of the day is tomato."), ontology)
        assert set(empty.pop("seconds_by_layer")) >= {"parse", "sentences"}  # where extraction time went
        assert empty == {"doc_id": "a.md", "entities": [], "relations": [], "attributes": [], "rejected": []}
        assert ontology.validate_shacl(empty)[0] and domain_range_violations(empty, ontology) == []
        graph.replace_document("a.md", empty)
        assert graph.stats() == {"entities": 0, "chunks": 0, "relations": {"DEPENDS_ON": 0, "MANAGED_BY": 0, "RUNS_ON": 0}}
        assert graph.orphan_nodes() == [] and graph.untraceable_edges() == []
    # no "[W036] ... does not have any patterns" warning per chunk for a document without names
    assert not [w for w in recwarn if "W036" in str(w.message)]


def test_entity_name_follows_the_documents_that_still_mention_it(store, ontology):
    a = extract_facts(text_chunks("a.md", "The application Order API runs on the server srv-web-01."), ontology)
    b = extract_facts(text_chunks("b.md", "The application ORDER API uses the billing database."), ontology)
    with store.session() as graph:
        graph.replace_document("a.md", a)
        graph.replace_document("b.md", b)
        assert graph.entity("Application:order")["name"] == "Order API"
        graph.purge_document("a.md")  # the spelling "Order API" left with a.md
        order = graph.entity("Application:order")
        assert order["name"] == "ORDER API" and order["aliases"] == []
        assert graph.find_entities("order api")[0]["id"] == "Application:order"
        # a.md comes back: its spelling is an alias again, the name does not flip back and forth
        graph.replace_document("a.md", a)
        assert graph.entity("Application:order")["aliases"] == ["Order API"]
        # known individuals keep their canonical name whatever alias the remaining document uses
        graph.replace_document("c.md", extract_facts(text_chunks("c.md", "The Infra Team manages srv-web-01."), ontology))
        assert graph.entity("Team:platform")["name"] == "Platform Team"


def test_non_ascii_names_keep_distinct_ids_and_queries(store, ontology):
    from assets.knowledge_graph import Resolver
    from resources.ontology import normalize_name

    # ASCII keys are unchanged; other scripts are no longer erased (both of these used to be 'team')
    assert normalize_name("The Platform Team") == "platform-team" and normalize_name("billing_db") == "billing-db"
    assert normalize_name("결제 Team") != normalize_name("보안 Team")
    assert normalize_name("Café Team") == normalize_name("CAFÉ team") == normalize_name("Cafe\u0301 Team") != "caf-team"
    from assets.knowledge_graph.mentions import lexicon_for

    resolver = Resolver(ontology, lexicon_for(ontology))
    ids = {name: resolver.entity_id("Team", name) for name in ("결제 Team", "보안 Team")}
    facts = {"doc_id": "ko.md", "entities": [
        {"id": ids["결제 Team"], "label": "Team", "name": "결제 Team", "aliases": [], "chunk_ids": ["ko#0"]},
        {"id": ids["보안 Team"], "label": "Team", "name": "보안 Team", "aliases": [], "chunk_ids": ["ko#1"]},
        {"id": "Server:srv-ko-01", "label": "Server", "name": "srv-ko-01", "aliases": [], "chunk_ids": ["ko#0"]}],
        "relations": [{"source": "Server:srv-ko-01", "type": "MANAGED_BY", "target": ids["결제 Team"],
                       "chunk_id": "ko#0", "sentence": "결제 Team manages srv-ko-01."}]}
    assert ontology.validate_shacl(facts)[0]
    with store.session() as graph:
        graph.replace_document("ko.md", facts)
        assert [e["name"] for e in graph.find_entities("결제 Team")] == ["결제 Team"]
        assert [p["ids"] for p in graph.multi_hop("Server", [("MANAGED_BY", "Team")], end="보안 Team")] == []
        assert len(graph.multi_hop("Server", [("MANAGED_BY", "Team")], end="결제 team")) == 1
        assert graph.find_entities("???") == []
    café = extract_facts(text_chunks("fr.md", "The Café Team operates srv-z-01."), ontology)
    assert {e["id"] for e in café["entities"]} == {"Team:café", "Server:srv-z-01"}


def test_long_document_many_chunks_small_batches(tmp_path, ontology, monkeypatch):
    """Names introduced once are found bare in later chunks (one gazetteer for the document, not one per
    chunk), and writes in batches smaller than the document keep every fact."""
    import assets.knowledge_graph.extract as kg

    built = []
    original = kg.Gazetteer
    monkeypatch.setattr(kg, "Gazetteer", lambda *a: built.append(1) or original(*a))
    n = 60
    chunks = text_chunks("long.md", *[
        f"The application Service{i} runs on the server srv-n{i}-01. The Platform Team manages srv-n{i}-01. "
        f"Service{(i + 1) % n} depends on Service{i}." for i in range(n)])
    facts = extract_facts(chunks, ontology)
    assert len(built) == 1
    assert ("Application:service1", "DEPENDS_ON", "Application:service0") in triples(facts)
    assert len([r for r in facts["relations"] if r["type"] == "DEPENDS_ON"]) == n
    assert len(facts["entities"]) == 2 * n + 1 and len(facts["relations"]) == 3 * n
    store = GraphStore(backend="ladybug", path=str(tmp_path / "graph.lbug"), batch_size=7)
    with store.session() as graph:
        summary = graph.replace_document("long.md", facts, chunks)
        assert (summary["entities"], summary["relations"], summary["chunks"]) == (2 * n + 1, 3 * n, n)
        stored = graph.document_facts("long.md")
        assert {e["id"] for e in stored["entities"]} == {e["id"] for e in facts["entities"]}
        assert triples(stored) == triples(facts)
        assert graph.entity("Team:platform")["name"] == "Platform Team"
        assert len(graph.applications_on_servers_managed_by("Infra Team")) == n
        assert graph.orphan_nodes() == [] and graph.untraceable_edges() == []


def test_pipeline_entity_free_and_odd_named_documents(tmp_path):
    """An empty-but-valid document (no entities) and a document id with quotes, a backslash and non-ASCII
    letters go through graph_facts and knowledge_graph with every check passing, twice (idempotent)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    plain, odd = "lunch menu.txt", "it's \"q\" back\\slash ü 한국.txt"
    (docs / plain).write_text("Lunch menu\n\nSoup of the day is tomato. Nothing technical here.\n")
    (docs / odd).write_text("Odd notes\n\nThe Platform Team manages srv-q-01. The application Quote Service runs on srv-q-01.\n")
    store = GraphStore(backend="ladybug", path=str(tmp_path / "graph.lbug"))
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME, [plain, odd])
    for _ in range(2):
        result = run_kg(instance, docs, plain, store)
        assert result.output_for_node("knowledge_graph")["entities"] == 0
        result = run_kg(instance, docs, odd, store)
        assert result.output_for_node("knowledge_graph")["relations"] == 2
    with store.session() as graph:
        facts = graph.document_facts(odd)
        assert triples(facts) == {("Server:srv-q-01", "MANAGED_BY", "Team:platform"),
                                  ("Application:quote", "RUNS_ON", "Server:srv-q-01")}
        assert graph.stats()["chunks"] == 1
        graph.purge_document(odd)
        assert graph.stats()["entities"] == 0


def test_embedded_store_fails_at_once_on_errors_that_are_not_the_lock(tmp_path):
    """Only ladybug's lock error is waited out: an error that merely mentions a path under .../locks/ or a
    'block' must surface at once, not after lock_timeout_s as 'held by another process'."""
    import time
    import types

    path = tmp_path / "locks" / "graph.lbug"
    store = GraphStore(path=str(path), lock_timeout_s=30)
    for message in (f"IO exception: Cannot open file {path}: Permission denied",
                    "Runtime exception: Corrupted data in block 7"):
        def database(_path, message=message):
            raise RuntimeError(message)

        started = time.monotonic()
        with pytest.raises(RuntimeError) as failure:
            store._open_embedded(types.SimpleNamespace(Database=database))
        assert str(failure.value) == message and time.monotonic() - started < 5
    # the real lock message (path included) is waited out, then reported clearly
    calls = []

    def locked(_path):
        calls.append(1)
        raise RuntimeError(f"IO exception: Could not set lock on file : {path} (Lock is held by PID 1)")

    with pytest.raises(RuntimeError, match="held by another process"):
        GraphStore(path=str(path), lock_timeout_s=0.6)._open_embedded(types.SimpleNamespace(Database=locked))
    assert len(calls) >= 2


def test_embedded_store_released_when_the_connection_cannot_be_made(tmp_path, monkeypatch):
    """If ladybug.Connection fails, the database is closed at once: the kept error (Dagster keeps it, with
    its traceback and so the session's frame) must not hold the file lock against other processes."""
    import subprocess
    import sys

    import ladybug

    path = tmp_path / "graph.lbug"
    with GraphStore(path=str(path)).session():
        pass

    def no_connection(database):
        raise RuntimeError("connection refused for the test")

    monkeypatch.setattr(ladybug, "Connection", no_connection)
    with pytest.raises(RuntimeError, match="refused for the test") as kept, GraphStore(path=str(path)).session():
        pass
    other = subprocess.run([sys.executable, "-c", "import sys, ladybug; ladybug.Database(sys.argv[1]); print('opened')",
                            str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert kept.value is not None and "opened" in other.stdout, other.stderr[-500:]


def test_one_entity_across_documents_that_saw_different_classes(store, ontology):
    """A host table only says 'software' (Software:x), a service page says 'application' (Application:x): the graph
    keeps one entity with the more specific class, so multi-hop questions about applications find it."""
    table = {"doc_id": "hosts.md", "entities": [
        {"id": "Software:geo-api", "label": "Software", "name": "geo-api", "aliases": [], "chunk_ids": ["h#0"]},
        {"id": "Server:mx-01", "label": "Server", "name": "mx-01", "aliases": [], "chunk_ids": ["h#0"]},
        {"id": "Team:maps", "label": "Team", "name": "Maps Team", "aliases": [], "chunk_ids": ["h#0"]}],
        "relations": [{"source": "Software:geo-api", "type": "RUNS_ON", "target": "Server:mx-01", "chunk_id": "h#0"},
                      {"source": "Server:mx-01", "type": "MANAGED_BY", "target": "Team:maps", "chunk_id": "h#0"}]}
    page = {"doc_id": "geo.md", "entities": [
        {"id": "Application:geo-api", "label": "Application", "name": "geo-api", "aliases": [], "chunk_ids": ["g#0"]},
        {"id": "Team:maps", "label": "Team", "name": "Maps Team", "aliases": [], "chunk_ids": ["g#0"]}],
        "relations": [{"source": "Application:geo-api", "type": "MANAGED_BY", "target": "Team:maps", "chunk_id": "g#0"}]}
    with store.session() as graph:
        graph.replace_document("hosts.md", table)
        summary = graph.replace_document("geo.md", page)
        assert summary["id_map"] == {"Application:geo-api": "Software:geo-api"}
        assert graph.entity("Software:geo-api")["label"] == "Application" and graph.entity("Application:geo-api") is None
        assert [p["names"] for p in graph.applications_on_servers_managed_by("Maps Team")] == [["geo-api", "mx-01", "Maps Team"]]
        # the less specific document again: the class stays the most specific one seen
        graph.replace_document("hosts.md", table)
        assert graph.entity("Software:geo-api")["label"] == "Application"
        assert graph.orphan_nodes() == [] and graph.untraceable_edges() == []


@pytest.mark.slow  # a Dagster ingest run of two documents
def test_a_run_knows_the_names_its_tables_type_in_every_document(tmp_path):
    """graph_facts reads the batch's tables first: the chat log's lower-case names get the inventory's classes."""
    from tests.platform_harness import Platform

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "inventory.md").write_text("# Depot inventory\n\n| Name | Kind | Runs on | Team |\n|---|---|---|---|\n"
                                       "| ticket sorter | application | sx-node-4 | Depot Crew |\n"
                                       "| sorter-store | database | sx-node-9 | Depot Crew |\n")
    (docs / "chat.txt").write_text("[09:12] ana: heads up, ticket sorter writes to sorter-store, so a slow "
                                   "sorter-store stalls the queue\n")
    with Platform.create(tmp_path, docs) as platform:
        keys = ["chat.txt", "inventory.md"]
        platform.add(*keys)
        result = platform.ingest_batch(keys)
        assert result.success
        metadata = result.asset_materializations_for_node("graph_facts")[0].metadata
        assert metadata["corpus_names"].value == 5  # two applications/databases, two servers, one team
        with platform.defs.resources["graph_store"].session() as graph:
            chat = triples(graph.document_facts("chat.txt"))
    assert ("Application:ticket-sorter", "DEPENDS_ON", "Database:sorter-store") in chat
