"""Ingestion on real components: unstructured, the packaged MiniLM model, milvus-lite."""

import numpy as np
import pytest

from assets.batches import UNCHANGED_TAG
from assets.chunking import chunk_id_for
from resources import Embedder
from tests.docfactory import write_pdf
from tests.platform_harness import QUIET, failure_message

SAMPLE_KEYS = {
    "deployment-runbook.pdf",
    "infrastructure-overview.md",
    "oncall-handbook.txt",
    "security-policy.html",
    "team-charter.docx",
    "ko-backup-policy.html",
    "ko-incident-runbook.txt",
    "ko-service-overview.md",
}


def check_results(result) -> dict[str, bool]:
    return {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def test_sample_corpus_every_type_indexed_with_passing_checks(platform):
    results = platform.ingest_all()
    assert set(results) == SAMPLE_KEYS
    total = 0
    for key, result in results.items():
        assert result.success, f"{key}: {failure_message(result)}"
        checks = check_results(result)
        assert all(checks.values()), (key, checks)
        assert {"content_not_empty", "has_text", "chunk_table_valid", "embedding_dimension_and_norm",
                "milvus_count_matches_chunks"} <= set(checks), key
        chunks = result.output_for_node("document_chunks")
        assert all(c["text"].strip() for c in chunks)
        assert platform.count(key) == len(chunks)
        total += len(chunks)
    assert platform.count() == total

    embedder = Embedder()
    with platform.milvus.client() as client:
        hits = platform.milvus.search(client, embedder.encode(["Who writes the blameless incident review?"])[0].tolist(), 2)
    assert hits[0]["doc_id"] == "oncall-handbook.txt"


def test_rerun_is_idempotent_and_reuses_vectors(platform):
    platform.add("infrastructure-overview.md")
    first = platform.ingest("infrastructure-overview.md")
    assert first.success
    ids = {r["chunk_id"] for r in platform.vectors("infrastructure-overview.md")}
    # the same content again: found indexed at run start, nothing after raw_documents runs
    second = platform.ingest("infrastructure-overview.md")
    assert second.success
    skipped = {e.step_key for e in second.all_events if e.event_type_value == "STEP_SKIPPED"}
    assert {"parsed_elements", "chunk_vectors", "knowledge_graph", "documents_indexed"} <= skipped
    assert platform.instance.get_run_by_id(second.run_id).tags[UNCHANGED_TAG] == '["infrastructure-overview.md"]'
    # forced (reindex_unchanged): the whole path runs again, every vector is reused, nothing is duplicated
    forced = platform.defs.resolve_job_def("ingest_job").execute_in_process(
        partition_key="infrastructure-overview.md", instance=platform.instance,
        run_config=QUIET | {"ops": {"raw_documents": {"config": {"reindex_unchanged": True}}}})
    assert forced.success
    assert forced.output_for_node("chunk_vectors")["embedded"] == 0
    assert {r["chunk_id"] for r in platform.vectors("infrastructure-overview.md")} == ids
    assert platform.count() == len(ids)


def test_chunk_ids_are_deterministic():
    assert chunk_id_for("a.md", 0, "text") == chunk_id_for("a.md", 0, "text")
    assert chunk_id_for("a.md", 0, "text") != chunk_id_for("b.md", 0, "text")
    assert len(chunk_id_for("a.md", 3, "x" * 5000)) == 40


def test_changed_document_replaces_its_vectors(platform):
    key = "oncall-handbook.txt"
    platform.add(key)
    assert platform.ingest(key).success
    before = {r["chunk_id"]: r["text"] for r in platform.vectors(key)}
    path = platform.docs / key
    path.write_text("On-call Handbook\n\nPages are now answered by the Night Shift Team within two minutes.\n")
    result = platform.ingest(key)
    assert result.success, failure_message(result)
    after = {r["chunk_id"]: r["text"] for r in platform.vectors(key)}
    assert set(after).isdisjoint(before)
    assert any("Night Shift Team" in t for t in after.values())
    assert not any("blameless" in t for t in after.values())
    assert platform.count(key) == len(result.output_for_node("document_chunks"))


BAD_INPUTS = {
    "broken.pdf": (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >>\nthis is not a pdf body\x00\xff", "could not be parsed"),
    "empty.md": (b"", "the file is empty"),
    "junk.txt": (bytes(range(256)) * 40, "binary data"),
    "notes.xyz": (b"some text in an unknown format", "unsupported file type '.xyz'"),
    "fake.docx": (b"plain text pretending to be docx", "not a valid .docx"),
    "header-only.pdf": (b"just text, no pdf header", "missing %PDF- header"),
}


def test_bad_inputs_fail_clearly_and_others_proceed(platform):
    for name, (content, _) in BAD_INPUTS.items():
        (platform.docs / name).write_bytes(content)
    results = platform.ingest_all()
    # the scan skips a type outside the include globs (tests/test_formats.py); a partition of that type
    # registered anyway (an older scan, a manual key) still fails clearly
    assert "notes.xyz" not in results
    platform.add("notes.xyz")
    results["notes.xyz"] = platform.ingest("notes.xyz")
    for name, (_, expected) in BAD_INPUTS.items():
        assert not results[name].success, name
        message = failure_message(results[name])
        assert f"document '{name}'" in message and expected in message, message
        assert platform.count(name) == 0
    for key in SAMPLE_KEYS:
        assert results[key].success, failure_message(results[key])
        assert platform.count(key) > 0


def test_document_turned_corrupt_keeps_its_indexed_vectors(platform):
    key = "deployment-runbook.pdf"
    platform.add(key)
    assert platform.ingest(key).success
    before = platform.vectors(key)
    assert before
    (platform.docs / key).write_bytes(b"%PDF-1.7\n%garbage\x00\x01\x02 trailer")
    result = platform.ingest(key)
    assert not result.success
    assert "could not be parsed" in failure_message(result) or "no text" in failure_message(result)
    assert platform.vectors(key) == before
    # a good version afterwards replaces the old vectors
    write_pdf(platform.docs / key, ["Deployment Runbook", "Deployments now happen on Thursdays."])
    assert platform.ingest(key).success
    texts = [r["text"] for r in platform.vectors(key)]
    assert any("Thursdays" in t for t in texts) and not any("Tuesday" in t for t in texts)


def materialized_partitions(runs, asset: str) -> set[str]:
    return {e.materialization.partition for _, run in runs for e in run.get_asset_materialization_events()
            if e.materialization.asset_key.to_user_string() == asset}


def test_sensor_adds_changes_and_deletes_documents(platform):
    result, runs = platform.tick()
    assert platform.partitions == SAMPLE_KEYS
    # one batched run over the eight new documents' partitions
    assert len(runs) == 1 and runs[0][0].partition_key is None
    assert sorted(runs[0][1].dagster_run.tags[k] for k in ("dagster/asset_partition_range_start",
                                                           "dagster/asset_partition_range_end")) == \
        sorted([min(SAMPLE_KEYS), max(SAMPLE_KEYS)])
    assert all(run.success for _, run in runs)
    total = platform.count()
    assert total > 0

    # nothing changed: the sensor skips
    result, runs = platform.tick()
    assert runs == [] and result.skip_reason is not None

    # add one, change one, delete one
    (platform.docs / "new-policy.md").write_text("# Backup Policy\n\nThe Data Team tests restores of billing-db monthly.\n")
    (platform.docs / "security-policy.html").write_text(
        "<html><body><h1>Security Policy</h1><p>Hardware keys are mandatory for every engineer.</p></body></html>")
    removed_count = platform.count("team-charter.docx")
    (platform.docs / "team-charter.docx").unlink()
    result, runs = platform.tick()
    # change-only: one run for the changed and the added document (adjacent partitions once the deleted
    # one is gone), and the purge
    assert sorted(r.job_name for r, _ in runs) == ["ingest_job", "purge_documents_job"]
    assert materialized_partitions(runs, "chunk_vectors") == {"new-policy.md", "security-policy.html"}
    assert all(run.success for _, run in runs), [failure_message(run) for _, run in runs]
    assert platform.partitions == (SAMPLE_KEYS - {"team-charter.docx"}) | {"new-policy.md"}
    assert platform.count("team-charter.docx") == 0
    assert platform.count("new-policy.md") > 0
    assert any("Hardware keys" in r["text"] for r in platform.vectors("security-policy.html"))
    assert platform.count() == total - removed_count - 2 + platform.count("new-policy.md") + platform.count("security-policy.html")


def test_nightly_schedule_requests_documents_not_indexed_as_they_are(platform):
    from dagster import build_schedule_context

    from pipelines.schedules import nightly_reindex_schedule

    import datetime

    from resources import DocumentSource, Embedder

    platform.add(*sorted(SAMPLE_KEYS))

    def evaluate():
        context = build_schedule_context(
            instance=platform.instance, repository_def=platform.defs.get_repository_def(),
            resources={"documents": DocumentSource(root=str(platform.docs), scan_cache=str(platform.root / "scan.sqlite")),
                       "milvus": platform.milvus, "embedder": Embedder()},
            scheduled_execution_time=datetime.datetime(2026, 11, 25, 2, tzinfo=datetime.timezone.utc))
        return nightly_reindex_schedule.evaluate_tick(context).run_requests or []

    # registered, never indexed: every partition, in one batched run over the range
    requests = evaluate()
    assert len(requests) == 1 and requests[0].run_key.startswith("nightly-2026-11-25-batch:")
    assert (requests[0].tags["dagster/asset_partition_range_start"], requests[0].tags["dagster/asset_partition_range_end"]) \
        == (min(SAMPLE_KEYS), max(SAMPLE_KEYS))
    (platform.docs / "team-charter.docx").unlink()  # deleted while the sensor was off: not re-run
    requests = evaluate()
    assert [(r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"]) for r in requests] \
        == [(min(SAMPLE_KEYS), "security-policy.html")]
    assert nightly_reindex_schedule.cron_schedule == "0 2 * * *"


def test_embeddings_are_normalised_minilm():
    embedder = Embedder()
    vectors = embedder.encode(["hello world", "another sentence"])
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_document_key_outside_folder_is_refused(docs_dir):
    from resources import DocumentSource

    with pytest.raises(ValueError, match="outside the documents folder"):
        DocumentSource(root=str(docs_dir)).path_for("../etc/passwd")


def test_nested_unicode_and_quoted_file_names(platform):
    odd = platform.docs / "sub dir" / "naïve" / "Ünïcode 'quoted' \"x\" back\\slash.md"
    odd.parent.mkdir(parents=True)
    odd.write_text("# Runbook\n\nThe application Billing Service runs on srv-app-01.\n")
    key = "sub dir/naïve/Ünïcode 'quoted' \"x\" back\\slash.md"
    platform.add(key)
    result = platform.ingest(key)
    assert result.success, failure_message(result)
    assert platform.count(key) == len(result.output_for_node("document_chunks"))
    odd.unlink()
    _, runs = platform.tick()  # first tick: registers the others, purges the deleted one
    assert all(run.success for _, run in runs)
    assert platform.count(key) == 0 and key not in platform.partitions


def test_chunking_config_is_validated(platform):
    platform.add("oncall-handbook.txt")
    job = platform.defs.resolve_job_def("ingest_job")
    too_big = job.execute_in_process(partition_key="oncall-handbook.txt", instance=platform.instance,
                                     raise_on_error=False,
                                     run_config={"ops": {"document_chunks": {"config": {"max_characters": 100000}}}})
    assert not too_big.success
    assert "less than or equal to 16000" in failure_message(too_big)
    assert platform.count("oncall-handbook.txt") == 0
    small = job.execute_in_process(partition_key="oncall-handbook.txt", instance=platform.instance,
                                   run_config={"ops": {"document_chunks": {"config": {"max_characters": 120}}}})
    chunks = small.output_for_node("document_chunks")
    assert len(chunks) > 3 and all(len(c["text"]) <= 120 for c in chunks)
    assert platform.count("oncall-handbook.txt") == len(chunks)


def test_embedder_precision_bf16_matches_fp32_and_bad_setting_is_named(monkeypatch):
    from resources.embedder import cpu_has_native_bf16

    texts = ["The billing service runs on db-01, managed by the Data Team.", "Backups are kept for 30 days. " * 20]
    fp32, bf16 = Embedder(precision="fp32"), Embedder(precision="bf16")
    assert fp32.resolved_precision() == "fp32" and bf16.resolved_precision() == "bf16"
    a, b = fp32.encode(texts), bf16.encode(texts)
    assert not np.array_equal(a, b)  # bf16 arithmetic really ran
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert float((a * b).sum(axis=1).min()) > 0.999
    assert Embedder().resolved_precision() == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert Embedder(precision="bf16").fingerprint() == Embedder(precision="fp32").fingerprint()
    monkeypatch.setenv("DOCPLATFORM_EMBEDDER_PRECISION", "fp16")
    with pytest.raises(ValueError, match="DOCPLATFORM_EMBEDDER_PRECISION"):
        Embedder().encode(["x"])
