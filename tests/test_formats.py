"""Every document a company has: office formats, e-mail with attachments, OpenDocument, RTF, EPUB, scanned PDFs and
images (Tesseract OCR, English and Korean), tables kept as tables, and the files that are not documents.
Real files generated in the test, real unstructured/pandoc/Tesseract, real Dagster runs on milvus-lite."""

import json
import os

import pytest

from assets.parsing import DocumentError, parse_records
from resources.documents import DocumentSource, ScanReport
from tests.docfactory import write_docx, write_pdf
from tests import formatfactory as ff
from tests.platform_harness import failure_message

HOSTS = [["Hostname", "Deployed apps", "Responsible team"],
         ["bx-web-11", "quote-api", "Revenue Tools"],
         ["bx-web-12", "ledger-ui", "Revenue Tools"]]
LINE = "The quote-api runs on bx-web-11."


def texts(records) -> str:
    return "\n".join(r["text"] for r in records)


GENERATORS = {
    "deck.pptx": lambda p: ff.write_pptx(p, [("Quote service", [LINE, "Owned by Revenue Tools"])]),
    "hosts.xlsx": lambda p: ff.write_xlsx(p, HOSTS),
    "hosts.xls": lambda p: ff.write_xls(p, HOSTS),
    "hosts.csv": lambda p: ff.write_csv(p, HOSTS),
    "notes.odt": lambda p: ff.write_odt(p, "Notes", [LINE]),
    "hosts.ods": lambda p: ff.write_ods(p, HOSTS),
    "slides.odp": lambda p: ff.write_odp(p, [["Quote service", LINE]]),
    "memo.rtf": lambda p: ff.write_rtf(p, [LINE]),
    "book.epub": lambda p: ff.write_epub(p, "Runbook", [LINE]),
    "mail.eml": lambda p: ff.write_eml(p, "Quote service", LINE, []),
    "mail.msg": lambda p: ff.write_msg(p, "Quote service", LINE, []),
}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_each_format_parses_a_real_generated_file(tmp_path, name):
    path = GENERATORS[name](tmp_path / name)
    records = parse_records(name, path.suffix, path.read_bytes())
    text = texts(records)
    assert "bx-web-11" in text and ("quote-api" in text), text
    assert {r["metadata"]["parse_strategy"] for r in records} == {"fast"}
    if name.startswith("hosts"):  # spreadsheets: one table element with its structure
        tables = [r for r in records if r["type"] == "Table"]
        assert tables and "<td>bx-web-12</td>" in tables[0]["metadata"]["text_as_html"]


CORRUPT = {
    "broken.pptx": (b"PK\x03\x04 not really a deck", "not a valid file of this type"),
    "broken.xlsx": (b"just words", "could not be parsed as .xlsx"),
    "broken.xls": (b"\xd0\xcf\x11\xe0 garbage ole", "could not be parsed as .xls"),
    "broken.csv": (bytes(range(256)) * 8, "binary data"),
    "broken.eml": (b"no headers at all, only a sentence", "not an e-mail message"),
    "broken.msg": (b"hello", "not a valid Outlook .msg file"),
    "broken.odt": (b"zz", "not a valid file of this type"),
    "broken.ods": (b"PK\x03\x04", "not a valid file of this type"),
    "broken.odp": (b"x", "not a valid file of this type"),
    "broken.rtf": (b"plain words", "not a valid RTF file"),
    "broken.epub": (b"x", "not a valid file of this type"),
    "broken.png": (b"\x89PNG\r\n\x1a\n truncated", "could not be parsed as .png"),
}


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_corrupt_file_fails_with_a_clear_error_naming_it(name):
    data, expected = CORRUPT[name]
    with pytest.raises(DocumentError) as caught:
        parse_records(name, "." + name.rsplit(".", 1)[1], data)
    assert f"document {name!r}" in caught.value.description and expected in caught.value.description


def test_scan_skips_what_is_not_a_document(tmp_path):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "sub" / "readme.md").write_text("# Readme\n\nText.\n")
    for name in ["font.ttf", "archive.zip", "tool.exe", "~$report.docx", ".#notes.md", "notes.md~", "x.tmp",
                 ".DS_Store", "Thumbs.db", "draft.docx.bak"]:
        (docs / name).write_bytes(b"x")
    outside = tmp_path / "secret.md"
    outside.write_text("# Secret\n")
    os.symlink(outside, docs / "escape.md")
    os.symlink(tmp_path, docs / "escape-dir")
    os.symlink(docs / "sub" / "readme.md", docs / "inside-link.md")  # stays inside: a document
    report = ScanReport()
    found = DocumentSource(root=str(docs)).scan(report=report)
    assert set(found) == {"sub/readme.md", "inside-link.md"}
    assert report.skipped["ignored (lock, hidden or temp file)"] == 7
    assert report.skipped["symlink pointing outside the documents folder"] == 2
    assert report.skipped["not included (.zip)"] == 1 and report.count == 12
    assert any(w.startswith("escape.md:") for w in report.warnings)
    # custom globs: only markdown under sub/, and an exclude
    only = DocumentSource(root=str(docs), include=["sub/*.md"], exclude=["*readme*"]).scan()
    assert only == {}


