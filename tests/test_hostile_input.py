"""Hostile documents: each is refused or parsed within per-document size, time and memory limits, with a clear
error naming the file; the run's other documents proceed. (Zip-bomb and entity-bomb .docx files and the size
limit on a real file: tests/test_ingestion_scale.py::test_bombs_and_oversized_files_are_refused_by_name.)"""

import subprocess
from pathlib import Path

import pytest

from assets.parsing import DocumentError, PARSE_MEMORY_MB, parse_many, parse_records
from resources.documents import SUPPORTED_SUFFIXES, DocumentSource
from tests.hostile_docs import billion_laughs, deeply_nested, spinning_pdf
from tests.platform_harness import failure_message

REPO = Path(__file__).resolve().parent.parent


def _read_bytes_so_far() -> int:
    return int(next(line for line in Path("/proc/self/io").read_text().splitlines() if line.startswith("rchar:")).split()[1])


@pytest.mark.slow
def test_multi_gigabyte_file_is_refused_by_size_without_being_read(platform):
    huge = platform.docs / "huge-export.txt"
    subprocess.run(["truncate", "-s", "6G", str(huge)], check=True)  # sparse: 6 GB long, no disk used
    before = _read_bytes_so_far()
    scanned = DocumentSource(root=str(platform.docs)).scan()
    scan_read = _read_bytes_so_far() - before
    batch = ["huge-export.txt", "oncall-handbook.txt"]
    platform.add(*batch)
    result = platform.ingest_batch(batch)
    run_read = _read_bytes_so_far() - before - scan_read
    assert scanned["huge-export.txt"].size == 6 * 1024 ** 3
    assert scan_read < 50 * 1024 ** 2, f"the scan read {scan_read:,} bytes: it hashed the 6 GB file"
    # the run reads models and libraries (~250 MB here), never the 6 GB file
    assert run_read < 2 * 1024 ** 3, f"the run read {run_read:,} bytes"
    assert result.success  # a batch: the other documents were indexed
    failed = platform.instance.get_run_by_id(result.run_id).tags["docplatform/failed_documents"]
    assert "huge-export.txt" in failed and "too large: 6,442,450,944 bytes" in failed
    assert platform.count("oncall-handbook.txt") > 0 and platform.count("huge-export.txt") == 0
    one = platform.ingest("huge-export.txt")
    assert not one.success and "document 'huge-export.txt': too large" in failure_message(one)


def test_pdf_that_makes_the_parser_spin_hits_the_per_document_timeout(tmp_path):
    sample = (REPO / "sample_corpus" / "deployment-runbook.pdf").read_bytes()
    assert parse_records("warm.pdf", ".pdf", sample)  # imports the PDF parser, so the timeout counts parsing only
    spin = spinning_pdf(tmp_path / "spin.pdf")
    assert spin.stat().st_size < 200_000  # a small file ...
    parsed, errors = parse_many([("spin.pdf", ".pdf", spin.read_bytes()), ("runbook.pdf", ".pdf", sample)], timeout_s=4)
    # ... that would keep pdfminer busy for minutes: stopped at the limit, named, and the other document parsed
    assert errors == {"spin.pdf": "document 'spin.pdf': parsing took longer than 4 s; skipped"}
    assert parsed["runbook.pdf"]


def test_parser_worker_memory_is_capped_with_a_clear_error():
    from tests.parse_faults import memory_hog_worker

    docs = [("hog.md", ".md", b"# H\n\nwants gigabytes"), ("ok.md", ".md", b"# OK\n\nfine text")]
    parsed, errors = parse_many(docs, workers=1, timeout_s=60, worker=memory_hog_worker)
    # without the cap this lazily-zeroed allocation would succeed on this machine
    assert errors == {"hog.md": f"document 'hog.md': parsing needed more than the {PARSE_MEMORY_MB:,} MB memory limit; skipped"}
    assert parsed["ok.md"][0]["text"]


def _parse_or_refuse(doc_id: str, data: bytes):
    try:
        return parse_records(doc_id, Path(doc_id).suffix, data), None
    except DocumentError as exc:
        return None, exc.description


def test_billion_laughs_html_is_not_expanded():
    records, error = _parse_or_refuse("laughs.html", billion_laughs())
    # the HTML parser does not expand internal entities: the document parses to its literal text, or is refused
    if error is not None:
        assert error.startswith("document 'laughs.html'")
    else:
        text = "".join(r.get("text") or "" for r in records)
        assert "Intro text." in text and len(text) < 10_000


def test_billion_laughs_xml_is_refused_or_not_expanded():
    records, error = _parse_or_refuse("laughs.xml", billion_laughs(root="doc"))
    if ".xml" not in SUPPORTED_SUFFIXES:
        assert error and "unsupported file type '.xml'" in error
        return
    assert error is not None or len("".join(r.get("text") or "" for r in records)) < 10_000


@pytest.mark.parametrize("doc_id", ["nested.html", "nested.xml"])
def test_deeply_nested_markup_parses_shallow_text_or_is_refused(doc_id):
    records, error = _parse_or_refuse(doc_id, deeply_nested(100_000))  # no RecursionError, no crash
    if error is not None:
        assert error.startswith(f"document '{doc_id}'")
        return
    text = " ".join(r.get("text") or "" for r in records)
    assert "Shallow text." in text
