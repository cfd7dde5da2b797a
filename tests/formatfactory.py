"""Real files of the office, OpenDocument, e-mail, e-book and scanned formats, generated for tests and bench/formats."""

from __future__ import annotations

import io
from email.message import EmailMessage
from pathlib import Path

FONT_DIRS = [Path("/usr/share/fonts/truetype/nanum"), Path("/usr/share/fonts/truetype/dejavu")]
KOREAN_FONT = "NanumGothic.ttf"  # Debian fonts-nanum
LATIN_FONT = "DejaVuSans.ttf"  # Debian fonts-dejavu-core


def font_path(name: str) -> Path | None:
    for folder in FONT_DIRS:
        if (folder / name).is_file():
            return folder / name
    return None


def write_pptx(path: Path, slides: list[tuple[str, list[str]]]) -> Path:
    from pptx import Presentation

    deck = Presentation()
    for title, bullets in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        body = slide.placeholders[1].text_frame
        body.text = bullets[0]
        for bullet in bullets[1:]:
            body.add_paragraph().text = bullet
    deck.save(str(path))
    return path


def write_xlsx(path: Path, rows: list[list[str]], sheet: str = "Inventory") -> Path:
    from openpyxl import Workbook

    book = Workbook()
    book.active.title = sheet
    for row in rows:
        book.active.append(row)
    book.save(str(path))
    return path


def write_xls(path: Path, rows: list[list[str]], sheet: str = "Inventory") -> Path:
    """A legacy Excel 97-2003 workbook (BIFF8 in an OLE compound file), written by xlwt."""
    import xlwt

    book = xlwt.Workbook()
    table = book.add_sheet(sheet)
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.write(r, c, value)
    book.save(str(path))
    return path


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