def test_sensor_lists_skipped_files_and_never_requests_them(platform):
    from dagster import build_sensor_context

    from pipelines.sensors import documents_folder_sensor

    for name in ["font.ttf", "setup.exe", "~$team-charter.docx", "Thumbs.db"]:
        (platform.docs / name).write_bytes(b"\x00binary")
    os.symlink("/etc/hostname", platform.docs / "escape.txt")
    resources = {"documents": DocumentSource(root=str(platform.docs), scan_cache=str(platform.root / "scan.sqlite")),
                 "milvus": platform.milvus, "embedder": platform.defs.resources["embedder"]}
    result = documents_folder_sensor(build_sensor_context(instance=platform.instance, resources=resources,
                                                          definitions=platform.defs))
    added = {k for r in result.dynamic_partitions_requests for k in r.partition_keys}
    from resources.documents import SAMPLE_CORPUS

    assert added == {p.name for p in SAMPLE_CORPUS.iterdir() if p.is_file()}  # the sample documents, no junk file
    assert result.run_requests
    for request in result.run_requests:
        skipped = json.loads(request.tags["docplatform/skipped_files"])
        assert skipped["count"] == 5 and skipped["by_reason"]["not included (.ttf)"] == 1
        assert "escape.txt: symlink pointing outside the documents folder" in skipped["warnings"]


