"""Periodic full audit (its own asset and schedule): the per-run checks are scoped to what a run touched;
this one looks at everything once a week."""

from collections import Counter

from dagster import AssetCheckResult, AssetCheckSpec, AssetExecutionContext, MetadataValue, Output, asset

from assets import _offline  # noqa: F401
from resources.graph_store import GraphStore
from resources.milvus import MilvusStore


def index_audit_findings(milvus: MilvusStore, graph_store: GraphStore) -> dict:
    """Whole-store comparisons: Milvus documents and chunk counts vs the per-document state; graph orphans
    and untraceable edges over the whole graph."""
    states = milvus.document_states()
    with milvus.client() as client:
        counts = Counter(row["doc_id"] for row in milvus._query_all(client, milvus.collection, "", ["doc_id"])) \
            if milvus._ready(client) else Counter()
    with graph_store.session() as graph:
        orphans = graph.orphan_nodes()
        untraceable = graph.untraceable_edges()
    return {
        "documents_in_state": len(states), "documents_in_milvus": len(counts), "vectors": sum(counts.values()),
        "in_milvus_not_state": sorted(set(counts) - set(states)),
        "in_state_not_milvus": sorted(set(states) - set(counts)),
        "count_mismatch": sorted(d for d, s in states.items() if d in counts and counts[d] != s["chunks"]),
        "orphans": orphans, "untraceable": untraceable,
    }


@asset(
    group_name="audit",
    description="Weekly full audit of the vector index and the knowledge graph (the per-run checks are scoped).",
    check_specs=[
        AssetCheckSpec("index_matches_document_state", asset="index_audit",
                       description="Every indexed document has state and the recorded chunk count, and vice versa."),
        AssetCheckSpec("graph_full_no_orphans", asset="index_audit", description="No orphan node in the whole graph."),
        AssetCheckSpec("graph_full_edges_traceable", asset="index_audit",
                       description="Every edge in the whole graph is traceable to a chunk."),
    ],
)
def index_audit(context: AssetExecutionContext, milvus: MilvusStore, graph_store: GraphStore):
    found = index_audit_findings(milvus, graph_store)
    yield Output({k: v if isinstance(v, int) else len(v) for k, v in found.items()},
                 metadata={k: v if isinstance(v, int) else len(v) for k, v in found.items()})
    mismatch = found["in_milvus_not_state"] + found["in_state_not_milvus"] + found["count_mismatch"]
    yield AssetCheckResult(check_name="index_matches_document_state", passed=not mismatch,
                           metadata={"documents": found["documents_in_state"],
                                     "in_milvus_not_state": MetadataValue.json(found["in_milvus_not_state"][:50]),
                                     "in_state_not_milvus": MetadataValue.json(found["in_state_not_milvus"][:50]),
                                     "count_mismatch": MetadataValue.json(found["count_mismatch"][:50])})
    yield AssetCheckResult(check_name="graph_full_no_orphans", passed=not found["orphans"],
                           metadata={"orphans": len(found["orphans"]), "sample": MetadataValue.json(found["orphans"][:20])})
    yield AssetCheckResult(check_name="graph_full_edges_traceable", passed=not found["untraceable"],
                           metadata={"untraceable": len(found["untraceable"]),
                                     "sample": MetadataValue.json(found["untraceable"][:20])})


audit_assets = [index_audit]
