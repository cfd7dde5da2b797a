"""bench.ingest --real (issue 19, points 1, 5, 6): the folders of real files it runs on, the per-stage table it reads
from a real main command's Dagster events, and the folder stamp run_main takes once per run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from bench.real_corpus import build_real_corpus, korean_variants

REPO = Path(__file__).resolve().parent.parent
HANGUL = re.compile(r"[\uac00-\ud7a3]")


def test_forty_real_files_are_distinct_package_descriptions(tmp_path):
    counts = build_real_corpus(tmp_path / "forty", 40)
    files = sorted((tmp_path / "forty").rglob("*"))
    files = [f for f in files if f.is_file()]
    assert len(files) == 40 and counts["packages"] == 40 and counts["korean"] == 0
    texts = [f.read_text(encoding="utf-8") for f in files]
    assert len(set(texts)) == 40 and min(map(len, texts)) >= 1500
    assert {f.suffix for f in files} <= {".md", ".txt"}
    assert counts["bytes"] == sum(f.stat().st_size for f in files)


def test_larger_folders_mix_sources_and_korean_copies_are_edited(tmp_path):
    counts = build_real_corpus(tmp_path / "hundred", 100)
    assert counts["korean"] == 5 and sum(v for k, v in counts.items() if k != "bytes") == 100
    korean = sorted((tmp_path / "hundred" / "korean").iterdir())
    samples = {p.read_text(encoding="utf-8") for p in (REPO / "sample_corpus").glob("ko-*")}
    texts = [p.read_text(encoding="utf-8") for p in korean]
    assert all(HANGUL.search(t) for t in texts)
    assert len(set(texts)) == 5 and not set(texts) & samples  # each copy differs from the others and the sample
    # the edits keep server names well formed: services renamed, servers renumbered, never "srv2-db"
    many = "\n".join(text for _, text in korean_variants(30))
    assert re.search(r"srv-db-\d\d", many) and not re.search(r"srv\d+-", many)
    assert re.search(r"order\d+-api", many)


def test_the_closing_answer_is_remembered_under_the_stamp_the_run_wrote(tmp_path, monkeypatch):
    """run_main computes the folder stamp once and passes it along: the answer remembered under the stamp a run
    wrote is found by the next run whose stamp (computed once) equals it, and not by one whose folder changed."""
    from pipelines import run_main

    docs, data = tmp_path / "docs", tmp_path / "data"
    docs.mkdir()
    data.mkdir()
    (docs / "a.md").write_text("# A\n\ntext")
    (data / "models").mkdir()  # the adapter registry, made when the command looks for the deployed adapter
    monkeypatch.setenv("DOCPLATFORM_DATA_DIR", str(data))
    monkeypatch.setenv("DOCPLATFORM_DOCUMENTS_DIR", str(docs))
    stamp = run_main.folder_stamp(docs)
    (data / run_main.STAMP_NAME).write_text(json.dumps(stamp))
    run_main.remember_answer("q?", "the answer", stamp)
    assert json.loads((data / run_main.ANSWER_CACHE_NAME).read_text())["rendered"] == "the answer"
    assert run_main.cached_answer("q?", run_main.folder_stamp(docs)) == "the answer"
    assert run_main.cached_answer("another question?", stamp) is None
    (docs / "b.md").write_text("# B\n\nmore")
    assert run_main.cached_answer("q?", run_main.folder_stamp(docs)) is None  # the folder changed: asked afresh
    run_main.remember_answer("q?", "not kept", None)  # a run that wrote no stamp (failures) remembers nothing
    assert json.loads((data / run_main.ANSWER_CACHE_NAME).read_text())["rendered"] == "the answer"


@pytest.mark.slow
def test_stage_table_adds_up_and_the_multiprocess_option_indexes_the_same(tmp_path):
    """A real main command's stage table adds up to its wall time and a re-run does no Dagster run; with
    DOCPLATFORM_INGEST_EXECUTOR=multiprocess (vectors/BM25 and graph facts in step processes at once) the same chunks
    and facts are stored, every state final."""
    from bench.ingest import main_command, stage_table
    from resources import MilvusStore
    from resources.graph_store import GraphStore

    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("infrastructure-overview.md", "ko-service-overview.md"):
        shutil.copy2(REPO / "sample_corpus" / name, docs / name)
    first = main_command(docs, tmp_path / "default")
    assert first["peak_rss_mb"] > 100 and first["peak_pss_mb"] > 100  # the process tree was sampled
    rows, chunks = stage_table(first)
    stages = dict(rows)
    assert chunks > 0
    for stage in ("parsing: parser pool (parsed_elements)", "encode (embedder)", "kiwi analysis (BM25 terms)",
                  "graph extraction + SHACL (graph_facts)", "process start, imports, Definitions, folder scan"):
        assert stages[stage] > 0, (stage, rows)
    assert abs(sum(stages.values()) - first["wall_s"]) < 0.05 * first["wall_s"], rows
    again = main_command(docs, tmp_path / "default")  # nothing changed: no Dagster run at all
    assert "0 new or changed since the last complete run" in again["stdout"]
    assert stage_table(again)[1] == 0 and again["wall_s"] < first["wall_s"]

    counts = {}
    for executor in ("", "multiprocess"):
        work = tmp_path / (executor or "default")
        if executor:
            assert "0 failed" in main_command(docs, work, executor)["stdout"]
        states = MilvusStore(uri=str(work / "data" / "milvus.db")).document_states()
        assert set(states) == {"infrastructure-overview.md", "ko-service-overview.md"}
        assert not any(s["fingerprint"].startswith("pending:") for s in states.values())
        with GraphStore(path=str(work / "data" / "graph.lbug")).session() as graph:
            stats = graph.stats()
        counts[executor] = (sorted((k, s["chunks"]) for k, s in states.items()), stats["entities"],
                            sum(stats["relations"].values()))
    assert counts[""] == counts["multiprocess"] and counts[""][2] > 0