@pytest.mark.slow  # a Dagster ingest run (ingestion + graph) of three documents: ~25 s alone, longer on a loaded machine
def test_mail_attachments_are_documents_of_their_own(platform):
    box = platform.docs / "inbox"
    box.mkdir()
    pdf = write_pdf(platform.root / "report.pdf", ["Incident report", "The quote-api outage ended at 10:40."])
    docx = write_docx(platform.root / "plan.docx", "Plan", ["Move ledger-ui to bx-web-12 on Friday."])
    ff.write_eml(box / "outage.eml", "Outage", "See the report and the plan attached.",
                 [("report.pdf", pdf.read_bytes(), "application/pdf"),
                  ("plan.docx", docx.read_bytes(), "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
                  ("setup.exe", b"MZ\x00\x00", "application/octet-stream")])
    report = ScanReport()
    found = DocumentSource(root=str(platform.docs)).scan(report=report)
    keys = {"inbox/outage.eml", "inbox/outage.eml#report.pdf", "inbox/outage.eml#plan.docx"}
    assert keys <= set(found) and "inbox/outage.eml#setup.exe" not in found
    assert found["inbox/outage.eml#report.pdf"].attached_to == "inbox/outage.eml"
    assert report.skipped == {"attachment not included (.exe)": 1}
    from pipelines.partitions import range_tags
    from pipelines.sensors import skipped_tags
    from tests.platform_harness import QUIET

    platform.add(*sorted(keys))
    result = platform.defs.resolve_job_def("ingest_job").execute_in_process(
        tags=range_tags(sorted(keys)[0], sorted(keys)[-1]) | skipped_tags(report), instance=platform.instance,
        raise_on_error=False, run_config=QUIET)
    assert result.success, failure_message(result)
    assert not json.loads(result.dagster_run.tags.get("docplatform/failed_documents", "{}"))
    assert any("10:40" in r["text"] for r in platform.vectors("inbox/outage.eml#report.pdf"))
    assert any("Friday" in r["text"] for r in platform.vectors("inbox/outage.eml#plan.docx"))
    assert any("attached" in r["text"] for r in platform.vectors("inbox/outage.eml"))
    raw = next(e for e in result.get_asset_materialization_events()
               if e.materialization.asset_key.to_user_string() == "raw_documents")
    assert raw.materialization.metadata["attached_to"].value["inbox/outage.eml#report.pdf"] == "inbox/outage.eml"
    assert raw.materialization.metadata["skipped_files"].value["sample"] == ["inbox/outage.eml#setup.exe (attachment "
                                                                             "not included (.exe))"]


def test_outlook_msg_attachments_are_documents_of_their_own(tmp_path):
    """A real .msg (MS-CFB, written in the test): its body parses, each attachment is a document keyed
    '<mail>#<name>' that reads and parses on its own, and an attachment of a type not included is skipped by name."""
    import extract_msg

    from assets.document_reading import read_document

    docs = tmp_path / "docs"
    (docs / "inbox").mkdir(parents=True)
    plan = write_docx(tmp_path / "plan.docx", "Plan", ["Move ledger-ui to bx-web-12 on Friday."])
    mail = ff.write_msg(docs / "inbox" / "outage.msg", "Outage", "See the plan attached.",
                        [("plan.docx", plan.read_bytes()), ("setup.exe", b"MZ\x00\x00")])
    with extract_msg.openMsg(mail.read_bytes()) as message:  # the file is a real MSG to extract-msg itself
        assert message.subject == "Outage" and message.body == "See the plan attached."
        assert [a.longFilename for a in message.attachments] == ["plan.docx", "setup.exe"]
    source = DocumentSource(root=str(docs))
    report = ScanReport()
    found = source.scan(report=report)
    assert set(found) == {"inbox/outage.msg", "inbox/outage.msg#plan.docx"}
    assert found["inbox/outage.msg#plan.docx"].attached_to == "inbox/outage.msg"
    assert report.skipped == {"attachment not included (.exe)": 1}
    body = parse_records("inbox/outage.msg", ".msg", mail.read_bytes())
    assert "plan attached" in texts(body) and "Friday" not in texts(body)  # attachments are not inlined
    record = read_document(source, "inbox/outage.msg#plan.docx")
    assert record["attached_to"] == "inbox/outage.msg" and record["content"] == plan.read_bytes()
    assert "bx-web-12 on Friday" in texts(parse_records(record["doc_id"], record["suffix"], record["content"]))


def test_large_table_chunks_keep_whole_rows_with_the_header(tmp_path):
    from assets.chunking import ChunkingConfig, chunk_elements

    rows = [HOSTS[0]] + [[f"bx-web-{i:02d}", f"app-{i}, app-{i}b", "Revenue Tools"] for i in range(40)]
    path = ff.write_xlsx(tmp_path / "fleet.xlsx", rows)
    chunks = chunk_elements("fleet.xlsx", "sha", parse_records("fleet.xlsx", ".xlsx", path.read_bytes()), ChunkingConfig())
    assert len(chunks) > 1
    seen = []
    for chunk in chunks:
        lines = chunk["text"].splitlines()
        assert lines[0] == "| Hostname | Deployed apps | Responsible team |" and lines[1].startswith("| ---")
        assert all(line.count("|") == 4 for line in lines)  # every line is a whole row
        assert chunk["table_html"].count("<tr>") == len(lines) - 1
        seen += [line.split("|")[1].strip() for line in lines[2:]]
    assert seen == [r[0] for r in rows[1:]]


@pytest.mark.parametrize("name", ["fleet.xlsx", "fleet.xls", "fleet.csv", "fleet.docx", "fleet.html"])
def test_table_reaches_the_graph_stage_as_a_table(tmp_path, name):
    from assets.chunking import ChunkingConfig, chunk_elements
    from assets.knowledge_graph.extract import extract_facts
    from resources.ontology_loading import load_ontology

    rows = [HOSTS[0]] + [[f"bx-web-{i:02d}", f"quote-api-{i}", "Revenue Tools"] for i in range(30)]
    path = tmp_path / name
    if name.endswith(".xlsx"):
        ff.write_xlsx(path, rows)
    elif name.endswith(".xls"):
        ff.write_xls(path, rows)
    elif name.endswith(".csv"):
        ff.write_csv(path, rows)
    elif name.endswith(".html"):
        path.write_text("<html><body><h1>Fleet</h1><table>" + "".join(
            "<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{c}</{'th' if i == 0 else 'td'}>" for c in r) + "</tr>"
            for i, r in enumerate(rows)) + "</table></body></html>")
    else:
        import docx

        document = docx.Document()
        document.add_heading("Fleet", 1)
        table = document.add_table(rows=len(rows), cols=3)
        for i, r in enumerate(rows):
            for j, c in enumerate(r):
                table.cell(i, j).text = c
        document.save(str(path))
    elements = parse_records(name, path.suffix, path.read_bytes())
    chunks = chunk_elements(name, "sha", elements, ChunkingConfig())
    table_chunks = [c for c in chunks if c.get("table_html")]
    assert len(table_chunks) > 1  # split by row groups
    facts = extract_facts(chunks, load_ontology(), elements=elements)
    names = {e["id"]: e["name"].lower() for e in facts["entities"]}
    triples = {(r["type"], names[r["source"]], names[r["target"]]): r for r in facts["relations"]}
    for i in (0, 29):  # first and last row groups
        runs = triples[("RUNS_ON", f"quote-api-{i}", f"bx-web-{i:02d}")]
        assert f"bx-web-{i:02d}" in next(c["text"] for c in chunks if c["chunk_id"] == runs["chunk_id"])
        assert ("MANAGED_BY", f"bx-web-{i:02d}", "revenue tools") in triples
    assert {e["label"] for e in facts["entities"] if e["name"] == "bx-web-05"} == {"Server"}


