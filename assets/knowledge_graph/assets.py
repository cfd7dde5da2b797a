"""Dagster assets of the knowledge-graph stage: thin wrappers over the plain extraction and store functions."""

import os
from collections import Counter

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    Config,
    AssetExecutionContext,
    Failure,
    MetadataValue,
    OpExecutionContext,
    Output,
    RetryRequested,
    asset,
    op,
)

from assets import _offline  # noqa: F401
from assets.batches import batch_of, emit
from assets.ingestion import PurgeConfig
from assets.faults import fault_point
from assets.knowledge_graph.corpus import CorpusNames
from assets.knowledge_graph.extract import (EXTRACTOR_VERSION, ExtractionConfig, extract_facts, ms_per_chunk_by_layer,
                                           silent_on_relations, structure_names)
from pipelines.partitions import documents_backfill_policy, documents_partitions
from resources.graph_backend import remap_entities
from resources.graph_neo4j import neo4j_transient_errors
from resources.graph_store import GraphStore, GraphStoreUnavailable
from resources.ontology import Ontology
from resources.ontology_loading import load_ontology

GROUP = "knowledge_graph"
# knowledge_graph re-runs its step this often when the graph store is held by another process or unreachable,
# waiting backoff * 2**n seconds between tries (each try already waited GraphStore.lock_timeout_s / its own retries)
GRAPH_STEP_RETRIES = int(os.environ.get("DOCPLATFORM_GRAPH_STEP_RETRIES", "3"))
GRAPH_STEP_BACKOFF_S = float(os.environ.get("DOCPLATFORM_GRAPH_STEP_BACKOFF_S", "10"))


class ExtractionSettings(Config):
    """Which extraction layers run (each fact records the layer that found it). The LLM layer sends chunks to a
    served model (vLLM, OpenAI-compatible; serve with a context of at least 2048 tokens) and caches answers."""

    structure: bool = True
    sentences: bool = True
    korean: bool = True
    examples: bool = True  # learn from examples.jsonl beside the ontology, when there is one
    llm: bool = False
    llm_url: str = ""  # default: $DOCPLATFORM_VLLM_URL
    llm_model: str = ""  # default: the served base model
    llm_timeout_s: float = 120.0
    # refuse rdfs:domain/rdfs:range terms the ontology does not declare as classes (default: infer them, as RDFS
    # does, and list them in the metadata); also $DOCPLATFORM_STRICT_ONTOLOGY=true
    strict_ontology: bool = False

    def extraction_config(self) -> ExtractionConfig:
        return ExtractionConfig(**self.model_dump(exclude={"strict_ontology"}))


def ontology_metadata(ontology: Ontology) -> dict:
    """The ontology's load report (inferred classes, literal ranges, imports) for an asset's metadata."""
    report = ontology.load_report
    return {"ontology_files": MetadataValue.json(list(ontology.files)),
            "ontology_load_report": MetadataValue.json(report.as_metadata() if report else {}),
            "ontology_inferred": MetadataValue.md("\n".join(f"- {line}" for line in (report.lines() if report else []))
                                                  or "(nothing inferred: every domain/range is a declared class)"),
            **examples_metadata(ontology)}


