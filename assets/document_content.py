"""What parsing (assets.parsing) and the per-format handlers (assets.formats) share: the per-document error and
the checks on a document's raw bytes (text decoding, .docx zip/XML bombs, PDF page count).

A module of its own so that neither of the two imports the other for them.
"""

import io
import zipfile

from dagster import Failure

TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".text", ".html", ".htm"}
# a .docx whose parts inflate past this (or by more than the ratio) is refused as a zip bomb
MAX_DOCX_UNCOMPRESSED = 256 * 1024 * 1024
MAX_DOCX_RATIO = 200


class DocumentError(Failure):
    """A problem with one document's content: reported clearly, stops only that document."""

    def __init__(self, doc_id: str, problem: str):
        super().__init__(description=f"document {doc_id!r}: {problem}", metadata={"doc_id": doc_id, "problem": problem})


def decode_text(doc_id: str, data: bytes) -> str:
    """Text of a text-like document, refusing binary junk that merely carries a text suffix."""
    if b"\x00" in data[:65536]:
        raise DocumentError(doc_id, "looks like binary data (NUL bytes), not text")
    encoding_problem = ""
    for encoding in ("utf-8-sig", "utf-16") if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ("utf-8-sig",):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:  # EUC-KR/CP949 and other legacy encodings (resources/text_encoding.py), or a clear refusal
        from resources.text_encoding import decode_non_utf8

        text, _, encoding_problem = decode_non_utf8(data)
    sample = text[:65536]
    control = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\n\r\t\f") + sample.count("\ufffd")
    if sample and control / len(sample) > 0.05:
        raise DocumentError(doc_id, f"looks like binary data ({control} control characters in {len(sample)}), not text")
    if encoding_problem:
        raise DocumentError(doc_id, encoding_problem)
    return text


def check_docx_archive(doc_id: str, data: bytes) -> None:
    """Refuse zip bombs (huge or extreme inflation) and XML entity declarations (billion laughs) before parsing."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise DocumentError(doc_id, f"not a valid .docx file ({exc})") from exc
    with archive:
        infos = archive.infolist()
        total = sum(i.file_size for i in infos)
        packed = max(1, sum(i.compress_size for i in infos))
        if total > MAX_DOCX_UNCOMPRESSED or total / packed > MAX_DOCX_RATIO:
            raise DocumentError(doc_id, f"refused as a zip bomb: {total:,} bytes uncompressed from {packed:,}")
        for info in infos:
            if info.filename.endswith((".xml", ".rels")):
                with archive.open(info) as handle:
                    head = handle.read(1 << 16)
                if b"<!ENTITY" in head or b"<!DOCTYPE" in head:
                    raise DocumentError(doc_id, f"refused: {info.filename} declares XML entities/DOCTYPE (possible XML bomb)")


def pdf_page_count(data: bytes) -> int:
    from pdfminer.pdfdocument import PDFDocument
    from pdfminer.pdfpage import PDFPage
    from pdfminer.pdfparser import PDFParser

    document = PDFDocument(PDFParser(io.BytesIO(data)))
    return sum(1 for _ in PDFPage.create_pages(document))
