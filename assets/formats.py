"""Per-format parsers beyond md/txt/html/docx/pdf: office formats, OpenDocument, e-mail, e-books, images (OCR).

A table of handlers keyed by file suffix (FORMAT_HANDLERS); assets.parsing.partition_document looks a suffix up
here first. Each handler takes (doc_id, data, kwargs) and returns unstructured elements; parse errors surface as
exceptions that partition_document turns into a DocumentError naming the file. Scanned PDFs and images go
through unstructured's OCR strategy ("ocr_only", Tesseract with Korean + English data) under per-document
limits (pages, pixels, time); which strategy ran and the mean Tesseract word confidence are recorded on
every element's metadata (parse_strategy, ocr_confidence).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sys
import threading
import time

from assets.document_content import DocumentError, check_docx_archive, decode_text, pdf_page_count


# Tesseract language data used for OCR (Debian: tesseract-ocr-eng, tesseract-ocr-kor)
OCR_LANGUAGES = ["eng", "kor"]
# zip containers: refused when not a zip archive, checked for zip/XML bombs before parsing
ZIP_SUFFIXES = {".docx", ".pptx", ".xlsx", ".odt", ".ods", ".odp", ".epub"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
PANDOC_SUFFIXES = {".odt", ".rtf", ".epub"}  # unstructured converts these with pandoc (pypandoc)


def ocr_limits() -> dict:
    """Per-document OCR limits (OCR costs ~3 s per page on 2 cores): over one, the document is reported and skipped.

    Read when a document is parsed: DOCPLATFORM_OCR_MAX_PAGES (20), DOCPLATFORM_OCR_MAX_PIXELS (per page,
    60 MP), DOCPLATFORM_OCR_TIME_LIMIT_S (100 s; the pool's documents.parse_timeout_s still applies on top).
    """
    return {"max_pages": int(os.environ.get("DOCPLATFORM_OCR_MAX_PAGES", "20")),
            "max_pixels": int(float(os.environ.get("DOCPLATFORM_OCR_MAX_PIXELS", str(60_000_000)))),
            "time_limit_s": float(os.environ.get("DOCPLATFORM_OCR_TIME_LIMIT_S", "100"))}


# ------------------------------------------------------------------------------------------ OCR

_CONFIDENCES = threading.local()
_WCONF = re.compile(r"x_wconf (\d+)")


def _install_confidence_agent() -> None:
    """Make unstructured's OCR go through ConfidenceTesseractAgent (its own OCR_AGENT setting + module whitelist)."""
    from unstructured.partition.utils import constants

    if __name__ not in constants.OCR_AGENT_MODULES_WHITELIST:
        constants.OCR_AGENT_MODULES_WHITELIST.append(__name__)
    os.environ["OCR_AGENT"] = f"{__name__}.ConfidenceTesseractAgent"


def _agent_class():
    from unstructured.partition.utils.ocr_models.tesseract_ocr import OCRAgentTesseract

    class ConfidenceTesseractAgent(OCRAgentTesseract):
        """unstructured's Tesseract agent that also keeps each word's confidence (hOCR x_wconf)."""

        def hocr_to_dataframe(self, hocr, character_confidence_threshold=0.0):
            if hocr:
                text = hocr.decode() if isinstance(hocr, bytes) else hocr
                words = getattr(_CONFIDENCES, "words", None)
                if words is not None:
                    words.clear()  # unstructured may OCR a page twice (zoom): keep the last pass
                    words.extend(int(c) for c in _WCONF.findall(text))
            return super().hocr_to_dataframe(hocr, character_confidence_threshold)

        def image_to_data_with_character_confidence_filter(self, image, lang="eng", config="",
                                                           character_confidence_threshold=0.0):
            frame = super().image_to_data_with_character_confidence_filter(image, lang, config,
                                                                           character_confidence_threshold)
            if frame.empty and "--psm" not in config:
                # Tesseract's automatic page segmentation finds no block on some sparse pages (a few short
                # Hangul lines on a blank page); one uniform block of text reads them
                frame = super().image_to_data_with_character_confidence_filter(image, lang, config + " --psm 6",
                                                                               character_confidence_threshold)
            return frame

        def get_text_from_image(self, image) -> str:
            text = super().get_text_from_image(image)
            if not text.strip():
                import numpy as np
                import unstructured_pytesseract

                text = unstructured_pytesseract.image_to_string(np.array(image), lang=self.language, config="--psm 6")
            return text

    return ConfidenceTesseractAgent


def __getattr__(name):  # the agent class is built lazily: importing this module must not import unstructured's OCR
    if name == "ConfidenceTesseractAgent":
        cls = _agent_class()
        globals()[name] = cls
        return cls
    raise AttributeError(name)


def ocr_available() -> str | None:
    """None when OCR can run, else what to install."""
    missing = []
    if not shutil.which("tesseract"):
        missing.append("tesseract-ocr")
    else:
        import subprocess

        langs = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True).stdout.split()
        missing += [f"tesseract-ocr-{lang}" for lang in OCR_LANGUAGES if lang not in langs]
    if not shutil.which("pdftoppm"):
        missing.append("poppler-utils")
    return None if not missing else "OCR needs the Debian packages " + " ".join(missing) + \
        " (apt-get install " + " ".join(missing) + "; `make install` does it as root)"