# ------------------------------------------------------------------------------------------ OCR

needs_ocr = pytest.mark.skipif(__import__("assets.formats", fromlist=["x"]).ocr_available() is not None,
                               reason="Tesseract (eng+kor) / poppler not installed: `make install` as root")


@needs_ocr
def test_scanned_pdf_falls_back_to_ocr_and_text_pdf_keeps_fast_path(tmp_path):
    scanned = ff.write_scanned_pdf(tmp_path / "scan.pdf", [["Incident report 2024-03", "The quote-api runs on bx-web-11.",
                                                            "Owner: Revenue Tools"]])
    records = parse_records("scan.pdf", ".pdf", scanned.read_bytes())
    assert "quote-api runs on bx-web-11" in texts(records)
    meta = records[0]["metadata"]
    assert meta["parse_strategy"] == "ocr_only" and 0.5 < meta["ocr_confidence"] <= 1.0 and meta["ocr_pages"] == 1
    text_pdf = write_pdf(tmp_path / "text.pdf", ["The quote-api runs on bx-web-11."])
    assert {r["metadata"]["parse_strategy"] for r in parse_records("text.pdf", ".pdf", text_pdf.read_bytes())} == {"fast"}


@needs_ocr
def test_korean_image_is_read_by_ocr(tmp_path):
    if ff.font_path(ff.KOREAN_FONT) is None:
        pytest.skip("Korean font missing (Debian fonts-nanum)")
    image = ff.write_image(tmp_path / "board.png", ["결제 서버 점검 일정", "담당 팀: 결제 플랫폼"], ff.KOREAN_FONT)
    records = parse_records("board.png", ".png", image.read_bytes())
    text = texts(records).replace(" ", "")
    assert "점검일정" in text and "담당팀" in text, text
    assert records[0]["metadata"]["parse_strategy"] == "ocr_only" and records[0]["metadata"]["ocr_confidence"] > 0.5


@needs_ocr
@pytest.mark.slow  # a Dagster ingest run of two documents
def test_document_over_an_ocr_limit_is_skipped_by_name_and_others_proceed(platform, monkeypatch):
    monkeypatch.setenv("DOCPLATFORM_OCR_MAX_PAGES", "1")
    ff.write_scanned_pdf(platform.docs / "a-scan.pdf", [["page one"], ["page two"]])
    keys = ["a-scan.pdf", "deployment-runbook.pdf"]
    platform.add(*keys)
    result = platform.ingest_batch(keys)
    assert result.success, failure_message(result)
    failed = json.loads(result.dagster_run.tags["docplatform/failed_documents"])
    assert list(failed) == ["a-scan.pdf"] and "2 pages need OCR, over the limit of 1" in failed["a-scan.pdf"]
    assert platform.count("deployment-runbook.pdf") > 0 and platform.count("a-scan.pdf") == 0


@needs_ocr
def test_ocr_pixel_and_time_limits_name_the_document(tmp_path, monkeypatch):
    scan = ff.write_scanned_pdf(tmp_path / "long.pdf", [["first page of the scan"], ["second page of the scan"]])
    monkeypatch.setenv("DOCPLATFORM_OCR_MAX_PIXELS", "1000")
    with pytest.raises(DocumentError, match=r"document 'long.pdf': page 1 has [\d,]+ pixels, over the OCR limit"):
        parse_records("long.pdf", ".pdf", scan.read_bytes())
    monkeypatch.delenv("DOCPLATFORM_OCR_MAX_PIXELS")
    monkeypatch.setenv("DOCPLATFORM_OCR_TIME_LIMIT_S", "0.01")
    with pytest.raises(DocumentError, match=r"document 'long.pdf': OCR stopped after 1/2 pages: over the time limit"):
        parse_records("long.pdf", ".pdf", scan.read_bytes())


def test_an_escaping_symlink_registered_earlier_fails_by_name_not_the_batch(tmp_path):
    from assets.document_reading import read_document

    docs = tmp_path / "docs"
    docs.mkdir()
    (tmp_path / "outside.md").write_text("# Outside\n")
    os.symlink(tmp_path / "outside.md", docs / "link.md")
    with pytest.raises(DocumentError, match="document 'link.md': partition key 'link.md' points outside the documents"):
        read_document(DocumentSource(root=str(docs)), "link.md")
