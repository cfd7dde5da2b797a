"""bench.ask (RAG vs RAG + graph): its labelled set is what the issue asks for, its scoring is right, and a small
subset runs end to end on real parts (the real ingest pipeline, milvus-lite, MiniLM, the ladybug graph the extractor
builds, SmolLM2-135M answering in process) with figures of the promised structure."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from bench.ask import BLOCK, CONTEXTS, RAG_VS_GRAPH, REPO, answer_accuracy, load_questions, main, path_hits

KINDS = {"single-hop", "two-hop", "three-hop", "aggregation", "indirect"}
# questions whose last hop is stated in a document that does not name the question's entity (srv-web-01's team is in
# the network guide, srv-log-02's in the delivery-routing page, srv-app-06's in the server inventory): retrieval
# alone misses it on this 8-document subset at top-3 (the full set: 22 documents at top-5), the graph path brings it
GRAPH_HOP_NEEDED = ("c-08", "k-05", "c-14")
SUBSET = GRAPH_HOP_NEEDED + ("c-01", "k-02")
SUBSET_DOCS = ("payments-portal-architecture.md", "network-operations.md", "service-catalog.md", "server-inventory.csv",
               "ko-logistics-services.md", "ko-delivery-routing.html", "ko-db-operations.txt",
               "search-team-onboarding.md")


def set_documents(data: dict, set_name: str) -> dict[str, Path]:
    return {p.name: p for folder in data["sets"][set_name] for p in (REPO / folder).iterdir() if p.is_file()}


def test_the_labelled_set_covers_what_the_issue_asks_for():
    data = load_questions(RAG_VS_GRAPH)
    questions = data["questions"]
    assert len(questions) >= 40 and len({q["id"] for q in questions}) == len(questions)
    kinds = Counter(q["kind"] for q in questions)
    assert set(kinds) == KINDS and min(kinds.values()) >= 5, kinds
    assert Counter(q["lang"] for q in questions)["ko"] >= 10
    assert {q["hops"] for q in questions} == {1, 2, 3}
    for set_name in data["sets"]:
        documents = set_documents(data, set_name)
        assert len(documents) >= 20
        assert len({p.suffix for p in documents.values()}) >= 5  # prose, tables, lists in md/txt/html/csv/pdf/docx
        for question in [q for q in questions if q["set"] == set_name]:
            assert question["answers"] and all(a.strip() for a in question["answers"]), question["id"]
            for item in question["relevant"]:  # gold evidence names a document of the set and a fact
                assert item["doc"] in documents and item["contains"].strip(), (question["id"], item)
    assert all(q["graph_paths"] for q in questions if q["kind"] in {"two-hop", "three-hop", "indirect"})


def test_path_hits_reads_gold_paths_either_way_and_accuracy_wants_every_reference_token():
    found = [{"names": ["Network Team", "srv-web-01", "Payments Portal"]}, {"names": ["a", "b"]}]
    assert path_hits([["Payments Portal", "srv-web-01", "Network Team"]], found) == (1, 1)
    assert path_hits([["payments portal", "srv-web-01"], ["a", "c"]], found) == (1, 2)
    assert path_hits([["Payments Portal", "Network Team"]], found) == (0, 1)  # a run of names, not a subsequence
    assert answer_accuracy("It is managed by the Network Team [2].", ["the Network Team"]) == 1.0
    assert answer_accuracy("the Network", ["the Network Team"]) == 0.0
    assert answer_accuracy("서버는 인프라팀이 관리합니다", ["인프라팀", "Platform Team"]) == 1.0  # particle stripped


@pytest.mark.slow
def test_a_subset_runs_end_to_end_and_the_graph_adds_the_missing_hop(tmp_path, capsys):
    from resources.smollm2 import smollm2_model_dir

    data = load_questions(RAG_VS_GRAPH)
    documents = set_documents(data, "company")
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in SUBSET_DOCS:
        shutil.copy2(documents[name], docs / name)
    subset = {"sets": {"tiny": [str(docs)]},
              "questions": [dict(q, set="tiny") for q in data["questions"] if q["id"] in SUBSET]}
    questions_file = tmp_path / "questions.json"
    questions_file.write_text(json.dumps(subset, ensure_ascii=False), encoding="utf-8")
    markdown = tmp_path / "benchmarks.md"
    markdown.write_text("# Benchmarks\n\nkept\n", encoding="utf-8")

    assert main(["--questions", str(questions_file), "--work-dir", str(tmp_path / "work"), "--hf",
                 "--base-model-path", str(smollm2_model_dir()), "--max-tokens", "8", "--top-k", "3", "--json",
                 "--markdown", str(markdown)]) == 0
    report = json.loads(capsys.readouterr().out)

    rows = {r["id"]: r for r in report["questions"]}
    assert set(rows) == set(SUBSET)
    for row in rows.values():
        assert set(row["recall"]) == set(CONTEXTS) and all(0.0 <= v <= 1.0 for v in row["recall"].values())
        assert row["recall"]["rag+graph"] >= row["recall"]["rag"]  # the graph only adds context
        assert set(row["answers"]["base-hf"]) == set(CONTEXTS)
        for answer in row["answers"]["base-hf"].values():
            assert answer["error"] is None and answer["answer"].strip() and answer["latency_s"] > 0
            assert 0.0 <= answer["f1"] <= 1.0 and answer["accuracy"] in (0.0, 1.0)
    for qid in GRAPH_HOP_NEEDED:  # retrieval alone misses the second hop's chunk; the graph path brings it
        row = rows[qid]
        assert row["recall"]["rag"] < 1.0 and row["recall"]["rag+graph"] == 1.0, row
        assert row["graph_paths_found"] == row["graph_paths_gold"] == 1, row["graph_paths"]
        assert row["answers"]["base-hf"]["rag+graph"]["context_recall"] == 1.0
    summary = report["summary"]
    assert {"all", "kind=two-hop", "kind=single-hop", "lang=ko", "lang=en"} <= set(summary)
    assert summary["all"]["questions"] == len(SUBSET) and summary["all"]["graph_raised_recall"] >= len(GRAPH_HOP_NEEDED)
    assert summary["all"]["recall"]["rag+graph"] > summary["all"]["recall"]["rag"]

    text = markdown.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n\nkept\n") and f"<!-- bench:{BLOCK} -->" in text
    assert "| group | n | evidence recall RAG | evidence recall RAG+graph |" in text and "| two-hop | 2 |" in text and "| three-hop | 1 |" in text
