"""Ingestion benchmark at corpus scale: the batched pipeline against a plain loop on the same files.

    python -m bench.ingest [--docs 1000] [--paragraphs 4] [--partition-keys 100000]

Builds a synthetic markdown corpus in a temporary folder, then prints (figures, not assertions):

- plain loop: parse -> chunk -> embed -> insert, one document at a time (unstructured, MiniLM, milvus-lite);
- pipeline: ingest_job's ingestion assets in batched in-process runs over document partition ranges,
  as the sensor requests them (real Dagster instance, milvus-lite), and the ratio of chunks/s;
- nightly over the unchanged corpus (schedule evaluation: nothing requested) / full time;
- one changed document among N: sensor tick + its run;
- peak RSS; partition/cursor/state costs at --partition-keys document keys (SQLite Dagster storage);
- one documents sensor tick over --tick-files real files (cold, warm, one edited).
LlamaIndex's IngestionPipeline is timed when llama-index is installed (it is not a dependency).
"""

import argparse
import datetime
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from assets import _offline  # noqa: F401

WORDS = ("server application database team platform deploy backup incident network policy cluster "
         "service latency release owner storage access audit runbook monitoring capacity").split()


def build_corpus(folder: Path, docs: int, paragraphs: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    for d in range(docs):
        lines = [f"# Document {d}"]
        for p in range(paragraphs):
            if p % 4 == 0:
                lines.append(f"## Section {p // 4}")
            lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 90))).capitalize() + f" (d{d}p{p}).")
        (folder / f"doc-{d:05d}.md").write_text("\n\n".join(lines) + "\n")


