"""Prometheus exporter for operators: what ingestion did, what is pending, how big the stores are, which adapter is served.

    python -m pipelines.metrics [--port 9108] [--host 0.0.0.0]

Nothing is pushed from runs: every value is read on scrape from records that already cross processes,
- the Dagster instance of $DAGSTER_HOME (SQLite or PostgreSQL event log): documents/chunks processed and
  failures by stage, read incrementally by storage-id cursor (each process's runs write there anyway);
- the per-document state table (SQLite beside the Milvus file, written only after a document's vectors):
  indexed documents and chunks; with the documents folder scan, the pending documents and the ingestion lag;
- Milvus (a server URI; a milvus-lite file is held by one process at a time, so its size is read from the
  state table while a run may hold the file) and the graph store (skipped, with `_up 0`, while locked);
- the adapter registry's deployments.json: the adapter version the vLLM deployment recorded as served.
vLLM exports its own /metrics (requests, tokens, latency, KV cache): scrape it beside this exporter.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

REPO = Path(__file__).resolve().parent.parent
INGESTION_STAGES = ("raw_documents", "parsed_elements", "document_chunks", "chunk_vectors", "graph_facts",
                    "knowledge_graph")
log = logging.getLogger(__name__)


class PlatformCollector:
    """A prometheus_client collector reading the stores on every scrape (counters kept by event-log cursor)."""

    def __init__(self, instance=None, resources: dict | None = None, read_lite_milvus: bool = False):
        from pipelines.definitions import default_resources

        self._instance = instance
        self.resources = default_resources() | (resources or {})
        self.read_lite_milvus = read_lite_milvus  # tests and idle hosts: count a milvus-lite file directly
        self._lock = threading.Lock()
        self._cursors: dict[str, str | int | None] = {}
        self.documents_processed = 0
        self.chunks_processed = 0
        self._chunk_runs: set[str] = set()
        self._run_failures: dict[str, set[str]] = {}
        self.failures: dict[str, int] = {stage: 0 for stage in INGESTION_STAGES}

    @property
    def instance(self):
        if self._instance is None:
            from dagster import DagsterInstance

            self._instance = DagsterInstance.get()
        return self._instance

    # ------------------------------------------------------------------------------ event log (counters)

    def _failed_in_run(self, run_id: str) -> set[str]:
        import json

        from assets.batches import FAILED_TAG, UNCHANGED_TAG

        if run_id not in self._run_failures:
            run = self.instance.get_run_by_id(run_id)
            tags = run.tags if run else {}
            # failed documents, and those the run skipped as already indexed: neither was processed by this run
            self._run_failures[run_id] = set(json.loads(tags.get(FAILED_TAG, "{}"))) | set(
                json.loads(tags.get(UNCHANGED_TAG, "[]")))
        return self._run_failures[run_id]

    def _read_event_log(self) -> None:
        from dagster import AssetKey, DagsterEventType, EventRecordsFilter

        # documents processed: one chunk_vectors materialization per document partition per run; chunks: the
        # run's "chunks" metadata (a batched run repeats it on each of its partitions: counted once per run)
        cursor = self._cursors.get("chunk_vectors")
        while True:
            result = self.instance.fetch_materializations(AssetKey("chunk_vectors"), limit=1000, cursor=cursor,
                                                          ascending=True)
            for record in result.records:
                run_id = record.event_log_entry.run_id
                if record.partition_key in self._failed_in_run(run_id):
                    continue  # a batch's range materializes every partition; its failed/skipped documents were not processed
                self.documents_processed += 1
                metadata = record.asset_materialization.metadata if record.asset_materialization else {}
                if run_id not in self._chunk_runs and "chunks" in metadata:
                    self._chunk_runs.add(run_id)
                    self.chunks_processed += int(metadata["chunks"].value)
            cursor = result.cursor
            if not result.has_more:
                break
        self._cursors["chunk_vectors"] = cursor
        # failures: a one-document run fails the asset's step; a batch records a "failed" observation per document
        after = self._cursors.get("step_failure")
        records = self.instance.get_event_records(
            EventRecordsFilter(DagsterEventType.STEP_FAILURE, after_cursor=after), limit=100000, ascending=True)
        for record in records:
            step = record.event_log_entry.step_key or "unknown"
            self.failures[step] = self.failures.get(step, 0) + 1
            after = record.storage_id
        self._cursors["step_failure"] = after
        for stage in INGESTION_STAGES:
            key = f"observations:{stage}"
            cursor = self._cursors.get(key)
            while True:
                result = self.instance.fetch_observations(AssetKey(stage), limit=1000, cursor=cursor, ascending=True)
                for record in result.records:
                    observation = record.event_log_entry.asset_observation
                    status = observation.metadata.get("status") if observation else None
                    if status is not None and status.value == "failed":
                        self.failures[stage] = self.failures.get(stage, 0) + 1
                cursor = result.cursor
                if not result.has_more:
                    break
            self._cursors[key] = cursor

    # ------------------------------------------------------------------------------ stores (gauges)

    def snapshot(self) -> dict:
        """Every value the exporter serves, as plain numbers (also what the test compares with the stores)."""
        from assets.vector_index import expected_fingerprint
        from pipelines.sensors import stale_documents

        documents, milvus, embedder = (self.resources[k] for k in ("documents", "milvus", "embedder"))
        out: dict = {"up": {}}
        with self._lock:
            try:
                self._read_event_log()
                out["up"]["dagster"] = 1
            except Exception as exc:  # noqa: BLE001
                log.warning(f"Dagster instance not readable: {exc}")
                out["up"]["dagster"] = 0
            out |= {"documents_processed": self.documents_processed, "chunks_processed": self.chunks_processed,
                    "failures": dict(self.failures)}
        states = milvus.document_states()
        out["documents_indexed"] = len(states)
        out["chunks_indexed"] = sum(int(s["chunks"] or 0) for s in states.values())
        try:
            scanned = documents.scan_cached()
            stale = stale_documents({k: d.sha256 for k, d in scanned.items()}, states, expected_fingerprint(embedder))
            now = time.time()
            out["documents_in_folder"] = len(scanned)
            out["documents_pending"] = len(stale)
            # the oldest change not yet indexed: its file's modification time (0 when everything is indexed)
            out["ingestion_lag_seconds"] = max(0.0, now - min(scanned[k].mtime_ns / 1e9 for k in stale)) if stale else 0.0
            out["documents_deleted_pending"] = len(set(states) - set(scanned))
            out["up"]["documents"] = 1
        except Exception as exc:  # noqa: BLE001
            log.warning(f"documents folder not readable: {exc}")
            out["up"]["documents"] = 0
        out["index_vectors"] = None
        if not milvus.is_lite or self.read_lite_milvus:
            try:
                with milvus.client() as client:
                    out["index_vectors"] = milvus.count(client)
                out["up"]["milvus"] = 1
            except Exception as exc:  # noqa: BLE001
                log.warning(f"Milvus not readable: {exc}")
                out["up"]["milvus"] = 0
        graph_store = self.resources["graph_store"]
        out["graph_entities"], out["graph_relations"] = None, {}
        try:
            probe = graph_store.model_copy(update={"lock_timeout_s": 2.0}) if graph_store.backend != "neo4j" else graph_store
            if graph_store.backend == "neo4j" or Path(graph_store.path).exists():
                with probe.session() as graph:
                    stats = graph.stats()
                out["graph_entities"], out["graph_relations"] = int(stats["entities"]), dict(stats["relations"])
            out["up"]["graph"] = 1
        except Exception as exc:  # noqa: BLE001  (an embedded graph held by a running job, Neo4j down)
            log.warning(f"graph store not readable: {exc}")
            out["up"]["graph"] = 0
        registry = self.resources.get("adapter_registry")
        out["adapter_served"] = None
        if registry is not None:
            try:
                out["adapter_served"] = registry.deployments().get("active")
            except Exception as exc:  # noqa: BLE001
                log.warning(f"adapter registry not readable: {exc}")
        return out

    def collect(self):
        snap = self.snapshot()
        up = GaugeMetricFamily("docplatform_store_up", "1 when the store could be read on this scrape", labels=["store"])
        for store, value in snap["up"].items():
            up.add_metric([store], value)
        yield up
        yield CounterMetricFamily("docplatform_documents_processed", "Documents indexed by ingestion runs "
                                  "(chunk_vectors materializations, one per document per run)", value=snap["documents_processed"])
        yield CounterMetricFamily("docplatform_chunks_processed", "Chunks handled by ingestion runs (new, moved and reused)",
                                  value=snap["chunks_processed"])
        failures = CounterMetricFamily("docplatform_failures", "Documents that failed, by ingestion stage", labels=["stage"])
        for stage, count in sorted(snap["failures"].items()):
            failures.add_metric([stage], count)
        yield failures
        for name, help_text in [("documents_indexed", "Documents recorded as indexed (per-document state table)"),
                                ("chunks_indexed", "Chunks of the indexed documents (per-document state table)"),
                                ("documents_in_folder", "Documents in the documents folder"),
                                ("documents_pending", "Documents new or changed since they were indexed"),
                                ("documents_deleted_pending", "Indexed documents no longer in the folder (purge pending)"),
                                ("ingestion_lag_seconds", "Age of the oldest change not indexed yet (0: none)"),
                                ("index_vectors", "Vectors in the Milvus collection (server URIs; lite while idle)"),
                                ("graph_entities", "Entities in the knowledge graph")]:
            if snap.get(name) is not None:
                yield GaugeMetricFamily(f"docplatform_{name}", help_text, value=snap[name])
        relations = GaugeMetricFamily("docplatform_graph_relations", "Relations in the knowledge graph, by type",
                                      labels=["type"])
        for kind, count in sorted(snap["graph_relations"].items()):
            relations.add_metric([kind], count)
        yield relations
        served = GaugeMetricFamily("docplatform_adapter_served", "The LoRA adapter version recorded as served by vLLM "
                                   "(value = version number, label = version name)", labels=["version"])
        if snap["adapter_served"]:
            served.add_metric([snap["adapter_served"]], int(snap["adapter_served"].lstrip("v") or 0))
        yield served


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9108)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--read-lite-milvus", action="store_true",
                        help="also count a milvus-lite file directly (only while no run holds it)")
    args = parser.parse_args(argv)
    os.environ.setdefault("DAGSTER_HOME", str(REPO))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from prometheus_client import REGISTRY, start_http_server

    REGISTRY.register(PlatformCollector(read_lite_milvus=args.read_lite_milvus))
    server, thread = start_http_server(args.port, addr=args.host)
    log.info(f"docplatform metrics on http://{args.host}:{server.server_port}/metrics")

    def stop(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    # SIGTERM (systemd, kill, Kubernetes) and SIGINT stop the exporter even when it was started with SIGINT ignored
    # (nohup, a background job of a script), which Python and Dagster would otherwise pass on to SIGTERM
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