def write_eml(path: Path, subject: str, body: str, attachments: list[tuple[str, bytes, str]]) -> Path:
    """attachments: (file name, bytes, MIME type 'application/pdf')."""
    message = EmailMessage()
    message["From"] = "mina@example.com"
    message["To"] = "ops@example.com"
    message["Subject"] = subject
    message.set_content(body)
    for name, data, mime in attachments:
        maintype, subtype = mime.split("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    path.write_bytes(message.as_bytes())
    return path


# MAPI property types and tags ([MS-OXCDATA] 2.11.1, [MS-OXPROPS]) of the few properties a minimal .msg carries
_PT_LONG, _PT_UNICODE, _PT_BINARY = 0x0003, 0x001F, 0x0102
_PR_MESSAGE_CLASS, _PR_SUBJECT, _PR_BODY, _PR_STORE_SUPPORT_MASK = 0x001A, 0x0037, 0x1000, 0x340D
_PR_ATTACH_NUM, _PR_ATTACH_DATA_BIN, _PR_ATTACH_FILENAME, _PR_ATTACH_METHOD = 0x0E21, 0x3701, 0x3704, 0x3705
_PR_ATTACH_LONG_FILENAME, _STORE_UNICODE_OK, _ATTACH_BY_VALUE = 0x3707, 0x00040000, 1


def _msg_properties(header: bytes, props: list[tuple[int, int, int | bytes]]) -> tuple[bytes, dict[str, bytes]]:
    """A '__properties_version1.0' stream ([MS-OXMSG] 2.4) and the '__substg1.0_*' streams of its variable-size
    properties: fixed-size values sit in the 16-byte entry, the others in their own stream (the entry holds the size)."""
    import struct

    entries, streams = [header], {}
    for pid, ptype, value in props:
        tag = struct.pack("<HH", ptype, pid)
        if isinstance(value, int):
            entries.append(tag + struct.pack("<IIi", 0x6, value, 0))  # flags: readable | writable
        else:
            size = len(value) + (2 if ptype == _PT_UNICODE else 0)  # a string's size counts its terminator
            entries.append(tag + struct.pack("<III", 0x6, size, 0))
            streams[f"__substg1.0_{pid:04X}{ptype:04X}"] = value
    return b"".join(entries), streams


def write_msg(path: Path, subject: str, body: str, attachments: list[tuple[str, bytes]]) -> Path:
    """A minimal real Outlook .msg ([MS-OXMSG]: an MS-CFB compound file of MAPI property streams): IPM.Note with a
    Unicode subject and plain-text body, and each attachment (file name, bytes) attached by value. Written with
    extract-msg's own OLE writer; read back by extract-msg and by python-oxmsg (unstructured's partition_msg)."""
    import struct

    from extract_msg import OleWriter

    def text(value: str) -> bytes:
        return value.encode("utf-16-le")

    writer = OleWriter()
    # top-level message header: 8 reserved, next recipient id, next attachment id, recipient count, attachment
    # count, 8 reserved
    header = struct.pack("<8xIIII8x", 0, len(attachments), 0, len(attachments))
    properties, streams = _msg_properties(header, [
        (_PR_MESSAGE_CLASS, _PT_UNICODE, text("IPM.Note")), (_PR_SUBJECT, _PT_UNICODE, text(subject)),
        (_PR_BODY, _PT_UNICODE, text(body)), (_PR_STORE_SUPPORT_MASK, _PT_LONG, _STORE_UNICODE_OK)])
    writer.addEntry("__nameid_version1.0", storage=True)
    for name in ("__substg1.0_00020102", "__substg1.0_00030102", "__substg1.0_00040102"):
        writer.addEntry(f"__nameid_version1.0/{name}", b"")  # the (empty) named-property map
    writer.addEntry("__properties_version1.0", properties)
    for name, data in streams.items():
        writer.addEntry(name, data)
    for number, (filename, data) in enumerate(attachments):
        folder = f"__attach_version1.0_#{number:08X}"
        writer.addEntry(folder, storage=True)
        properties, streams = _msg_properties(b"\x00" * 8, [  # an attachment's header: 8 reserved bytes
            (_PR_ATTACH_NUM, _PT_LONG, number), (_PR_ATTACH_DATA_BIN, _PT_BINARY, data),
            (_PR_ATTACH_FILENAME, _PT_UNICODE, text(filename)), (_PR_ATTACH_METHOD, _PT_LONG, _ATTACH_BY_VALUE),
            (_PR_ATTACH_LONG_FILENAME, _PT_UNICODE, text(filename))])
        writer.addEntry(f"{folder}/__properties_version1.0", properties)
        for name, value in streams.items():
            writer.addEntry(f"{folder}/{name}", value)
    writer.write(str(path))
    return path


def _odf_save(document, path: Path) -> Path:
    document.save(str(path))
    return path


def write_odt(path: Path, title: str, paragraphs: list[str]) -> Path:
    from odf.opendocument import OpenDocumentText
    from odf.text import H, P

    document = OpenDocumentText()
    document.text.addElement(H(outlinelevel=1, text=title))
    for para in paragraphs:
        document.text.addElement(P(text=para))
    return _odf_save(document, path)


def write_ods(path: Path, rows: list[list[str]]) -> Path:
    from odf.opendocument import OpenDocumentSpreadsheet
    from odf.table import Table, TableCell, TableRow
    from odf.text import P

    document = OpenDocumentSpreadsheet()
    table = Table(name="Services")
    for row in rows:
        tr = TableRow()
        for value in row:
            cell = TableCell(valuetype="string")
            cell.addElement(P(text=value))
            tr.addElement(cell)
        table.addElement(tr)
    document.spreadsheet.addElement(table)
    return _odf_save(document, path)


def write_odp(path: Path, slides: list[list[str]]) -> Path:
    from odf.draw import Frame, Page, TextBox
    from odf.opendocument import OpenDocumentPresentation
    from odf.style import MasterPage, PageLayout
    from odf.text import P

    document = OpenDocumentPresentation()
    layout = PageLayout(name="layout")
    document.automaticstyles.addElement(layout)
    master = MasterPage(name="master", pagelayoutname=layout)
    document.masterstyles.addElement(master)
    for number, lines in enumerate(slides, 1):
        page = Page(name=f"slide{number}", masterpagename=master)
        frame = Frame(width="20cm", height="10cm", x="1cm", y="1cm")
        box = TextBox()
        for line in lines:
            box.addElement(P(text=line))
        frame.addElement(box)
        page.addElement(frame)
        document.presentation.addElement(page)
    return _odf_save(document, path)


def write_rtf(path: Path, paragraphs: list[str]) -> Path:
    body = "".join(r"{\pard " + p.replace("\\", "\\\\").replace("{", "\\{").replace("}", "\\}") + r"\par}" + "\n"
                   for p in paragraphs)
    path.write_text(r"{\rtf1\ansi\deff0{\fonttbl{\f0 Helvetica;}}" + "\n" + body + "}", encoding="ascii")
    return path


def write_epub(path: Path, title: str, paragraphs: list[str]) -> Path:
    import pypandoc

    markdown = f"# {title}\n\n" + "\n\n".join(paragraphs)
    pypandoc.convert_text(markdown, "epub", format="md", outputfile=str(path),
                          extra_args=["--metadata", f"title={title}"])
    return path


def render_page(lines: list[str], font: str = LATIN_FONT, size: int = 28, width: int = 1654):
    """A white page (A4 at 200 dpi) with the lines drawn in black: what a scanner produces, minus the noise."""
    from PIL import Image, ImageDraw, ImageFont

    path = font_path(font)
    if path is None:
        raise FileNotFoundError(f"font {font} not found (Debian: fonts-nanum / fonts-dejavu-core)")
    face = ImageFont.truetype(str(path), size)
    height = max(2339, 200 + len(lines) * int(size * 1.8))
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    y = 150
    for line in lines:
        draw.text((120, y), line, font=face, fill=0)
        y += int(size * 1.8)
    return image


def write_scanned_pdf(path: Path, pages: list[list[str]], font: str = LATIN_FONT) -> Path:
    """An image-only PDF (no text layer): each page rendered to an image, then saved as a PDF page."""
    images = [render_page(lines, font) for lines in pages]
    images[0].save(str(path), format="PDF", resolution=200.0, save_all=True, append_images=images[1:])
    return path


def write_image(path: Path, lines: list[str], font: str = LATIN_FONT) -> Path:
    render_page(lines, font).save(str(path))
    return path


def pdf_bytes_of_image(image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PDF", resolution=200.0)
    return out.getvalue()