def peak_rss_mb() -> float:
    """This process's peak resident memory since the last reset_peak_rss (Linux VmHWM), else since it started."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Start measuring the peak anew (Linux: writing 5 to /proc/self/clear_refs resets VmHWM), so that the pipeline's
    peak does not include the plain loop's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def plain_loop(folder: Path, db: str, embedder) -> tuple[float, int]:
    """The baseline: parse -> chunk -> embed -> insert per document, nothing else."""
    from pymilvus import DataType, MilvusClient
    from unstructured.chunking.title import chunk_by_title
    from unstructured.partition.md import partition_md

    client = MilvusClient(uri=db)
    schema = MilvusClient.create_schema(auto_id=True)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("text", DataType.VARCHAR, max_length=65535)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=embedder.dimension)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type="FLAT", metric_type="COSINE")
    client.create_collection("plain", schema=schema, index_params=index)
    start, chunks, parts = time.perf_counter(), 0, [0.0, 0.0, 0.0]
    for path in sorted(folder.iterdir()):
        t0 = time.perf_counter()
        texts = [c.text for c in chunk_by_title(partition_md(text=path.read_text(), languages=["eng"]), max_characters=1200,
                                                new_after_n_chars=900, combine_text_under_n_chars=200)]
        t1 = time.perf_counter()
        vectors = embedder.encode(texts)
        t2 = time.perf_counter()
        client.insert("plain", [{"text": t, "vector": v.tolist()} for t, v in zip(texts, vectors)])
        parts = [parts[0] + t1 - t0, parts[1] + t2 - t1, parts[2] + time.perf_counter() - t2]
        chunks += len(texts)
    elapsed = time.perf_counter() - start
    client.close()
    print(f"  plain loop breakdown: parse+chunk {parts[0]:.1f} s, embed {parts[1]:.1f} s, insert {parts[2]:.1f} s")
    return elapsed, chunks


def llamaindex_pipeline(folder: Path, db: str) -> tuple[float, int, float, int] | None:
    try:
        from llama_index.core import SimpleDirectoryReader
        from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
        from llama_index.core.node_parser import SentenceSplitter
        from llama_index.core.storage.docstore import SimpleDocumentStore
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding
        from llama_index.vector_stores.milvus import MilvusVectorStore
    except ImportError:
        return None
    from resources.embedder import packaged_minilm_path

    # filename_as_id: stable document ids, so the docstore upserts skip unchanged documents on a re-run
    def load():
        return SimpleDirectoryReader(str(folder), filename_as_id=True).load_data()

    pipeline = IngestionPipeline(
        transformations=[SentenceSplitter(chunk_size=256), HuggingFaceEmbedding(model_name=str(packaged_minilm_path()))],
        docstore=SimpleDocumentStore(), docstore_strategy=DocstoreStrategy.UPSERTS,
        vector_store=MilvusVectorStore(uri=db, dim=384, overwrite=True))
    start = time.perf_counter()  # reading the files counts, as the pipeline's parse does
    nodes = pipeline.run(documents=load())
    full_s = time.perf_counter() - start
    start = time.perf_counter()  # same files again: the docstore hashes must skip every document
    again = pipeline.run(documents=load())
    return full_s, len(nodes), time.perf_counter() - start, len(again)


def partition_costs(tmp: Path, n: int) -> None:
    """Dagster dynamic partitions, sensor planning and per-document state at n document keys."""
    from dagster import instance_for_test

    from pipelines.partitions import DOCUMENTS_PARTITIONS_NAME, contiguous_batches
    from pipelines.sensors import stale_documents
    from resources import MilvusStore

    keys = [f"dept-{i % 50:02d}/folder-{i % 997:03d}/document-{i:06d}.md" for i in range(n)]
    (tmp / "pk").mkdir()
    with instance_for_test(temp_dir=str(tmp / "pk")) as instance:
        start = time.perf_counter()
        for i in range(0, n, 10000):
            instance.add_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME, keys[i : i + 10000])
        add_s = time.perf_counter() - start
        start = time.perf_counter()
        got = instance.get_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME)
        list_s = time.perf_counter() - start
        assert len(got) == n
        start = time.perf_counter()
        instance.has_dynamic_partition(DOCUMENTS_PARTITIONS_NAME, keys[n // 2])
        has_s = time.perf_counter() - start
    size = sum(p.stat().st_size for p in (tmp / "pk").rglob("*") if p.is_file())
    store = MilvusStore(uri=str(tmp / "pk-m.db"))
    store.set_document_states(None, [{"doc_id": k, "sha256": f"{i:064x}", "fingerprint": "f" * 16, "chunks": 8}
                                     for i, k in enumerate(keys)])
    start = time.perf_counter()
    states = store.document_states()
    state_s = time.perf_counter() - start
    current = {k: f"{i:064x}" for i, k in enumerate(keys)}
    current[keys[n // 3]] = "changed"
    start = time.perf_counter()
    stale = stale_documents(current, states, "f" * 16)
    batches = contiguous_batches(got, set(stale))
    plan_s = time.perf_counter() - start
    print(f"\n-- partition and state costs at {n:,} document keys (SQLite Dagster storage)")
    print(f"add_dynamic_partitions (10k per call): {add_s:7.2f} s   Dagster storage on disk: {size / 1e6:7.1f} MB")
    print(f"get_dynamic_partitions (every tick):    {list_s:7.3f} s   has_dynamic_partition: {has_s * 1000:.1f} ms")
    print(f"read per-document state (SQLite):       {state_s:7.3f} s   state file: {store.state_file.stat().st_size / 1e6:.1f} MB")
    print(f"plan (stale + batches) for 1 change:    {plan_s:7.3f} s   -> {len(stale)} stale, {len(batches)} run(s)")
    print(f"sensor cursor: only documents requested and not yet indexed (0 bytes when idle), not the corpus")


def one_document_run(docs: str, milvus_uri: str, dagster_dir: str, scan_cache: str, graph_path: str, key: str,
                     spawned_at: str = "") -> None:
    """One document's ingestion run in this (fresh) process, as a run launched by the daemon does it."""
    started = time.perf_counter()
    from dagster import AssetKey, instance_for_test

    from assets.ingestion import ingestion_assets
    from pipelines.definitions import build_defs
    from resources import DocumentSource, Embedder, MilvusStore
    from resources.graph_store import GraphStore

    defs = build_defs(documents=DocumentSource(root=docs, scan_cache=scan_cache), milvus=MilvusStore(uri=milvus_uri),
                      embedder=Embedder(), graph_store=GraphStore(path=graph_path))
    job = defs.resolve_job_def("ingest_job")
    imported = time.perf_counter()
    with instance_for_test(temp_dir=dagster_dir) as instance:
        result = job.execute_in_process(partition_key=key, asset_selection=[AssetKey(a.key.path) for a in ingestion_assets],
                                        instance=instance, run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}})
    assert result.success
    indexed = f", indexed {time.time() - float(spawned_at):.1f} s after the process was started" if spawned_at else ""
    print(f"imports and definitions {imported - started:.1f} s, run {time.perf_counter() - imported:.1f} s{indexed}")


