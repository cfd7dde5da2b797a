"""Builds real documents of each supported type for tests (and for the bundled sample corpus)."""

from __future__ import annotations

from pathlib import Path


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def write_pdf(path: Path, paragraphs: list[str]) -> Path:
    """A minimal, valid one-page PDF with Helvetica text lines (one line per paragraph)."""
    lines = []
    y = 760
    for para in paragraphs:
        lines.append(f"BT /F1 11 Tf 56 {y} Td ({_pdf_escape(para)}) Tj ET")
        y -= 22
    stream = "\n".join(lines).encode("latin-1")
    path.write_bytes(one_page_pdf(b"<< /Length %d >>" % len(stream), stream))
    return path


def one_page_pdf(stream_dict: bytes, stream: bytes) -> bytes:
    """The bytes of a one-page Helvetica PDF whose page content is stream (stream_dict: its dictionary)."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        stream_dict + b"\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def write_docx(path: Path, title: str, paragraphs: list[str]) -> Path:
    import docx

    document = docx.Document()
    document.add_heading(title, level=1)
    for para in paragraphs:
        document.add_paragraph(para)
    document.save(str(path))
    return path
