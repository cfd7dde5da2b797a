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
