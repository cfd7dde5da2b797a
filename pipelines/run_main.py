"""Run the main job over the documents folder on embedded defaults, then show a search.

    python -m pipelines.run_main [--documents DIR] [--query TEXT]

Uses the Dagster instance of $DAGSTER_HOME (the repository's dagster.yaml: SQLite storage) and
executes each document partition of ingest_job in this process, as the sensor would request them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", help="documents folder (default: bundled sample corpus)")
    parser.add_argument("--query", default="Which team manages the billing database?")
    parser.add_argument("--team", default="Platform Team", help="team for the sample knowledge-graph multi-hop query")
    args = parser.parse_args(argv)
    if args.documents:
        os.environ["DOCPLATFORM_DOCUMENTS_DIR"] = str(Path(args.documents).resolve())
    os.environ.setdefault("DAGSTER_HOME", str(REPO))
    os.environ.setdefault("DOCPLATFORM_DATA_DIR", str(REPO / ".data"))

    import warnings

    warnings.filterwarnings("ignore", message=".*is currently in beta")
    from dagster import DagsterInstance

    from pipelines.definitions import defs
    from pipelines.sensors import plan_changes, purge_run_config
    from pipelines.partitions import DOCUMENTS_PARTITIONS_NAME

    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    instance = DagsterInstance.get()
    resources = defs.resources
    documents = resources["documents"]
    current = {key: doc.sha256 for key, doc in documents.scan().items()}
    known = set(instance.get_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME))
    _, to_delete = plan_changes({}, current, known)
    instance.add_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME, sorted(set(current) - known))
    if to_delete:
        defs.resolve_job_def("purge_documents_job").execute_in_process(
            run_config=purge_run_config(to_delete) | quiet, instance=instance
        )
        for key in to_delete:
            instance.delete_dynamic_partition(DOCUMENTS_PARTITIONS_NAME, key)
        print(f"purged {len(to_delete)} deleted document(s): {', '.join(to_delete)}")

    job = defs.resolve_job_def("ingest_job")
    failures = []
    started = time.perf_counter()
    for key in sorted(current):
        result = job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False, run_config=quiet)
        status = "ok" if result.success else "FAILED"
        if not result.success:
            failures.append(key)
            message = next((e.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"), "")
            print(f"[{status}] {key}: {message}")
        else:
            vectors = result.output_for_node("chunk_vectors")
            print(f"[{status}] {key}: {len(vectors['chunk_ids'])} chunks, {vectors['embedded']} newly embedded")
    print(f"ingested {len(current) - len(failures)}/{len(current)} documents in {time.perf_counter() - started:.1f}s")

    milvus, embedder = resources["milvus"], resources["embedder"]
    with milvus.client() as client:
        total = milvus.count(client)
        hits = milvus.search(client, embedder.encode([args.query])[0].tolist(), limit=3)
    print(f"Milvus collection {milvus.collection!r} at {milvus.uri}: {total} vectors")
    print(f"query: {args.query}")
    for hit in hits:
        print(f"  {hit['score']:.3f}  {hit['doc_id']}#{hit['seq']}: {hit['text'][:100]!r}")

    graph_store = resources["graph_store"]
    with graph_store.session() as graph:
        stats = graph.stats()
        paths = graph.applications_on_servers_managed_by(args.team)
    print(f"knowledge graph ({graph_store.backend}): {stats['entities']} entities, "
          f"{sum(stats['relations'].values())} relations {stats['relations']}")
    print(f"multi-hop: applications running on servers managed by {args.team!r}:")
    for path in paths or [{"names": ["(none)"]}]:
        print("  " + " -> ".join(path["names"]))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
