"""Junk text kept out of the index (issue 19, point 4): chunks without words are not embedded or graphed, each
document's skipped share is reported, a mostly-junk document is skipped with a reason."""

import base64
import random
import shutil

import pytest

from assets.junk import is_code_line, is_junk_chunk, junk_reason, junk_share
from tests.conftest import SAMPLE

_HEX_RNG = random.Random(3)
BASE64_BLOB = base64.encodebytes(random.Random(7).randbytes(6000)).decode()
MINIFIED_JS = ('!function(e,t){"object"==typeof exports&&"undefined"!=typeof module?module.exports=t():"function"=='
               'typeof define&&define.amd?define(t):(e=e||self).Vue=t()}(this,function(){"use strict";var e=Object.'
               'freeze({});function t(e){return null==e}function n(e){return null!=e}function r(e){return!0===e}'
               'function o(e){return"string"==typeof e||"number"==typeof e||"symbol"==typeof e}') * 40

NOT_JUNK = {
    "korean prose": "한국어 문서는 형태소 분석기로 색인됩니다. 검색 결과는 문서의 출처와 함께 보여 줍니다. "
                    "운영자는 야간 재색인을 설정할 수 있고, 백업은 매일 새벽 두 시에 실행됩니다.",
    "japanese without spaces": "これは日本語の文章で、単語の間に空白がありません。検索エンジンはこの文章を正しく索引するべきです。" * 3,
    "chinese": "备份策略规定每天凌晨两点运行完整备份，并保留三十天的快照。" * 3,
    "table of numbers": "Quarter Revenue Cost Margin\nQ1 1,200 800 33%\nQ2 1,350 900 33.3%\nQ3 1,500 950 36.7%\n"
                        "Q4 1,800 1,000 44.4%\nTotal 5,850 3,650 37.6%",
    "code snippet in docs": "Install it and call the client:\n\nfrom docplatform import Client\n"
                            "client = Client(url='http://localhost:8000')\nresult = client.search(query='backup', "
                            "limit=5)\nfor hit in result:\n    print(hit.doc_id, hit.score)",
    "urls with text": "See https://github.com/example-org/example-repository/blob/main/docs/operations/backup-and-"
                      "restore.md for the restore procedure, and https://example.com/a?b=c&d=e for the API.",
    "list of links": "- https://github.com/example-org/example-repository/blob/main/docs/operations/backup.md\n"
                     "- https://pypi.org/project/example-package/1.2.3/#description",
    "markdown table": "| Service | Port | Owner |\n|---|---|---|\n| api | 8080 | platform |\n| db | 5432 | data |",
}
JUNK = {
    "one repeated character": "=" * 2000,
    "one repeated letter": "a" * 2000,
    "base64 blob": BASE64_BLOB,
    "hex blob": " ".join(_HEX_RNG.randbytes(32).hex() for _ in range(30)),
    "minified js": MINIFIED_JS[:3000],
    "punctuation run": "!@#$%^&*()_+-=[]{};':,./<>?" * 80,
    "one repeated token": "lol " * 300,
}


@pytest.mark.parametrize("name", sorted(NOT_JUNK))
def test_text_with_words_is_not_junk(name):
    assert junk_reason(NOT_JUNK[name]) is None


@pytest.mark.parametrize("name", sorted(JUNK))
def test_chunks_without_words_are_junk(name):
    assert is_junk_chunk(JUNK[name]), name


@pytest.mark.parametrize("line", [
    "from quorvex.client import Session, retry",
    "session = quorvex.Session(timeout=5)",
    "    for item in session.list_items():",
    "async with quorvex.open('items.db') as db:",
    "def handler(event, context):",
    "    limit: int | None = None",
    ">>> session.ping()",
    "})",
])
def test_program_lines_are_code(line):
    assert is_code_line(line)


@pytest.mark.parametrize("line", [
    "Sessions can be opened with quorvex.Session() and closed with session.close() when the job ends.",
    "max_connections on dock-db is 200; the nightly import alone held 196 of them.",
    "If catalog-db (MySQL, on pg-node-2) is read-only, the indexer stops.",
    "for the services listed below (see the table):",
    "결제 서비스(payment-api)는 pg-01에서 실행된다.",
    "hosts: srv-a, srv-b",
    "See the guide (https://example.com/guide) for details.",
])
def test_sentences_that_name_code_are_not_code(line):
    assert not is_code_line(line)


def test_junk_share_counts_characters():
    texts = [NOT_JUNK["korean prose"], JUNK["one repeated letter"]]
    assert junk_share(texts) == pytest.approx(2000 / (2000 + len(texts[0])))
    assert junk_share([NOT_JUNK["korean prose"]]) == 0.0


@pytest.mark.slow
def test_junk_is_not_indexed_and_each_document_is_reported(tmp_path):
    from tests.platform_harness import Platform

    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(SAMPLE / "oncall-handbook.txt", docs / "oncall-handbook.txt")
    (docs / "repeated.txt").write_text("x" * 2_000_000)
    (docs / "blob.txt").write_text(BASE64_BLOB * 20)
    (docs / "bundle.txt").write_text(MINIFIED_JS)
    prose = ["The backup service copies every database to the vault each night and keeps thirty days of snapshots.",
             "Restores are tested every quarter by the platform team, who write down how long the restore took."]
    blob = BASE64_BLOB[:1200]  # an embedded image, as a README export writes it
    (docs / "mixed.md").write_text(f"# Backups\n\n{prose[0] * 3}\n\n{blob}\n\n## Restores\n\n{prose[1] * 3}\n")
    keys = sorted(p.name for p in docs.iterdir())
    with Platform.create(tmp_path, docs) as platform:
        platform.add(*keys)
        result = platform.ingest_batch(keys)
        assert result.success
        failed = platform.instance.get_run_by_id(result.run_id).tags.get("docplatform/failed_documents", "")
        for name in ("repeated.txt", "blob.txt", "bundle.txt"):
            assert name in failed and "has no words" in failed and platform.count(name) == 0, (name, failed)
        assert "one repeated character ('x')" in failed
        mixed = platform.vectors("mixed.md")
        stored = " ".join(r["text"] for r in mixed)
        assert prose[0][:60] in stored and prose[1][:60] in stored and blob[:40] not in stored
        assert platform.count("oncall-handbook.txt") > 0

        chunks = result.asset_materializations_for_node("document_chunks")[0].metadata
        report = chunks["junk_skipped"].value
        assert 0 < report["mixed.md"]["skipped_share"] < 0.8 and report["repeated.txt"]["skipped_share"] == 1.0
        check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "junk_text_skipped")
        assert not check.passed and check.severity.value == "WARN"
        assert "mixed.md" in check.description and "repeated.txt" in check.description

        from resources.embedder import Embedder

        question = "Who is paged first when the on-call engineer does not answer?"
        with platform.milvus.client() as client:
            hits = platform.milvus.hybrid_search(client, question, Embedder().encode_queries([question])[0].tolist())
        assert hits and not any("xxxx" in h["text"] or h["doc_id"] in ("repeated.txt", "blob.txt", "bundle.txt")
                                for h in hits)
