"""Shared by the fine-tune and vLLM deployment tests: constructed chunks/graph facts, stub upstream assets,
and in-process materialisation of the real finetune assets against a temporary Dagster instance."""

from pathlib import Path

from dagster import AssetKey, DagsterInstance, FilesystemIOManager, asset, materialize

from assets import finetune
from pipelines.partitions import DOCUMENTS_PARTITIONS_NAME, documents_partitions
from resources import Embedder, MilvusStore
from tests.platform_harness import QUIET, failure_message  # noqa: F401  (failure_message re-exported)


DOC_TEXTS = {
    "ops/infrastructure.md": [
        "Billing database\nThe billing database runs on the primary PostgreSQL cluster. It is managed by the payments "
        "team. Contact alice.kim@example.com or call 010-1234-5678 for access.",
        "Search service\nThe search service depends on Milvus for vector retrieval. Neo4j stores the knowledge graph. "
        "Escalations go to +82 2 123 4567 during business hours.",
        "Deployments\nEvery deployment follows the runbook: drain traffic, roll out, verify health checks, then "
        "restore traffic. Rollbacks are announced in the platform channel.",
    ],
    "hr/oncall.txt": [
        "On-call rotation\nOn-call engineers answer pages within fifteen minutes. The resident registration number "
        "900101-1234567 of an employee must never be written into a ticket.",
        "Security\nThe security policy forbids storing credentials in documents. Report incidents to "
        "security@corp.example within one hour, or phone (555) 123-4567.",
        # the same passage as in ops/infrastructure.md, only the contact differs (PII): a duplicate after scrubbing
        "Billing database\nThe billing database runs on the primary PostgreSQL cluster. It is managed by the payments "
        "team. Contact bob.lee@example.com or call 010-9876-5432 for access.",
    ],
}


def chunk_rows(doc_id: str, texts: list[str]) -> list[dict]:
    from assets.chunking import chunk_id_for

    return [{"chunk_id": chunk_id_for(doc_id, seq, text), "doc_id": doc_id, "doc_sha256": "0" * 64, "seq": seq,
             "text": text, "page_numbers": []} for seq, text in enumerate(texts)]


CHUNKS = {doc_id: chunk_rows(doc_id, texts) for doc_id, texts in DOC_TEXTS.items()}


def graph_facts_for(doc_id: str) -> dict:
    """Facts in the graph_facts contract shape, referencing the constructed chunks."""
    chunks = CHUNKS[doc_id]
    if doc_id == "ops/infrastructure.md":
        ents = [("svc:billing-db", "Service", "billing database", ["billing db"], 0),
                ("tech:postgresql", "Technology", "PostgreSQL", ["Postgres"], 0),
                ("team:payments", "Team", "payments team", [], 0),
                ("svc:search", "Service", "search service", [], 1),
                ("tech:milvus", "Technology", "Milvus", [], 1)]
        rels = [("svc:billing-db", "RUNS_ON", "tech:postgresql", 0,
                 "The billing database runs on the primary PostgreSQL cluster."),
                ("svc:billing-db", "MANAGED_BY", "team:payments", 0, "It is managed by the payments team."),
                ("svc:search", "DEPENDS_ON", "tech:milvus", 1,
                 "The search service depends on Milvus for vector retrieval.")]
    else:
        ents = [("team:security", "Team", "security team", ["secops"], 1)]
        rels = []
    return {
        "doc_id": doc_id,
        "entities": [{"id": i, "label": label, "name": name, "aliases": aliases, "chunk_ids": [chunks[c]["chunk_id"]]}
                     for i, label, name, aliases, c in ents],
        "relations": [{"source": s, "type": t, "target": o, "chunk_id": chunks[c]["chunk_id"], "sentence": sentence}
                      for s, t, o, c, sentence in rels],
    }


FACTS = {doc_id: graph_facts_for(doc_id) for doc_id in CHUNKS}


@asset(name="document_chunks", partitions_def=documents_partitions, group_name="ingestion")
def stub_document_chunks(context) -> list:
    return CHUNKS[context.partition_key]


@asset(name="graph_facts", partitions_def=documents_partitions, group_name="knowledge_graph")
def stub_graph_facts(context) -> dict:
    return FACTS[context.partition_key]


def dataset_uses_graph_facts() -> bool:
    return AssetKey("graph_facts") in set(finetune.finetune_dataset.keys_by_input_name.values())


def upstream_stubs() -> list:
    return [stub_document_chunks] + ([stub_graph_facts] if dataset_uses_graph_facts() else [])


class FinetuneHarness:
    """A temporary Dagster instance whose document partitions hold the constructed chunks (and facts)."""

    def __init__(self, root: Path, resources: dict):
        self.root = root
        self.instance = DagsterInstance.ephemeral(tempdir=str(root / "dagster"))
        # finetune_dataset searches the job's Milvus index for distractors: none here, so the chunks' word overlap
        self.resources = {"io_manager": FilesystemIOManager(base_dir=str(root / "storage")),
                          "milvus": MilvusStore(uri=str(root / "milvus.db")), "embedder": Embedder()} | resources
        self.instance.add_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME, sorted(CHUNKS))
        for key in sorted(CHUNKS):
            result = materialize(upstream_stubs(), partition_key=key, instance=self.instance,
                                 resources=self.resources, run_config=QUIET)
            assert result.success

    def run(self, assets: list, run_config: dict | None = None, resources: dict | None = None):
        """Materialise the given finetune assets (upstream stubs are loaded from storage, not re-run)."""
        return materialize(
            upstream_stubs() + finetune.finetune_assets, selection=list(assets), instance=self.instance,
            resources=self.resources | (resources or {}), run_config=(run_config or {}) | QUIET,
            raise_on_error=False,
        )

    def close(self):
        self.instance.dispose()


def check_results(result) -> dict:
    """{check_name: passed} of a materialize() result."""
    out = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            out[data.check_name] = data.passed
    return out


def materialized(result) -> set[str]:
    return {event.asset_key.to_user_string() for event in result.all_events
            if event.event_type_value == "ASSET_MATERIALIZATION"}