def examples_metadata(ontology: Ontology) -> dict:
    """What the user's examples.jsonl taught: examples, triples, skipped lines, and the calibrated threshold where
    this process extracted with them (graph_facts); a report never trains the model."""
    from assets.knowledge_graph.examples import trained_model
    from resources.ontology_examples import load_examples

    examples = load_examples(ontology)
    if examples.path is None:
        return {}
    model = trained_model(ontology)
    return {"examples": MetadataValue.json({
        "file": str(examples.path), "examples": len(examples.examples), "triples": examples.triple_count,
        "problems": examples.problems[:50], "problem_count": len(examples.problems),
        "calibration": model.calibration.as_metadata() if model and model.calibration else None})}


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
    backfill_policy=documents_backfill_policy,
    group_name=GROUP,
    code_version=EXTRACTOR_VERSION,
    description="Entities, relations and literal attributes extracted from the document's chunks and tables, guided by "
                "the ontology (structure, sentence, Korean and optional LLM layers), resolved to canonical ids; every "
                "fact carries the chunk id and the layer that found it.",
    check_specs=[
        AssetCheckSpec("shacl_conformance", asset="graph_facts", blocking=True,
                       description="pyshacl, inference none, against the ontology folder's shapes and the generated "
                                   "domain/range/datatype shapes."),
        AssetCheckSpec("domain_range_valid", asset="graph_facts", blocking=True,
                       description="Every relation is an ontology relation whose rdfs:domain/rdfs:range hold."),
        AssetCheckSpec("relations_found", asset="graph_facts", blocking=False,
                       description="Warns, naming the document, when text that names several entities together "
                                   "yields no relation (an ontology or extractor gap worth a look)."),
    ],
)
def graph_facts(context: AssetExecutionContext, config: ExtractionSettings, document_chunks, parsed_elements):
    # one document, or a batch of them (context.partition_keys): the checks cover every document of the run
    ontology = load_ontology(strict=config.strict_ontology or None)
    settings = config.extraction_config()
    elements_by_doc = batch_of(context, parsed_elements)
    chunks_by_doc = batch_of(context, document_chunks)
    # the names the run's tables and records type are known to each of its documents (corpus.py)
    corpus = CorpusNames.merged([
        structure_names(chunks, ontology, elements=(elements_by_doc.get(key) or {}).get("elements"))
        for key, chunks in chunks_by_doc.items()] if settings.structure else [])
    results, conforms, reports, violations, problems, silent = {}, True, [], 0, [], []
    for key, chunks in chunks_by_doc.items():
        elements = (elements_by_doc.get(key) or {}).get("elements")
        facts = extract_facts(chunks, ontology, elements=elements, config=settings, corpus_names=corpus)
        facts["doc_id"] = facts["doc_id"] or key
        ok, report, count = ontology.validate_shacl(facts)
        conforms, violations = conforms and ok, violations + count
        if not ok:
            reports.append(f"{key}: {report}")
        problems += [f"{key}: {p}" for p in domain_range_violations(facts, ontology)]
        if silent_on_relations(facts):
            silent.append(key)
        results[key] = facts
    all_entities = [e for f in results.values() for e in f["entities"]]
    all_relations = [r for f in results.values() for r in f["relations"]]
    all_attributes = [a for f in results.values() for a in f.get("attributes", [])]
    rejected = [r for f in results.values() for r in f.get("rejected", [])]
    labels = Counter(e["label"] for e in all_entities)
    types = Counter(r["type"] for r in all_relations)
    layers = Counter(r["layer"] for r in all_relations)
    yield Output(
        emit(context, results, {}),
        metadata={
            "documents": len(results),
            "entities": len(all_entities),
            "relations": len(all_relations),
            "attributes": len(all_attributes),
            "entity_labels": MetadataValue.json(dict(labels)),
            "relation_types": MetadataValue.json(dict(types)),
            "relations_by_layer": MetadataValue.json(dict(layers)),
            "ms_per_chunk_by_layer": MetadataValue.json(ms_per_chunk_by_layer(
                results.values(), sum(len(c) for c in chunks_by_doc.values()))),
            "corpus_names": len(corpus),
            "rejected": len(rejected),
            "rejected_sample": MetadataValue.json(rejected[:30]),
            **ontology_metadata(ontology),
            "preview": MetadataValue.md("\n".join(
                f"- {r['source']} **{r['type']}** {r['target']} ({r['layer']})" for r in all_relations[:20])
                or "(no relations)"),
        },
    )
    yield AssetCheckResult(check_name="shacl_conformance", passed=conforms,
                           metadata={"violations": violations, "report": MetadataValue.text("\n".join(reports)[:4000])})
    yield AssetCheckResult(check_name="domain_range_valid", passed=not problems,
                           metadata={"violations": len(problems), "problems": MetadataValue.json(problems[:50])})
    yield AssetCheckResult(
        check_name="relations_found", passed=not silent, severity=AssetCheckSeverity.WARN,
        description=(f"entities but no relations in: {', '.join(silent[:20])}" if silent else None),
        metadata={"documents_without_relations": MetadataValue.json(silent[:50])})


def retry_or_fail(context, graph_store: GraphStore, exc: BaseException, outcome: str):
    """The graph store was unavailable: RetryRequested with backoff, or after the last try a Failure naming it."""
    if context.retry_number >= GRAPH_STEP_RETRIES:
        raise Failure(description=f"{graph_store.location} failed on all {GRAPH_STEP_RETRIES + 1} tries of this step: "
                                  f"{type(exc).__name__}: {str(exc)[:500]}; {outcome}") from exc
    wait = GRAPH_STEP_BACKOFF_S * 2 ** context.retry_number
    context.log.warning(f"{graph_store.location} failed ({type(exc).__name__}: {exc}); retry "
                        f"{context.retry_number + 1}/{GRAPH_STEP_RETRIES} of this step in {wait:g} s")
    raise RetryRequested(max_retries=GRAPH_STEP_RETRIES, seconds_to_wait=wait) from exc


