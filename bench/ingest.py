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

    python -m bench.ingest --real DIR [--build N] [--executors ,multiprocess] [--only-main] [--markdown FILE]

On a folder of real files (bench.real_corpus builds them), each side as a fresh process: the main command
(pipelines.run_main, graph stage included) and its no-change re-run, the plain loop, LlamaIndex; ratios, peak memory
of the command's process tree, and where its time goes, stage by stage, from its Dagster step events and metadata.
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


PLAIN_SUFFIXES = (".md", ".markdown", ".txt", ".text", ".html", ".htm")


def _partition(path: Path):
    """unstructured's partitioner for the file's type (markdown, plain text, HTML), as a plain script would pick."""
    from unstructured.partition.html import partition_html
    from unstructured.partition.md import partition_md
    from unstructured.partition.text import partition_text

    text = path.read_text(errors="replace")
    if path.suffix in (".md", ".markdown"):
        return partition_md(text=text, languages=["eng"])
    if path.suffix in (".html", ".htm"):
        return partition_html(text=text, languages=["eng"])
    return partition_text(text=text, languages=["eng"])


def plain_loop(folder: Path, db: str, embedder) -> tuple[float, int]:
    """The baseline: parse -> chunk -> embed -> insert per document, nothing else."""
    from pymilvus import DataType, MilvusClient
    from unstructured.chunking.title import chunk_by_title

    client = MilvusClient(uri=db)
    schema = MilvusClient.create_schema(auto_id=True)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("text", DataType.VARCHAR, max_length=65535)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=embedder.dimension)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type="FLAT", metric_type="COSINE")
    client.create_collection("plain", schema=schema, index_params=index)
    start, chunks, parts = time.perf_counter(), 0, [0.0, 0.0, 0.0]
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in PLAIN_SUFFIXES):
        t0 = time.perf_counter()
        texts = [c.text[:16000] for c in chunk_by_title(_partition(path), max_characters=1200, new_after_n_chars=900,
                                                          combine_text_under_n_chars=200) if c.text.strip()]
        if not texts:
            continue
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


def llamaindex_pipeline(folder: Path, db: str, precision: str = "fp32",
                        batch_size: int = 10) -> tuple[float, int, float, int] | None:
    """LlamaIndex's IngestionPipeline (reader, SentenceSplitter, the packaged MiniLM, milvus-lite) and its re-run over
    the same files (docstore upserts skip unchanged documents). precision bf16: the encode runs under the same bf16
    autocast as the project's embedder."""
    try:
        from llama_index.core import SimpleDirectoryReader
        from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
        from llama_index.core.node_parser import SentenceSplitter
        from llama_index.core.storage.docstore import SimpleDocumentStore
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding
        from llama_index.vector_stores.milvus import MilvusVectorStore
    except ImportError:
        return None
    import torch

    from resources.embedder import packaged_minilm_path

    # filename_as_id: stable document ids, so the docstore upserts skip unchanged documents on a re-run
    def load():
        return SimpleDirectoryReader(str(folder), filename_as_id=True, recursive=True).load_data()

    pipeline = IngestionPipeline(
        transformations=[SentenceSplitter(chunk_size=256),
                         HuggingFaceEmbedding(model_name=str(packaged_minilm_path()), embed_batch_size=batch_size)],
        docstore=SimpleDocumentStore(), docstore_strategy=DocstoreStrategy.UPSERTS,
        vector_store=MilvusVectorStore(uri=db, dim=384, overwrite=True))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
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

    from assets.vector_index import expected_fingerprint
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


# ------------------------------------------------------------------------------------------ real folders (--real)

REPO = Path(__file__).resolve().parent.parent
LLAMAINDEX_VENV = Path.home() / ".cache" / "docplatform" / "llamaindex-venv"  # optional, not a dependency