def _ocr_page_image(image, page_number: int, kwargs: dict) -> tuple[list, list[int]]:
    from unstructured.partition.pdf import _partition_pdf_or_image_with_ocr_from_image

    _install_confidence_agent()
    _CONFIDENCES.words = []
    elements = _partition_pdf_or_image_with_ocr_from_image(
        image, languages=OCR_LANGUAGES, ocr_languages="+".join(OCR_LANGUAGES), page_number=page_number)
    for element in elements:
        element.metadata.filename = kwargs.get("metadata_filename")
    return elements, list(_CONFIDENCES.words)


def _mark(elements: list, strategy: str, confidences: list[int] | None = None, pages: int | None = None) -> list:
    confidence = round(sum(confidences) / len(confidences) / 100, 3) if confidences else None
    for element in elements:
        element.metadata.parse_strategy = strategy
        if confidence is not None:
            element.metadata.ocr_confidence = confidence
        if pages is not None:
            element.metadata.ocr_pages = pages
    return elements


def ocr_images(doc_id: str, images, page_count: int, kwargs: dict) -> list:
    """OCR page images one by one under the document's limits (pages, pixels, time); progress logged per page."""
    problem = ocr_available()
    if problem:
        raise DocumentError(doc_id, f"needs OCR (no text layer), but {problem}")
    limits = ocr_limits()
    if page_count > limits["max_pages"]:
        raise DocumentError(doc_id, f"{page_count} pages need OCR, over the limit of {limits['max_pages']} "
                                    "(DOCPLATFORM_OCR_MAX_PAGES); skipped")
    started, elements, confidences = time.monotonic(), [], []
    for number, image in enumerate(images, 1):
        pixels = image.size[0] * image.size[1]
        if pixels > limits["max_pixels"]:
            raise DocumentError(doc_id, f"page {number} has {pixels:,} pixels, over the OCR limit of "
                                        f"{limits['max_pixels']:,} (DOCPLATFORM_OCR_MAX_PIXELS); skipped")
        page_elements, words = _ocr_page_image(image.convert("RGB"), number, kwargs)
        elements += page_elements
        confidences += words
        elapsed = time.monotonic() - started
        # progress in the run's compute logs (a pool worker's stderr is the run's); OCR is the slow path
        print(f"OCR {doc_id}: page {number}/{page_count} done, {elapsed:.1f} s", file=sys.stderr, flush=True)
        if elapsed > limits["time_limit_s"] and number < page_count:
            raise DocumentError(doc_id, f"OCR stopped after {number}/{page_count} pages: over the time limit of "
                                        f"{limits['time_limit_s']:g} s (DOCPLATFORM_OCR_TIME_LIMIT_S); skipped")
    return _mark(elements, "ocr_only", confidences, page_count)


