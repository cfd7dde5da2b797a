"""Dagster Definitions for the whole platform, merged from one Definitions object per stage."""

from dagster import Definitions

from assets import audit, finetune, ingestion, knowledge_graph
from pipelines.jobs import audit_job, extraction_finetune_job, finetune_job, ingest_job, purge_documents_job
from pipelines.schedules import nightly_reindex_schedule, weekly_index_audit_schedule
from pipelines.sensors import documents_folder_sensor
from pipelines.finetune_sensor import corpus_moved_refinetune_sensor
from resources import DocumentSource, Embedder, MilvusStore
from resources.graph_store import GraphStore
from resources.llm import finetune_default_resources


def default_resources() -> dict:
    """Embedded defaults: bundled sample corpus (or $DOCPLATFORM_DOCUMENTS_DIR), packaged MiniLM, milvus-lite file,
    ladybug graph file under the data dir ($DOCPLATFORM_GRAPH_BACKEND=neo4j for Neo4j), fine-tune resources."""
    from pipelines.partitions import BatchFilesystemIOManager  # stores batched runs' values per document partition

    from assets.knowledge_graph.llm import extraction_adapter_registry

    return {"documents": DocumentSource(), "embedder": Embedder(), "milvus": MilvusStore(),
            "graph_store": GraphStore(), "io_manager": BatchFilesystemIOManager(),
            "extraction_adapter_registry": extraction_adapter_registry()} | finetune_default_resources()


# One Definitions per stage, merged into one code location; resources are bound once, in build_defs.
# (Kept in a list: a single Definitions at module scope lets `dagster dev -m pipelines.definitions` find it.)
STAGE_DEFS = [
    # Ingestion: document partitions -> elements -> chunks -> Milvus vectors; sensor and nightly schedule.
    Definitions(
        assets=ingestion.ingestion_assets,
        jobs=[ingest_job, purge_documents_job],
        schedules=[nightly_reindex_schedule],
        sensors=[documents_folder_sensor],
    ),
    # Weekly full audit (Milvus vs per-document state, whole graph); the per-run checks are scoped to the run.
    Definitions(assets=audit.audit_assets, jobs=[audit_job], schedules=[weekly_index_audit_schedule]),
    # Knowledge graph: ontology-guided extraction per document (graph_facts) written to the graph store.
    Definitions(assets=knowledge_graph.knowledge_graph_assets),
    # Fine-tune: dataset -> LoRA adapter -> vLLM deployment, launched from the UI as finetune_job.
    Definitions(assets=finetune.finetune_assets, jobs=[finetune_job], sensors=[corpus_moved_refinetune_sensor]),
    # Self-improving extraction: examples + trusted graph facts -> extraction adapter -> vLLM, used by the LLM layer.
    Definitions(assets=finetune.extraction_assets, jobs=[extraction_finetune_job]),
]


def build_defs(**resource_overrides) -> Definitions:
    """The platform's Definitions with the embedded-default resources, any of them replaced by keyword."""
    return Definitions.merge(*STAGE_DEFS, Definitions(resources=default_resources() | resource_overrides))


defs = build_defs()