def _tree_memory(pid: int, stop, peaks: dict) -> None:
    """Sample the process and all its children (parser pool, milvus-lite server) until stop is set: the peak of the
    summed RSS (shared pages counted in each process) and of the summed PSS (shared pages split)."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    by_kind = peaks.setdefault("by_kind", {})
    while not stop.is_set():
        rss = pss = 0
        kinds: dict[str, int] = {}
        try:
            for proc in [root, *root.children(recursive=True)]:
                try:
                    info = proc.memory_full_info()
                    rss, pss = rss + info.rss, pss + getattr(info, "pss", info.rss)
                    kind = "command" if proc.pid == pid else _process_kind(" ".join(proc.cmdline()))
                    kinds[kind] = kinds.get(kind, 0) + getattr(info, "pss", info.rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
        except psutil.NoSuchProcess:
            return
        if pss > peaks.get("pss", 0):
            by_kind.clear()
            by_kind.update(kinds)  # who held the memory at the peak
        peaks["rss"], peaks["pss"] = max(peaks.get("rss", 0), rss), max(peaks.get("pss", 0), pss)
        stop.wait(0.2)


def _process_kind(cmdline: str) -> str:
    if "milvus" in cmdline:
        return "milvus-lite"
    if "forkserver" in cmdline or "multiprocessing" in cmdline:
        return "worker processes"
    return "other children"


def timed_process(argv: list[str], env: dict | None = None) -> dict:
    """Run a command as a user would (a fresh process) and time it whole; its tree's peak memory."""
    import threading

    spawned = time.time()
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop, peaks = threading.Event(), {}
    sampler = threading.Thread(target=_tree_memory, args=(proc.pid, stop, peaks), daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    return {"wall_s": wall, "rc": proc.returncode, "stdout": out, "stderr": err, "spawned": spawned,
            "ended": spawned + wall, "peak_rss_mb": peaks.get("rss", 0) / 2**20, "peak_pss_mb": peaks.get("pss", 0) / 2**20,
            "peak_pss_by_kind_mb": {k: round(v / 2**20) for k, v in sorted(peaks.get("by_kind", {}).items())}}


def main_command(folder: Path, work: Path, executor: str = "") -> dict:
    """`python -m pipelines.run_main --documents DIR` with its own Dagster home and data dir (fresh the first time),
    no closing question (the peers answer none); executor: DOCPLATFORM_INGEST_EXECUTOR for the runs."""
    home = work / "dagster-home"
    if not home.exists():
        home.mkdir(parents=True)
        (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    # a fresh index: none of the user's store locations or servers
    elsewhere = ("DOCPLATFORM_VLLM_URL", "DOCPLATFORM_MILVUS_URI", "DOCPLATFORM_GRAPH_PATH", "DOCPLATFORM_GRAPH_BACKEND")
    env = {k: v for k, v in os.environ.items() if k not in elsewhere and not k.startswith("DOCPLATFORM_NEO4J")}
    env |= {"PYTHONPATH": str(REPO), "DAGSTER_HOME": str(home), "DOCPLATFORM_DATA_DIR": str(work / "data"),
            "HF_HUB_OFFLINE": "1"}
    if executor:
        env["DOCPLATFORM_INGEST_EXECUTOR"] = executor
    result = timed_process([sys.executable, "-m", "pipelines.run_main", "--documents", str(folder), "--ask", ""], env)
    if result["rc"]:
        raise SystemExit(f"the main command failed ({result['rc']}):\n{result['stdout'][-3000:]}\n"
                         f"{result['stderr'][-3000:]}")
    return result | {"home": home}


STEP_ORDER = ("raw_documents", "parsed_elements", "document_chunks", "chunk_vectors", "graph_facts", "knowledge_graph",
              "documents_indexed")


def run_timings(home: Path, since: float = 0.0) -> list[dict]:
    """Per run of the main command's Dagster instance since a time (a re-run's home holds the first one's runs): its
    span, each step's span (first start to last end) and the first materialization's metadata and check metadata per
    asset (a batched run gives every partition the same)."""
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    runs = []
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        for run in reversed(instance.get_runs()):
            if run.job_name != "ingest_job":
                continue
            logs = instance.all_logs(run.run_id)
            steps: dict[str, list[float]] = {}
            metadata: dict[str, dict] = {}
            checks: dict[str, dict] = {}
            for entry in logs:
                event = entry.dagster_event
                if event is None:
                    continue
                kind = event.event_type_value
                if event.step_key and kind in ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE", "STEP_RESTARTED",
                                               "STEP_UP_FOR_RETRY"):
                    span = steps.setdefault(event.step_key, [entry.timestamp, entry.timestamp])
                    span[0], span[1] = min(span[0], entry.timestamp), max(span[1], entry.timestamp)
                elif kind == "ASSET_MATERIALIZATION":
                    materialization = event.event_specific_data.materialization
                    metadata.setdefault(materialization.asset_key.to_user_string(),
                                        {k: v.value for k, v in materialization.metadata.items()})
                elif kind == "ASSET_CHECK_EVALUATION":
                    evaluation = event.event_specific_data
                    checks.setdefault(evaluation.check_name, {k: v.value for k, v in evaluation.metadata.items()})
            stamps = [e.timestamp for e in logs]
            if not stamps or min(stamps) < since:
                continue
            runs.append({"start": min(stamps), "end": max(stamps), "steps": steps, "metadata": metadata,
                         "checks": checks})
    return runs


def _union_seconds(spans: list[list[float]]) -> float:
    """Seconds covered by at least one of the (start, end) spans."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(spans):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def stage_table(main: dict) -> tuple[list[tuple[str, float]], int]:
    """(stage, seconds) rows that add up to the main command's wall time, and the chunks it indexed."""
    runs = run_timings(main["home"], main["spawned"])
    total = main["wall_s"]
    if not runs:
        return [("whole command (no run: nothing changed)", total)], 0

    def step(run, name):
        span = next((v for k, v in run["steps"].items() if k.split("[")[0] == name), None)
        return span[1] - span[0] if span else 0.0

    def meta(run, asset, key, default=0.0):
        return run["metadata"].get(asset, {}).get(key, default)

    sums: dict[str, float] = {}

    def add(name, seconds):
        sums[name] = sums.get(name, 0.0) + max(seconds, 0.0)

    chunks = 0
    for run in runs:
        stage_s = meta(run, "chunk_vectors", "stage_seconds", {}) or {}
        gate = float(run["checks"].get("retrieval_quality", {}).get("seconds", 0.0))
        vectors = step(run, "chunk_vectors")
        chunk_checks = float(meta(run, "document_chunks", "checks_seconds"))
        add("read files, hash, skip unchanged (raw_documents)", step(run, "raw_documents"))
        add("parsing: parser pool (parsed_elements)", step(run, "parsed_elements"))
        add("chunking (document_chunks)", step(run, "document_chunks") - chunk_checks)
        add("kiwi analysis (BM25 terms)", stage_s.get("bm25_analysis_s", 0.0))
        add("embedder model load", stage_s.get("model_load_s", 0.0))
        add("encode (embedder)", stage_s.get("encode_s", 0.0))
        add("BM25/Milvus writes and reads", stage_s.get("lookup_s", 0.0) + stage_s.get("milvus_write_s", 0.0))
        add("chunk_vectors: rest (norm/count checks)", vectors - sum(stage_s.values()) - gate)
        add("graph extraction + SHACL (graph_facts)", step(run, "graph_facts"))
        add("graph store + integrity checks (knowledge_graph)", step(run, "knowledge_graph"))
        add("checks: GX chunk table, retrieval gate, state final",
            chunk_checks + gate + step(run, "documents_indexed"))
        spans = sorted(v for k, v in run["steps"].items() if k.split("[")[0] in STEP_ORDER)
        busy = _union_seconds(spans)
        add("Dagster run launch and step overhead", run["end"] - run["start"] - busy)
        # steps that ran at the same time (multiprocess executor): their seconds above add up to more than the run
        overlap = sum(step(run, name) for name in STEP_ORDER) - busy
        if overlap > 0.05:
            sums["overlapped (steps at the same time; subtract)"] = sums.get(
                "overlapped (steps at the same time; subtract)", 0.0) - overlap
        chunks += int(meta(run, "chunk_vectors", "chunks", 0))
    layers: dict[str, float] = {}
    for run in runs:  # graph_facts' own split of its time by extraction layer (ms per chunk, weighted by run chunks)
        for layer, ms in (meta(run, "graph_facts", "ms_per_chunk_by_layer", {}) or {}).items():
            if isinstance(ms, (int, float)):
                layers[layer] = layers.get(layer, 0.0) + ms * int(meta(run, "chunk_vectors", "chunks", 0))
    main["graph_layers_ms_per_chunk"] = {k: round(v / max(chunks, 1), 1) for k, v in layers.items()}
    rows = [("process start, imports, Definitions, folder scan", runs[0]["start"] - main["spawned"])]
    rows += list(sums.items())
    rows.append(("between runs (run_main planning, progress)",
                 sum(b["start"] - a["end"] for a, b in zip(runs, runs[1:]))))
    rows.append((AFTER_RUNS, main["ended"] - runs[-1]["end"]))
    return rows, chunks


def plain_loop_process(folder: str, db: str) -> None:
    """The plain loop as its own process (model load included), printing its figures as JSON on the last line."""
    import json

    from resources import Embedder

    started = time.perf_counter()
    embedder = Embedder()
    embedder.encode(["warm-up"])
    elapsed, chunks = plain_loop(Path(folder), db, embedder)
    print(json.dumps({"loop_s": elapsed, "chunks": chunks, "process_work_s": time.perf_counter() - started,
                      "precision": embedder.resolved_precision()}))


def llamaindex_process(folder: str, db: str, precision: str, batch_size: str) -> None:
    import json

    started = time.perf_counter()
    result = llamaindex_pipeline(Path(folder), db, precision, int(batch_size))
    print(json.dumps(None if result is None else {"full_s": result[0], "nodes": result[1], "rerun_s": result[2],
                                                  "rerun_nodes": result[3],
                                                  "process_work_s": time.perf_counter() - started}))


def _json_tail(result: dict) -> dict | None:
    import json

    if result["rc"]:
        print(f"  failed ({result['rc']}): {result['stderr'][-1500:]}")
        return None
    return json.loads(result["stdout"].strip().splitlines()[-1])


def llamaindex_python() -> str | None:
    """A Python that has LlamaIndex: this one, or the optional venv (python -m venv --system-site-packages
    ~/.cache/docplatform/llamaindex-venv; pip install llama-index-core llama-index-embeddings-huggingface
    llama-index-vector-stores-milvus)."""
    import importlib.util

    if importlib.util.find_spec("llama_index") is not None:
        return sys.executable
    venv = LLAMAINDEX_VENV / "bin" / "python"
    return str(venv) if venv.exists() else None


def real_bench(folder: Path, executors: list[str], markdown: str | None, only_main: bool = False) -> int:
    """The main command on a folder of real files against the plain loop and LlamaIndex, all as fresh processes."""
    from resources import Embedder

    files = [p for p in folder.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    embedder = Embedder()
    lines = [f"folder {folder}: {len(files)} files, {size / 1e3:.0f} KB; cores {os.cpu_count()}; embedder "
             f"{embedder.model} in {embedder.resolved_precision()} (plain loop and LlamaIndex the same); load average "
             f"{os.getloadavg()[0]:.1f}"]
    print(lines[0], flush=True)
    env = os.environ | {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mains = {}
        for executor in executors:
            work = tmp / f"main-{executor or 'default'}"
            first = main_command(folder, work, executor)
            again = main_command(folder, work, executor)
            rows, chunks = stage_table(first)
            mains[executor or "default"] = (first, again, rows, chunks)
            print(f"main command ({executor or 'default executor'}): {first['wall_s']:.1f} s, {chunks} chunks; re-run "
                  f"{again['wall_s']:.2f} s; peak RSS {first['peak_rss_mb']:.0f} MB (PSS {first['peak_pss_mb']:.0f} MB)",
                  flush=True)
        plain = li = None
        if not only_main:
            result = timed_process([sys.executable, "-c", "import sys; from bench.ingest import plain_loop_process as f; "
                                    "f(*sys.argv[1:])", str(folder), str(tmp / "plain.db")], env)
            plain = _json_tail(result)
            if plain:
                plain["wall_s"] = result["wall_s"]
                print(f"plain loop: {plain['wall_s']:.1f} s as a process, loop {plain['loop_s']:.1f} s, "
                      f"{plain['chunks']} chunks", flush=True)
            python = llamaindex_python()
            if python:
                result = timed_process([python, "-c", "import sys; from bench.ingest import llamaindex_process as f; "
                                        "f(*sys.argv[1:])", str(folder), str(tmp / "li.db"),
                                        embedder.resolved_precision(), str(embedder.batch_size)], env)
                li = _json_tail(result)
                if li:
                    li["wall_s"] = result["wall_s"]
                    print(f"LlamaIndex: {li['wall_s']:.1f} s as a process, pipeline.run {li['full_s']:.1f} s, "
                          f"{li['nodes']} nodes", flush=True)
    body = real_report(lines[0], mains, plain, li)
    print("\n" + body)
    if markdown:
        from bench.report import write_block

        name = f"ingest-real-{len(files)}"
        print(f"wrote block {name!r} into {write_block(markdown, name, body, command=None)}")
    return 0


AFTER_RUNS = "after the runs: search, graph query, exit"
GRAPH_STAGES = ("graph extraction + SHACL (graph_facts)", "graph store + integrity checks (knowledge_graph)")


def real_report(header: str, mains: dict, plain: dict | None, li: dict | None) -> str:
    """Markdown: whole-process times and ratios (a peer's time / ours: above 1, ours is faster), the no-change re-run,
    peak memory and the per-stage table of the first main command."""
    out = [header, "", "| figure | seconds | peer / ours (>= 1: ours faster) |", "|---|---:|---:|"]
    peers = []
    if plain:
        peers.append(("plain loop (parse -> chunk -> embed -> insert), whole process", plain["wall_s"]))
        peers.append(("plain loop, the loop alone (no process start, model loaded)", plain["loop_s"]))
    if li:
        peers.append(("LlamaIndex IngestionPipeline, whole process", li["wall_s"]))
        peers.append(("LlamaIndex pipeline.run alone (no process start, model loaded)", li["full_s"]))
    for label, (first, again, rows, chunks) in mains.items():
        ours = first["wall_s"]
        ingestion = sum(s for n, s in rows if n not in GRAPH_STAGES + (AFTER_RUNS,) and not n.startswith("overlapped"))
        out.append(f"| main command ({label} executor), whole process, {chunks} chunks | {ours:.1f} | |")
        out.append(f"| ... its ingestion steps alone (stages below less the graph stage and the closing search) | "
                   f"{ingestion:.1f} | |")
        for peer, seconds in peers:
            out.append(f"| {peer} vs the whole command / vs its ingestion | {seconds:.1f} | "
                       f"{seconds / ours:.2f} / {seconds / ingestion:.2f} |")
        out.append(f"| main command re-run, nothing changed, whole process | {again['wall_s']:.2f} | |")
        by_kind = ", ".join(f"{k} {v}" for k, v in first["peak_pss_by_kind_mb"].items())
        out.append(f"| peak memory of the main command and its children (summed RSS / PSS, MB; PSS at the peak: "
                   f"{by_kind}) | {first['peak_rss_mb']:.0f} / {first['peak_pss_mb']:.0f} | |")
    if li:
        out.append(f"| LlamaIndex re-run, unchanged files, in-process ({li['rerun_nodes']} nodes again) | "
                   f"{li['rerun_s']:.2f} | |")
    for label, (first, again, rows, chunks) in mains.items():
        out += ["", f"Where the main command's time goes ({label} executor, {chunks} chunks; Dagster step events and "
                    "asset metadata):", "", "| stage | seconds | share | ms per chunk |", "|---|---:|---:|---:|"]
        for name, seconds in rows:
            out.append(f"| {name} | {seconds:.2f} | {seconds / first['wall_s']:.1%} | "
                       f"{1000 * seconds / max(chunks, 1):.1f} |")
        out.append(f"| whole command | {first['wall_s']:.2f} | 100% | {1000 * first['wall_s'] / max(chunks, 1):.1f} |")
        if first.get("graph_layers_ms_per_chunk"):
            out += ["", "graph_facts by layer, ms per chunk (its ms_per_chunk_by_layer metadata): " + ", ".join(
                f"{k} {v}" for k, v in first["graph_layers_ms_per_chunk"].items())]
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--paragraphs", type=int, default=4)
    parser.add_argument("--partition-keys", type=int, default=100000, help="0 skips the partition-cost figures")
    parser.add_argument("--tick-files", type=int, default=100000,
                        help="real files for the one-sensor-tick figure; 0 skips it")
    parser.add_argument("--skip-plain", action="store_true")
    parser.add_argument("--real", metavar="DIR", help="a folder of real files: the main command as a user runs it "
                                                      "against the plain loop and LlamaIndex (other options ignored)")
    parser.add_argument("--build", type=int, default=0, metavar="N",
                        help="with --real: first fill DIR (empty or missing) with N real files (bench.real_corpus)")
    parser.add_argument("--executors", default="", help="with --real: comma-separated DOCPLATFORM_INGEST_EXECUTOR "
                                                        "values to compare (empty: the default)")
    parser.add_argument("--only-main", action="store_true", help="with --real: the main command only (memory)")
    parser.add_argument("--markdown", help="with --real: write the figures as a block into this file "
                                           "(docs/benchmarks.md)")
    args = parser.parse_args(argv)
    if args.real:
        folder = Path(args.real)
        if args.build:
            from bench.real_corpus import build_real_corpus

            print(f"built {folder}: {build_real_corpus(folder, args.build)}")
        return real_bench(folder, args.executors.split(","), args.markdown, args.only_main)

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
              f"embedder {embedder.model} in {embedder.resolved_precision()} (DOCPLATFORM_EMBEDDER_PRECISION; LlamaIndex the same); "
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

        li = llamaindex_pipeline(docs, str(tmp / "li.db"), embedder.resolved_precision(), embedder.batch_size)
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
