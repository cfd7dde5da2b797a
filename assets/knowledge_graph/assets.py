"""Dagster assets of the knowledge-graph stage: thin wrappers over the plain extraction and store functions."""

from collections import Counter

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    MetadataValue,
    OpExecutionContext,
    Output,
    asset,
    op,
)

from assets import _offline  # noqa: F401
from assets.ingestion import PurgeConfig
from assets.knowledge_graph.extract import extract_facts
from pipelines.partitions import documents_partitions
from resources.graph_store import GraphStore
from resources.ontology import Ontology, load_ontology

GROUP = "knowledge_graph"


# --------------------------------------------------------------------------------------------- checks

def domain_range_violations(facts: dict, ontology: Ontology) -> list[str]:
    """Relations whose type is not in the ontology, or whose endpoints break rdfs:domain / rdfs:range."""
    labels = {e["id"]: e["label"] for e in facts.get("entities", [])}
    problems = []
    for rel in facts.get("relations", []):
        rel_type = rel.get("type")
        info = ontology.relations.get(rel_type)
        source, target = labels.get(rel.get("source")), labels.get(rel.get("target"))
        if info is None:
            problems.append(f"{rel_type!r} is not an ontology relation")
        elif source is None or target is None:
            problems.append(f"{rel.get('source')} -{rel_type}-> {rel.get('target')}: endpoint not among the entities")
        elif not ontology.domain_range_ok(rel_type, source, target):
            problems.append(f"{rel['source']} ({source}) -{rel_type}-> {rel['target']} ({target}): "
                            f"needs {info.domain} -> {info.range}")
    for entity in facts.get("entities", []):
        if entity.get("label") not in ontology.classes:
            problems.append(f"{entity.get('id')}: {entity.get('label')!r} is not an ontology class")
    return problems


@asset(
    partitions_def=documents_partitions,
    group_name=GROUP,
    description="Entities and relations extracted from the document's chunks (spaCy + ontology EntityRuler), "
                "resolved to canonical ids; every fact carries the chunk id it came from.",
    check_specs=[
        AssetCheckSpec("shacl_conformance", asset="graph_facts", blocking=True,
                       description="pyshacl, inference none, against ontology_schemas/shapes.ttl."),
        AssetCheckSpec("domain_range_valid", asset="graph_facts", blocking=True,
                       description="Every relation is an ontology relation whose rdfs:domain/rdfs:range hold."),
    ],
)
def graph_facts(context: AssetExecutionContext, document_chunks: list[dict]):
    ontology = load_ontology()
    facts = extract_facts(document_chunks, ontology)
    facts["doc_id"] = facts["doc_id"] or context.partition_key
    conforms, report, violations = ontology.validate_shacl(facts)
    problems = domain_range_violations(facts, ontology)
    labels = Counter(e["label"] for e in facts["entities"])
    types = Counter(r["type"] for r in facts["relations"])
    yield Output(
        facts,
        metadata={
            "entities": len(facts["entities"]),
            "relations": len(facts["relations"]),
            "entity_labels": MetadataValue.json(dict(labels)),
            "relation_types": MetadataValue.json(dict(types)),
            "preview": MetadataValue.md("\n".join(
                f"- {r['source']} **{r['type']}** {r['target']}" for r in facts["relations"][:20]) or "(no relations)"),
        },
    )
    yield AssetCheckResult(check_name="shacl_conformance", passed=conforms,
                           metadata={"violations": violations, "report": MetadataValue.text(report[:4000])})
    yield AssetCheckResult(check_name="domain_range_valid", passed=not problems,
                           metadata={"violations": len(problems), "problems": MetadataValue.json(problems[:50])})


@asset(
    partitions_def=documents_partitions,
    group_name=GROUP,
    description="The document's facts written to the graph store (ladybug embedded by default, or Neo4j), "
                "replacing what the document said before; entities other documents mention survive.",
    check_specs=[
        AssetCheckSpec("no_orphan_nodes", asset="knowledge_graph", blocking=True,
                       description="Every entity is mentioned in a chunk and every chunk mentions an entity."),
        AssetCheckSpec("edges_traceable_to_chunks", asset="knowledge_graph", blocking=True,
                       description="Every fact edge names a stored chunk of its document that mentions both ends."),
        AssetCheckSpec("graph_matches_facts", asset="knowledge_graph", blocking=True,
                       description="The store holds exactly this document's extracted entities and relations, "
                                   "and its edges respect domain/range."),
    ],
)
def knowledge_graph(context: AssetExecutionContext, graph_facts: dict, document_chunks: list[dict], graph_store: GraphStore):
    doc_id = graph_facts["doc_id"]
    with graph_store.session() as graph:
        summary = graph.replace_document(doc_id, graph_facts, document_chunks)
        orphans = graph.orphan_nodes()
        untraceable = graph.untraceable_edges()
        stored = graph.document_facts(doc_id)
        violations = graph.domain_range_violations(doc_id)
        stats = graph.stats()
    expected_entities = {e["id"] for e in graph_facts["entities"]}
    expected_relations = {(r["source"], r["type"], r["target"], r["chunk_id"]) for r in graph_facts["relations"]}
    stored_entities = {e["id"] for e in stored["entities"]}
    stored_relations = {(r["source"], r["type"], r["target"], r["chunk_id"]) for r in stored["relations"]}
    matches = expected_entities == stored_entities and expected_relations == stored_relations and not violations
    yield Output(
        summary | {"backend": graph_store.backend},
        metadata={**{k: v for k, v in summary.items() if isinstance(v, int)}, "backend": graph_store.backend,
                  "graph_entities_total": stats["entities"], "graph_relations_total": MetadataValue.json(stats["relations"])},
    )
    yield AssetCheckResult(check_name="no_orphan_nodes", passed=not orphans,
                           metadata={"orphans": len(orphans), "sample": MetadataValue.json(orphans[:20])})
    yield AssetCheckResult(check_name="edges_traceable_to_chunks", passed=not untraceable,
                           metadata={"untraceable": len(untraceable), "sample": MetadataValue.json(untraceable[:20])})
    yield AssetCheckResult(
        check_name="graph_matches_facts", passed=matches,
        metadata={"entities_expected": len(expected_entities), "entities_stored": len(stored_entities),
                  "relations_expected": len(expected_relations), "relations_stored": len(stored_relations),
                  "domain_range_violations": len(violations)})


@op(description="Remove deleted documents' facts and provenance from the knowledge graph.")
def purge_document_graph(context: OpExecutionContext, config: PurgeConfig, graph_store: GraphStore) -> list[str]:
    with graph_store.session() as graph:
        for doc_id in config.doc_ids:
            removed = graph.purge_document(doc_id)
            context.log.info(f"purged graph facts of deleted document {doc_id!r}: {removed}")
    return config.doc_ids


knowledge_graph_assets = [graph_facts, knowledge_graph]

__all__ = ["OntologyError", "extract_facts", "graph_facts", "knowledge_graph", "knowledge_graph_assets",
           "purge_document_graph", "domain_range_violations"]