def _pdf_images(data: bytes, dpi: int = 300):
    """Page images of a PDF, rendered one at a time at 300 dpi (poppler's pdftoppm; at 200 dpi Hangul accuracy halves)."""
    from pdf2image import convert_from_bytes

    pages = pdf_page_count(data)
    for number in range(1, pages + 1):
        yield from convert_from_bytes(data, dpi=dpi, first_page=number, last_page=number)


def partition_pdf_auto(doc_id: str, data: bytes, kwargs: dict) -> list:
    """Text PDFs keep the fast path; a PDF without a text layer falls back to OCR by itself."""
    from unstructured.partition.pdf import partition_pdf

    pages = pdf_page_count(data)
    if pages == 0:
        raise ValueError("the PDF has no readable pages")
    elements = partition_pdf(file=io.BytesIO(data), strategy="fast", **kwargs)
    if any((e.text or "").strip() for e in elements):
        return _mark(elements, "fast")
    return ocr_images(doc_id, _pdf_images(data), pages, kwargs)


def partition_image_ocr(doc_id: str, data: bytes, kwargs: dict) -> list:
    from PIL import Image, ImageSequence

    image = Image.open(io.BytesIO(data))
    image.load()
    frames = getattr(image, "n_frames", 1)  # multi-page TIFF
    return ocr_images(doc_id, (f.copy() for f in ImageSequence.Iterator(image)), frames, kwargs)


# ------------------------------------------------------------------------------------------ office formats

def _zip_checked(doc_id: str, data: bytes) -> None:
    import zipfile

    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise DocumentError(doc_id, "not a valid file of this type (not a zip archive)")
    check_docx_archive(doc_id, data)


def _pptx(doc_id, data, kwargs):
    from unstructured.partition.pptx import partition_pptx

    _zip_checked(doc_id, data)
    return partition_pptx(file=io.BytesIO(data), **kwargs)


def _xlsx(doc_id, data, kwargs):
    from unstructured.partition.xlsx import partition_xlsx

    if data[:2] == b"PK":
        check_docx_archive(doc_id, data)
    # one Table per sheet: the first row is the header the knowledge graph reads column classes from
    return partition_xlsx(file=io.BytesIO(data), find_subtable=False, include_header=True, **kwargs)


def _csv(doc_id, data, kwargs):
    from unstructured.partition.csv import partition_csv

    decode_text(doc_id, data)  # binary junk with a .csv name is refused like text
    return partition_csv(file=io.BytesIO(data), include_header=True, **kwargs)


def _tsv(doc_id, data, kwargs):
    from unstructured.partition.tsv import partition_tsv

    decode_text(doc_id, data)
    return partition_tsv(file=io.BytesIO(data), include_header=True, **kwargs)


def _eml(doc_id, data, kwargs):
    from unstructured.partition.email import partition_email

    import email

    decode_text(doc_id, data)
    headers = email.message_from_bytes(data[:65536])
    if not any(headers.get(h) for h in ("From", "To", "Subject", "Date", "Message-ID")):
        raise DocumentError(doc_id, "not an e-mail message (no From/To/Subject/Date header)")
    # attachments are their own documents ("mail.eml/<attachment name>", resources.documents.mail_attachments)
    return partition_email(file=io.BytesIO(data), process_attachments=False, **kwargs)


def _msg(doc_id, data, kwargs):
    from unstructured.partition.msg import partition_msg

    if not data.startswith(b"\xd0\xcf\x11\xe0"):
        raise DocumentError(doc_id, "not a valid Outlook .msg file (not an OLE compound file)")
    return partition_msg(file=io.BytesIO(data), process_attachments=False, **kwargs)


