"""Corpus-scale ingestion on real components: batched runs, change-only requests, embedding cache,
token-bounded chunks, parser isolation, hybrid search."""

import datetime
import io
import json
import os
import subprocess
import sys
import time
import zipfile

import pytest

from assets.batches import FAILED_TAG, UNCHANGED_TAG
from assets.chunking import ChunkingConfig, chunk_elements, default_tokenizer
from assets.vector_index import expected_fingerprint
from assets.parsing import parse_many
from pipelines.partitions import contiguous_batches
from resources import DocumentSource, Embedder
from resources.milvus import MilvusStore, MilvusUnavailable
from tests.docfactory import write_docx
from tests.platform_harness import failure_message, free_port
from tests.test_ingestion import SAMPLE_KEYS, check_results


def test_contiguous_batches_never_span_unwanted_keys():
    order = ["a", "b", "c", "d", "e", "f", "g"]
    assert contiguous_batches(order, {"a", "b", "d", "e", "f", "g"}, max_size=3) == [["a", "b"], ["d", "e", "f"], ["g"]]
    assert contiguous_batches(order, set()) == []


def test_batch_isolates_bad_documents_and_keeps_indexed_vectors(platform):
    keys = sorted(SAMPLE_KEYS)
    platform.add(*keys)
    first = platform.ingest_batch(keys)
    assert first.success, failure_message(first)
    corrupt = "deployment-runbook.pdf"
    before = platform.vectors(corrupt)
    assert before and all(platform.count(k) > 0 for k in keys)

    # the same batch again, with one document turned corrupt, one empty and one new, changed one
    (platform.docs / corrupt).write_bytes(b"%PDF-1.7\n%garbage\x00\x01\x02 trailer")
    (platform.docs / "infrastructure-overview.md").write_text("")
    (platform.docs / "oncall-handbook.txt").write_text("On-call Handbook\n\nThe Night Shift Team answers pages.\n")
    result = platform.ingest_batch(keys)
    assert result.success, failure_message(result)
    checks = check_results(result)
    assert checks["batch_documents_ok"] is False
    assert checks["milvus_count_matches_chunks"] and checks["embedding_dimension_and_norm"]
    evaluation = next(c for c in result.get_asset_check_evaluations() if c.check_name == "batch_documents_ok")
    failed = evaluation.metadata["failed_documents"].value
    assert set(failed) == {corrupt, "infrastructure-overview.md"}
    assert "could not be parsed" in failed[corrupt] or "no text" in failed[corrupt]
    assert "the file is empty" in failed["infrastructure-overview.md"]
    tagged = json.loads(result.dagster_run.tags[FAILED_TAG])
    assert set(tagged) == {corrupt, "infrastructure-overview.md"}
    # per-document status: an observation on each failed partition
    observed = {(e.partition, e.asset_observation_data.asset_observation.metadata["status"].value)
                for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"}
    assert {k for k, status in observed if status == "failed"} == {corrupt, "infrastructure-overview.md"}
    # the documents that did not change were found indexed at run start and skipped, not re-done
    unchanged = set(keys) - {corrupt, "infrastructure-overview.md", "oncall-handbook.txt"}
    assert {k for k, status in observed if status == "unchanged"} == unchanged
    assert set(json.loads(result.dagster_run.tags[UNCHANGED_TAG])) == unchanged
    # nothing already indexed is lost; the good change went through
    assert platform.vectors(corrupt) == before
    assert platform.count("infrastructure-overview.md") > 0
    assert any("Night Shift Team" in r["text"] for r in platform.vectors("oncall-handbook.txt"))


def test_sensor_and_nightly_request_only_changed_documents(platform, monkeypatch):
    from dagster import build_schedule_context

    from pipelines.schedules import nightly_reindex_schedule

    _, runs = platform.tick()
    assert all(run.success for _, run in runs)
    resources = {"documents": DocumentSource(root=str(platform.docs), scan_cache=str(platform.root / "scan-cache.sqlite")),
                 "milvus": platform.milvus, "embedder": Embedder()}

    def nightly():
        context = build_schedule_context(instance=platform.instance, resources=resources,
                                         repository_def=platform.defs.get_repository_def(),
                                         scheduled_execution_time=datetime.datetime(2026, 11, 25, 2, tzinfo=datetime.timezone.utc))
        return nightly_reindex_schedule.evaluate_tick(context)

    idle = nightly()
    assert not idle.run_requests and "checked 8 documents" in idle.skip_message and "0 changed" in idle.skip_message
    result, runs = platform.tick()
    assert runs == [] and result.skip_reason is not None

    # one edited document: exactly one run, for it
    (platform.docs / "oncall-handbook.txt").write_text("On-call Handbook\n\nPages go to the Night Shift Team.\n")
    requests = nightly().run_requests
    assert [r.partition_key for r in requests] == ["oncall-handbook.txt"]
    assert requests[0].run_key.startswith("nightly-2026-11-25-oncall-handbook.txt@")
    _, runs = platform.tick()
    assert [r.partition_key for r, _ in runs] == ["oncall-handbook.txt"] and runs[0][1].success
    assert not nightly().run_requests

    # a new stage version (code, chunking config or embedder): everything again, in one batched run
    monkeypatch.setattr("assets.chunking.INGEST_CODE_VERSION", "bumped-for-test")
    requests = nightly().run_requests
    assert len(requests) == 1 and requests[0].tags["docplatform/documents"] == "8"
    _, runs = platform.tick()
    assert len(runs) == 1 and runs[0][1].success
    assert all(s["fingerprint"] == expected_fingerprint(Embedder()) for s in platform.milvus.document_states().values())
    assert not nightly().run_requests
    # another embedder (multilingual-e5): every document is stale again and would be embedded anew
    resources["embedder"] = Embedder(model="multilingual-e5")
    requests = nightly().run_requests
    assert len(requests) == 1 and requests[0].tags["docplatform/documents"] == "8"


def test_edit_near_the_top_re_embeds_only_changed_chunks(platform):
    paragraphs = [f"Section {i}: the service number {i} is owned by team {i % 3} and runs in cluster {i % 5}. " * 6
                  for i in range(12)]
    doc = platform.docs / "long.md"
    doc.write_text("# Long\n\n" + "\n\n".join(f"## Part {i}\n\n{p}" for i, p in enumerate(paragraphs)))
    platform.add("long.md")
    first = platform.ingest("long.md")
    assert first.success, failure_message(first)
    total = len(first.output_for_node("chunk_vectors")["chunk_ids"])
    assert total >= 8
    doc.write_text(doc.read_text().replace("Section 0: the service number 0", "Section 0: the EDITED service number 0"))
    second = platform.ingest("long.md")
    assert second.success
    embedded = second.output_for_node("chunk_vectors")["embedded"]
    assert 1 <= embedded <= 2, (embedded, total)
    assert platform.count("long.md") == total


def test_chunks_fit_the_embedder_token_window():
    code = "\n".join(f"def f_{i}(x):\n    return {{'k_{i}': [x**{i}, x//{i + 1}, hex(x)]}}  # {i}" for i in range(40))
    elements = [{"type": "NarrativeText", "text": code, "element_id": "e1", "metadata": {"filename": "c.md"}}]
    rows = chunk_elements("c.md", "0" * 64, elements, ChunkingConfig())
    tokenizer = default_tokenizer()
    lengths = [len(tokenizer.encode(r["text"]).ids) for r in rows]  # with [CLS] and [SEP]
    assert len(rows) >= 2 and max(lengths) <= 256, lengths
    assert "".join(r["text"] for r in rows).replace(" ", "").replace("\n", "") == code.replace(" ", "").replace("\n", "")


def test_parser_pool_skips_hanging_and_crashing_documents_by_name():
    from tests.parse_faults import faulty_worker

    docs = [("a.md", ".md", b"# A\n\nalpha text"), ("hang.md", ".md", b"# H\n\nnever ends"),
            ("crash.md", ".md", b"# C\n\nboom"), ("b.txt", ".txt", b"beta text here")]
    # 20 s: a real document must never be judged hung on a loaded 2-core machine
    parsed, errors = parse_many(docs, workers=2, timeout_s=20, worker=faulty_worker)
    assert set(parsed) == {"a.md", "b.txt"}, errors
    assert "took longer than 20 s" in errors["hang.md"] and "'hang.md'" in errors["hang.md"]
    assert "crashed" in errors["crash.md"] and "'crash.md'" in errors["crash.md"]


def test_stopping_the_parser_pool_stops_its_fork_server_and_a_later_parse_starts_afresh():
    """The fork server holds the parsers' imports (~380 MB): it must not sit idle through embedding and graph
    extraction once parsing is over."""
    from multiprocessing import forkserver

    from assets.parsing import IN_PROCESS_MAX_DOCS, shutdown_pools

    docs = [(f"d{i}.txt", ".txt", f"text number {i}".encode()) for i in range(IN_PROCESS_MAX_DOCS + 2)]
    parsed, errors = parse_many(docs, workers=2)
    assert len(parsed) == len(docs) and not errors
    server_pid = forkserver._forkserver._forkserver_pid
    assert server_pid is not None and os.path.exists(f"/proc/{server_pid}")
    shutdown_pools()
    assert forkserver._forkserver._forkserver_pid is None
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{server_pid}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{server_pid}")
    again, errors = parse_many(docs, workers=2)  # a later run's pool starts a fresh fork server
    assert set(again) == set(parsed) and not errors
    shutdown_pools()


def test_freed_heap_memory_goes_back_to_the_system_after_encoding():
    """Freed blocks below the heap's top stay resident until trimmed: what encoding and loading weights free must
    not add to the graph stage's peak (release_free_memory, called by index_documents and the e5 load)."""
    import numpy as np

    from resources.embedder import release_free_memory

    def rss_mb() -> int:
        return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024

    blocks = [np.ones(100_000 // 8) for _ in range(2000)]  # 100 KB each: on the heap, below glibc's mmap threshold
    pin = np.ones(100_000 // 8)  # allocated above them: the heap cannot shrink from its top
    del blocks
    freed_but_resident = rss_mb()
    release_free_memory()
    assert freed_but_resident - rss_mb() >= 100 and pin.sum() == 100_000 // 8


def _bomb_docx(path, entity: bool):
    buffer = io.BytesIO()
    write_docx(path, "Title", ["text"])
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "word/document.xml" and entity:
                data = data.replace(b"?>", b'?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>', 1)
            target.writestr(info, data)
        if not entity:
            target.writestr("word/media/zeros.bin", b"\0" * (40 * 1024 * 1024))
    path.write_bytes(buffer.getvalue())


def test_bombs_and_oversized_files_are_refused_by_name(platform):
    _bomb_docx(platform.docs / "zip-bomb.docx", entity=False)
    _bomb_docx(platform.docs / "xml-bomb.docx", entity=True)
    (platform.docs / "huge.pdf").write_bytes(b"%PDF-1.4\n" + b"0" * 3_000_000)
    from pipelines.definitions import build_defs
    from resources.graph_store import GraphStore

    platform.defs = build_defs(documents=DocumentSource(root=str(platform.docs), max_bytes=2_000_000), milvus=platform.milvus,
                               graph_store=GraphStore(path=str(platform.root / "graph.lbug")))
    expected = {"zip-bomb.docx": "zip bomb", "xml-bomb.docx": "XML bomb", "huge.pdf": "too large"}
    keys = sorted(expected) + ["oncall-handbook.txt"]
    platform.add(*keys)
    for key, problem in expected.items():
        result = platform.ingest(key)
        assert not result.success
        message = failure_message(result)
        assert f"document '{key}'" in message and problem in message, message
    assert platform.ingest("oncall-handbook.txt").success


def test_milvus_server_down_fails_clearly_after_retries():
    store = MilvusStore(uri=f"http://127.0.0.1:{free_port()}", retries=2, backoff_s=0.1, timeout_s=1)
    with pytest.raises(MilvusUnavailable, match=r"unreachable after 2 attempt\(s\)"):
        with store.client():
            pass


def test_hybrid_search_api_filters_and_cli(platform, tmp_path):
    from pipelines.search import filter_expression, search

    results = platform.ingest_all()
    assert all(r.success for r in results.values())
    hits = search("blameless incident review", top_k=3, milvus=platform.milvus)
    assert hits[0]["doc_id"] == "oncall-handbook.txt"
    assert {"chunk_id", "score", "doc_id", "path", "text"} <= set(hits[0])
    only_pdf = search("deployment", top_k=5, filters={"type": "pdf"}, milvus=platform.milvus)
    assert only_pdf and {h["doc_id"] for h in only_pdf} == {"deployment-runbook.pdf"}
    prefix = search("policy", top_k=5, filters={"path": "security"}, milvus=platform.milvus)
    assert prefix and {h["doc_id"] for h in prefix} == {"security-policy.html"}
    bm25 = search("blameless", top_k=2, mode="bm25", milvus=platform.milvus)
    assert bm25 and "blameless" in bm25[0]["text"].lower()
    with pytest.raises(ValueError, match="unknown filter"):
        filter_expression({"colour": "red"})

    # milvus-lite admits one process per .db and this one still holds it: the CLI reads a copy
    import os
    import shutil

    copy = tmp_path / "cli" / "milvus.db"
    shutil.copytree(platform.milvus.uri, copy)
    env = {"DOCPLATFORM_MILVUS_URI": str(copy), "DOCPLATFORM_DOCUMENTS_DIR": str(platform.docs)}

    out = subprocess.run([sys.executable, "-m", "pipelines.search", "who writes the blameless incident review?",
                          "--top-k", "2", "--filter", "doc=oncall-handbook.txt", "--json"],
                         capture_output=True, text=True, timeout=300, env=os.environ | env)
    assert out.returncode == 0, out.stderr[-2000:]
    cli_hits = json.loads(out.stdout)
    assert 1 <= len(cli_hits) <= 2 and {h["doc_id"] for h in cli_hits} == {"oncall-handbook.txt"}
    assert cli_hits[0]["path"].endswith("oncall-handbook.txt")


def test_retrieval_quality_gate_reports_and_blocks_below_the_floor(platform, tmp_path):
    keys = sorted(SAMPLE_KEYS)
    platform.add(*keys)
    job = platform.defs.resolve_job_def("ingest_job")
    from pipelines.partitions import range_tags
    from tests.platform_harness import QUIET

    result = job.execute_in_process(tags=range_tags(keys[0], keys[-1]), instance=platform.instance, run_config=QUIET)
    gate = next(c for c in result.get_asset_check_evaluations() if c.check_name == "retrieval_quality")
    assert gate.passed and gate.metadata["queries"].value >= 10
    assert gate.metadata["recall_at_5"].value >= 0.8 and gate.metadata["mrr"].value >= 0.6

    # a floor the index cannot meet: the blocking check fails the step, and says why
    queries = tmp_path / "queries.json"
    queries.write_text(json.dumps({"queries": [{"query": "Who writes the blameless review after an incident?",
                                                "relevant": [{"doc_id": "security-policy.html", "phrase": "multi-factor"}]}]}))
    doc = platform.docs / "infrastructure-overview.md"
    doc.write_text(doc.read_text() + "\nThe server srv-app-03 is reserved for batch jobs.\n")
    config = QUIET | {"ops": {"chunk_vectors": {"config": {"queries_path": str(queries), "min_mrr": 1.0}}}}
    blocked = job.execute_in_process(partition_key="infrastructure-overview.md", instance=platform.instance,
                                     run_config=config, raise_on_error=False)
    assert not blocked.success and "retrieval_quality" in failure_message(blocked)
    gate = next(c for c in blocked.get_asset_check_evaluations() if c.check_name == "retrieval_quality")
    assert not gate.passed and gate.metadata["queries"].value == 1 and gate.metadata["mrr"].value < 1.0


def test_weekly_full_audit_finds_drift_between_index_and_state(platform):
    keys = sorted(SAMPLE_KEYS)
    platform.add(*keys)
    assert platform.ingest_batch(keys).success
    from tests.platform_harness import QUIET

    audit = platform.defs.resolve_job_def("audit_job")
    result = audit.execute_in_process(instance=platform.instance, run_config=QUIET)
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"index_matches_document_state": True, "graph_full_no_orphans": True,
                      "graph_full_edges_traceable": True}
    with platform.milvus._state_db() as db:  # drift: a document's state row lost
        db.execute("DELETE FROM documents WHERE doc_id = ?", ("oncall-handbook.txt",))
    result = audit.execute_in_process(instance=platform.instance, run_config=QUIET)
    evaluation = next(c for c in result.get_asset_check_evaluations() if c.check_name == "index_matches_document_state")
    assert not evaluation.passed and evaluation.metadata["in_milvus_not_state"].value == ["oncall-handbook.txt"]
