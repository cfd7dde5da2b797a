"""Jobs: the main per-document ingestion job, the purge job for deleted documents, and the fine-tune jobs."""

from dagster import AssetSelection, define_asset_job, in_process_executor, job

from assets.ingestion import purge_document_vectors
from assets.knowledge_graph.assets import purge_document_graph
from pipelines.partitions import documents_partitions

# Embedded stores (milvus-lite, the embedded graph) take one writer process at a time:
# dagster.yaml's run queue limits runs carrying this tag to one at a time.
EMBEDDED_STORE_TAG = {"docplatform/embedded-store": "writer"}

ingest_job = define_asset_job(
    "ingest_job",
    selection=AssetSelection.groups("ingestion", "knowledge_graph"),
    partitions_def=documents_partitions,
    executor_def=in_process_executor,
    tags=EMBEDDED_STORE_TAG,
    description="Main job: one document (partition_key) or a batch of adjacent document partitions (range tags) "
                "from file to chunks, vectors in Milvus and facts in the knowledge graph; a bad document in a batch "
                "is reported by name and skipped.",
)


@job(tags=EMBEDDED_STORE_TAG, executor_def=in_process_executor,
     description="Removes deleted documents' vectors and graph facts (the sensor requests it with their ids).")
def purge_documents_job():
    purge_document_vectors()
    purge_document_graph()


audit_job = define_asset_job(
    "audit_job",
    selection=AssetSelection.groups("audit"),
    executor_def=in_process_executor,
    tags=EMBEDDED_STORE_TAG,
    description="Weekly full audit of the vector index and the knowledge graph (the per-run checks are scoped).",
)


finetune_job = define_asset_job(
    "finetune_job",
    selection=AssetSelection.groups("finetune"),
    description="Fine-tune: instruction dataset from all documents' chunks (+ graph facts) -> LoRA adapter "
                "(blocking eval-loss gate) -> deployment to the vLLM server with smoke completion and rollback.",
    # the dataset step opens the milvus-lite file for RAFT distractors: queued behind ingestion writers
    tags={"docplatform/stage": "finetune"} | EMBEDDED_STORE_TAG,
)


extraction_finetune_job = define_asset_job(
    "extraction_finetune_job",
    selection=AssetSelection.groups("extraction_finetune"),
    description="Self-improving extraction: examples.jsonl + the graph's SHACL-valid high-confidence facts -> "
                "extraction LoRA adapter (blocking eval-loss gate) -> served by vLLM, which the LLM extraction layer "
                "then asks (its served alias).",
    tags={"docplatform/stage": "finetune"},
)