def sensor_tick_costs(tmp: Path, n: int) -> None:
    """One documents_folder_sensor tick over n real files, all indexed: cold (every file hashed), warm (stat only),
    and with one file edited; Dagster partitions and the per-document state hold all n documents."""
    from dagster import build_sensor_context, instance_for_test

    from assets.ingestion import expected_fingerprint
    from pipelines.partitions import DOCUMENTS_PARTITIONS_NAME
    from pipelines.sensors import documents_folder_sensor
    from resources import DocumentSource, Embedder, MilvusStore
    from resources.documents import file_sha256

    root = tmp / "tick-docs"
    start = time.perf_counter()
    keys = []
    for i in range(n):
        key = f"dept-{i % 20:02d}/team-{i % 500:03d}/note-{i:06d}.md"
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# Note {i}\n\nServer host-{i % 997} runs service svc-{i % 311}.\n")
        keys.append(key)
    write_s = time.perf_counter() - start
    documents = DocumentSource(root=str(root), scan_cache=str(tmp / "tick-scan.sqlite"))
    milvus = MilvusStore(uri=str(tmp / "tick-m.db"))
    embedder = Embedder()
    fingerprint = expected_fingerprint(embedder)
    milvus.set_document_states(None, [{"doc_id": k, "sha256": file_sha256(root / k), "fingerprint": fingerprint, "chunks": 1}
                                      for k in keys])
    (tmp / "tick-dagster").mkdir()
    with instance_for_test(temp_dir=str(tmp / "tick-dagster")) as instance:
        for i in range(0, n, 10000):
            instance.add_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME, keys[i : i + 10000])

        def tick(cursor=None):
            context = build_sensor_context(instance=instance, cursor=cursor,
                                           resources={"documents": documents, "milvus": milvus, "embedder": embedder})
            started = time.perf_counter()
            result = documents_folder_sensor(context)
            return time.perf_counter() - started, result

        cold_s, cold = tick()
        warm_s, warm = tick(cold.cursor)
        edited = root / keys[n // 2]
        edited.write_text(edited.read_text() + "Edited.\n")
        one_s, one = tick(warm.cursor)
    print(f"\n-- one documents_folder_sensor tick over {n:,} real files, all indexed (writing them took {write_s:.1f} s)")
    print(f"cold tick (no scan cache: every file hashed): {cold_s:7.2f} s  -> {len(cold.run_requests or [])} runs")
    print(f"warm tick (scan cache: one stat per file):    {warm_s:7.2f} s  -> {len(warm.run_requests or [])} runs")
    print(f"tick after one file was edited:               {one_s:7.2f} s  -> {len(one.run_requests or [])} run(s); "
          f"cursor {len(one.cursor or '')} bytes")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--paragraphs", type=int, default=4)
    parser.add_argument("--partition-keys", type=int, default=100000, help="0 skips the partition-cost figures")
    parser.add_argument("--tick-files", type=int, default=100000,
                        help="real files for the one-sensor-tick figure; 0 skips it")
    parser.add_argument("--skip-plain", action="store_true")
    args = parser.parse_args(argv)

    from dagster import AssetKey, build_schedule_context, instance_for_test

    from assets.ingestion import ingestion_assets
    from pipelines.definitions import build_defs
    from pipelines.partitions import DOCUMENTS_PARTITIONS_NAME, contiguous_batches, range_tags
    from pipelines.schedules import nightly_reindex_schedule
    from resources import DocumentSource, Embedder, MilvusStore
    from resources.graph_store import GraphStore

    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        docs = tmp / "docs"
        docs.mkdir()
        build_corpus(docs, args.docs, args.paragraphs)
        embedder = Embedder()
        embedder.encode(["warm-up"])  # model load is not part of either rate
        print(f"corpus: {args.docs} markdown documents, {args.paragraphs} paragraphs each; cores: {os.cpu_count()}; "
              f"embedder {embedder.model} in {embedder.resolved_precision()} (DOCPLATFORM_EMBEDDER_PRECISION; LlamaIndex: fp32); "
              f"load average {os.getloadavg()[0]:.1f}")

        if not args.skip_plain:
            plain_s, plain_chunks = plain_loop(docs, str(tmp / "plain.db"), embedder)
            print(f"plain loop:        {plain_s:8.2f} s  {plain_chunks / plain_s:8.1f} chunks/s ({plain_chunks} chunks)")

        measured_alone = reset_peak_rss()
        documents = DocumentSource(root=str(docs), scan_cache=str(tmp / "scan.sqlite"))
        milvus = MilvusStore(uri=str(tmp / "m.db"))
        defs = build_defs(documents=documents, milvus=milvus, embedder=embedder,
                          graph_store=GraphStore(path=str(tmp / "graph.lbug")))
        job = defs.resolve_job_def("ingest_job")
        selection = [AssetKey(a.key.path) for a in ingestion_assets]
        keys = sorted(documents.scan())
        (tmp / "dagster").mkdir()
        with instance_for_test(temp_dir=str(tmp / "dagster")) as instance:
            instance.add_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME, keys)

            def run(batch):
                tags = range_tags(batch[0], batch[-1]) if len(batch) > 1 else {}
                result = job.execute_in_process(partition_key=batch[0] if len(batch) == 1 else None, tags=tags,
                                                asset_selection=selection, instance=instance, run_config=quiet)
                assert result.success
                return result

            start, chunks = time.perf_counter(), 0
            batches = contiguous_batches(keys, set(keys))
            run_peaks = []
            for batch in batches:
                reset_peak_rss()
                result = run(batch)
                run_peaks.append(peak_rss_mb())
                chunks += next(int(e.materialization.metadata["chunks"].value) for e in result.get_asset_materialization_events()
                               if e.materialization.asset_key.to_user_string() == "chunk_vectors"
                               and "chunks" in e.materialization.metadata)
            full_s = time.perf_counter() - start
            rss_full = max(run_peaks)
            print(f"pipeline (batched):{full_s:8.2f} s  {chunks / full_s:8.1f} chunks/s ({chunks} chunks, "
                  f"{len(batches)} runs of <= {len(batches[0])} documents)")
            if not args.skip_plain:
                print(f"ratio pipeline / plain loop chunks/s: {(chunks / full_s) / (plain_chunks / plain_s):.3f}   (target >= 0.7)")

            def nightly():
                context = build_schedule_context(
                    instance=instance, resources={"documents": documents, "milvus": milvus, "embedder": embedder},
                    repository_def=defs.get_repository_def(),
                    scheduled_execution_time=datetime.datetime(2026, 11, 26, 2, tzinfo=datetime.timezone.utc))
                return nightly_reindex_schedule.evaluate_tick(context)

            start = time.perf_counter()
            tick = nightly()
            nightly_s = time.perf_counter() - start
            requested = len(tick.run_requests or [])
            print(f"no-change nightly: {nightly_s:8.2f} s  ({requested} runs requested; {tick.skip_message})")
            print(f"ratio no-change nightly / full run time: {nightly_s / full_s:.4f}   (target <= 0.02)")

            # one document edited near its top: only its changed chunks are embedded
            path = docs / keys[len(keys) // 2]
            text = path.read_text().split("\n\n")
            text[1] = text[1] + " Edited."
            path.write_text("\n\n".join(text))
            start = time.perf_counter()
            tick = nightly()
            requests = tick.run_requests or []
            for request in requests:
                result = job.execute_in_process(partition_key=request.partition_key, tags=request.tags,
                                                asset_selection=selection, instance=instance, run_config=quiet)
                assert result.success
            one_s = time.perf_counter() - start
            vectors = result.output_for_node("chunk_vectors")
            print(f"one changed doc:   {one_s:8.2f} s  ({len(requests)} run, {vectors['embedded']} chunk(s) re-embedded "
                  f"of {len(vectors['chunk_ids'])})   (target <= 15 s)")
        print(f"peak RSS of the pipeline over {args.docs} documents: {rss_full:.0f} MB; per run: "
              f"{', '.join(f'{p:.0f}' for p in run_peaks)} MB"
              f"{'' if measured_alone else ' (the plain loop included: VmHWM could not be reset)'}")

        # the same edit, run as the daemon would: a fresh process that imports everything first
        path = docs / keys[len(keys) // 3]
        path.write_text(path.read_text().replace("\n\n", "\n\nEdited again.\n\n", 1))
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(milvus.uri)  # milvus-lite: one process per file
        start = time.perf_counter()
        child = subprocess.run(
            [sys.executable, "-c", "import sys; from bench.ingest import one_document_run; one_document_run(*sys.argv[1:])",
             str(docs), milvus.uri, str(tmp / "dagster"), str(tmp / "scan.sqlite"), str(tmp / "graph.lbug"), path.name,
             str(time.time())],
            capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
        cold_s = time.perf_counter() - start
        if child.returncode:
            print(f"one changed doc in a fresh process: failed\n{child.stderr[-2000:]}")
        else:
            print(f"one changed doc in a fresh process: {child.stdout.strip().splitlines()[-1]}; the process exited "
                  f"{cold_s:.1f} s after its start (milvus-lite and thread shutdown after the run)   (target <= 15 s)")

        li = llamaindex_pipeline(docs, str(tmp / "li.db"))
        if li is None:
            print("LlamaIndex IngestionPipeline: not installed (pip install llama-index-core "
                  "llama-index-embeddings-huggingface llama-index-vector-stores-milvus to compare)")
        else:
            print(f"LlamaIndex IngestionPipeline: {li[0]:8.2f} s  {li[1] / li[0]:8.1f} chunks/s ({li[1]} nodes)")
            print(f"ratio pipeline / LlamaIndex chunks/s: {(chunks / full_s) / (li[1] / li[0]):.3f}   (target > 1)")
            print(f"LlamaIndex re-run, unchanged files: {li[2]:8.2f} s  ({li[3]} nodes re-processed)")
        if args.partition_keys:
            partition_costs(tmp, args.partition_keys)
        if args.tick_files:
            sensor_tick_costs(tmp, args.tick_files)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