def _pandoc(doc_id, suffix, data, kwargs):
    import pypandoc

    try:
        pypandoc.get_pandoc_version()
    except OSError as exc:
        raise DocumentError(doc_id, f"{suffix} needs the pandoc program (Debian package pandoc); not found") from exc
    if suffix == ".odt":
        import tempfile

        from unstructured.partition.html import partition_html

        # unstructured's partition_odt converts to .docx, which pandoc 2.x refuses in its sandbox (jgm/pandoc#8128);
        # odt -> html runs sandboxed
        _zip_checked(doc_id, data)
        with tempfile.TemporaryDirectory() as folder:
            source = os.path.join(folder, "document.odt")
            with open(source, "wb") as handle:
                handle.write(data)
            markup = pypandoc.convert_file(source, "html", format="odt", sandbox=True)
        return partition_html(text=markup, **kwargs)
    if suffix == ".rtf":
        from unstructured.partition.rtf import partition_rtf

        if not data.lstrip().startswith(b"{\\rtf"):
            raise DocumentError(doc_id, "not a valid RTF file (missing {\\rtf header)")
        return partition_rtf(file=io.BytesIO(data), **kwargs)
    from unstructured.partition.epub import partition_epub

    _zip_checked(doc_id, data)
    return partition_epub(file=io.BytesIO(data), **kwargs)


def _ods(doc_id, data, kwargs):
    """OpenDocument spreadsheets (unstructured has no partitioner): one Table per sheet via pandas + odfpy."""
    import pandas as pd
    from unstructured.documents.elements import ElementMetadata, Table

    _zip_checked(doc_id, data)
    sheets = pd.read_excel(io.BytesIO(data), engine="odf", sheet_name=None, header=None, dtype=str)
    elements = []
    for number, (name, frame) in enumerate(sheets.items(), 1):
        frame = frame.dropna(how="all").dropna(axis=1, how="all").fillna("")
        if frame.empty:
            continue
        rows = frame.values.tolist()
        markup = "<table>" + "".join("<tr>" + "".join(f"<td>{_escape(c)}</td>" for c in row) + "</tr>" for row in rows) \
            + "</table>"
        text = "\n".join(" ".join(str(c) for c in row if str(c)) for row in rows)
        elements.append(Table(text=text, metadata=ElementMetadata(
            text_as_html=markup, page_number=number, page_name=str(name), filename=kwargs.get("metadata_filename"))))
    return elements


def _escape(value) -> str:
    import html

    return html.escape(str(value))


def _odp(doc_id, data, kwargs):
    """OpenDocument presentations (unstructured has no partitioner): each slide's text frames via odfpy."""
    from odf import draw, opendocument, teletype, text as odf_text
    from unstructured.partition.text import partition_text

    _zip_checked(doc_id, data)
    document = opendocument.load(io.BytesIO(data))
    elements = []
    for number, page in enumerate(document.getElementsByType(draw.Page), 1):
        paragraphs = [teletype.extractText(p).strip() for p in page.getElementsByType(odf_text.P)]
        paragraphs = [p for p in paragraphs if p]
        if paragraphs:
            page_elements = partition_text(text="\n\n".join(paragraphs), **kwargs)
            for element in page_elements:
                element.metadata.page_number = number
            elements += page_elements
    return elements


FORMAT_HANDLERS = {
    ".pptx": _pptx,
    ".xlsx": _xlsx,
    ".xls": _xlsx,
    ".csv": _csv,
    ".tsv": _tsv,
    ".eml": _eml,
    ".msg": _msg,
    ".odt": lambda doc_id, data, kwargs: _pandoc(doc_id, ".odt", data, kwargs),
    ".rtf": lambda doc_id, data, kwargs: _pandoc(doc_id, ".rtf", data, kwargs),
    ".epub": lambda doc_id, data, kwargs: _pandoc(doc_id, ".epub", data, kwargs),
    ".ods": _ods,
    ".odp": _odp,
    ".pdf": partition_pdf_auto,
    **{suffix: partition_image_ocr for suffix in IMAGE_SUFFIXES},
}