def _write_documents(graph_store: GraphStore, facts_by_doc: dict, chunks_by_doc: dict):
    """Replace each document's facts (one transaction per document) and run the scoped integrity queries."""
    summaries, touched, mismatched, violations = {}, set(), [], 0
    with graph_store.session() as graph:
        for doc_id, facts in facts_by_doc.items():
            touched |= {e["id"] for e in graph.document_facts(doc_id)["entities"]} | {e["id"] for e in facts["entities"]}
            summaries[doc_id] = graph.replace_document(doc_id, facts, chunks_by_doc.get(doc_id, []))
            moved = summaries[doc_id].pop("id_map", {})  # entities the graph already held under a compatible class
            if moved:
                facts = remap_entities(facts, {old: (new, None) for old, new in moved.items()})
                touched |= set(moved.values())
            stored = graph.document_facts(doc_id)
            doc_violations = graph.domain_range_violations(doc_id)
            expected = ({e["id"] for e in facts["entities"]},
                        {(r["source"], r["type"], r["target"], r["chunk_id"]) for r in facts["relations"]},
                        {(a["entity"], a["property"], str(a["value"]), a["chunk_id"]) for a in facts.get("attributes", [])})
            have = ({e["id"] for e in stored["entities"]},
                    {(r["source"], r["type"], r["target"], r["chunk_id"]) for r in stored["relations"]},
                    {(a["entity"], a["property"], a["value"], a["chunk_id"]) for a in stored.get("attributes", [])})
            if expected != have or doc_violations:
                mismatched.append(doc_id)
            violations += len(doc_violations)
        orphans = graph.orphan_nodes(entity_ids=sorted(touched), doc_ids=sorted(facts_by_doc))
        untraceable = graph.untraceable_edges(doc_ids=sorted(facts_by_doc))
        stats = graph.stats()
    return summaries, mismatched, violations, orphans, untraceable, stats


@asset(
    partitions_def=documents_partitions,
    backfill_policy=documents_backfill_policy,
    group_name=GROUP,
    description="The document's facts written to the graph store (ladybug embedded by default, or Neo4j), "
                "replacing what the document said before; entities other documents mention survive.",
    check_specs=[
        AssetCheckSpec("no_orphan_nodes", asset="knowledge_graph", blocking=True,
                       description="Every entity is mentioned in a chunk and every chunk mentions an entity."),
        AssetCheckSpec("edges_traceable_to_chunks", asset="knowledge_graph", blocking=True,
                       description="Every fact edge names a stored chunk of its document that mentions both ends."),
        AssetCheckSpec("graph_matches_facts", asset="knowledge_graph", blocking=True,
                       description="The store holds exactly this document's extracted entities, relations and "
                                   "attributes, and its edges respect domain/range."),
    ],
)
def knowledge_graph(context: AssetExecutionContext, graph_facts, document_chunks, graph_store: GraphStore):
    # one document, or a batch: each document's facts replace its earlier ones; the integrity checks are scoped
    # to what this run touched (its documents' chunks and edges, the entities they mention or mentioned)
    facts_by_doc, chunks_by_doc = batch_of(context, graph_facts), batch_of(context, document_chunks)
    fault_point("before_graph_write")
    try:
        written = _write_documents(graph_store, facts_by_doc, chunks_by_doc)
    except (GraphStoreUnavailable, *neo4j_transient_errors()) as exc:
        # held by another process / server down: each document's replacement is one transaction, so nothing stored
        # was removed; the documents' index state stays pending, so a later run writes them if these tries fail
        retry_or_fail(context, graph_store, exc, "nothing stored was removed and these documents stay pending, so "
                                                 "the next run writes them")
    summaries, mismatched, violations, orphans, untraceable, stats = written
    totals = Counter()
    for summary in summaries.values():
        totals.update({k: v for k, v in summary.items() if isinstance(v, int)})
    value = {doc: summary | {"backend": graph_store.backend} for doc, summary in summaries.items()}
    yield Output(
        emit(context, value, {}),
        metadata={**dict(totals), "documents": len(summaries), "backend": graph_store.backend,
                  "graph_entities_total": stats["entities"], "graph_relations_total": MetadataValue.json(stats["relations"]),
                  **ontology_metadata(load_ontology())},
    )
    yield AssetCheckResult(check_name="no_orphan_nodes", passed=not orphans,
                           metadata={"orphans": len(orphans), "sample": MetadataValue.json(orphans[:20])})
    yield AssetCheckResult(check_name="edges_traceable_to_chunks", passed=not untraceable,
                           metadata={"untraceable": len(untraceable), "sample": MetadataValue.json(untraceable[:20])})
    yield AssetCheckResult(
        check_name="graph_matches_facts", passed=not mismatched,
        metadata={"documents": len(summaries), "mismatched_documents": MetadataValue.json(mismatched[:50]),
                  "domain_range_violations": violations})


@op(description="Remove deleted documents' facts and provenance from the knowledge graph.")
def purge_document_graph(context: OpExecutionContext, config: PurgeConfig, graph_store: GraphStore) -> list[str]:
    try:
        with graph_store.session() as graph:
            for doc_id in config.doc_ids:
                removed = graph.purge_document(doc_id)
                context.log.info(f"purged graph facts of deleted document {doc_id!r}: {removed}")
    except (GraphStoreUnavailable, *neo4j_transient_errors()) as exc:
        # the vectors are already purged (and the state rows with them): the sensor will not ask again
        retry_or_fail(context, graph_store, exc, f"the graph still holds the facts of {config.doc_ids[:20]}: run "
                                                 "purge_documents_job again with the same doc_ids")
    return config.doc_ids


knowledge_graph_assets = [graph_facts, knowledge_graph]

__all__ = ["extract_facts", "graph_facts", "knowledge_graph", "knowledge_graph_assets",
           "purge_document_graph", "domain_range_violations"]
