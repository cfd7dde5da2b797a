"""Regenerate infra/docs/04-application-register.docx (python-docx), so the binary's content is reviewable here.

Run: python bench/kg_data/make_docx.py  (the generated file is committed; rerun only after editing ROWS)."""

import datetime
from pathlib import Path

import docx

TARGET = Path(__file__).resolve().parent / "infra" / "docs" / "04-application-register.docx"
HEADER = ("Application", "Server", "Team", "Backing store")
ROWS = (
    ("Shipment Tracker", "srv-web-11", "Customer Experience Team", "shipment-db"),
    ("Manifest API", "srv-web-12", "Customer Experience Team", "shipment-db"),
    ("Invoice Generator", "srv-bill-01", "Billing Team", "billing-db"),
    ("Fuel Card Reconciler", "srv-bill-01", "Payments Team", "ledger-db"),
    ("Telemetry Collector", "srv-ts-01", "Data Engineering", "telemetry-db"),
    ("Driver App Backend", "srv-mob-01", "Mobile Team", "driver-db"),
)


def build(target: Path = TARGET) -> Path:
    """Write the application register: a heading, an intro paragraph and one table."""
    document = docx.Document()
    document.core_properties.author = "Larkspur Freight architecture guild"
    document.core_properties.created = datetime.datetime(2026, 10, 1)
    document.add_heading("Application register (Q4 2026)", level=1)
    document.add_paragraph(
        "The register lists every customer-facing or finance application, the server it is deployed on, "
        "the owning team and the datastore it reads from and writes to. Review it every quarter.")
    table = document.add_table(rows=1, cols=len(HEADER))
    table.style = "Table Grid"
    for cell, text in zip(table.rows[0].cells, HEADER):
        cell.text = text
    for row in ROWS:
        for cell, text in zip(table.add_row().cells, row):
            cell.text = text
    document.add_paragraph("Changes to this register go through the architecture guild's weekly review.")
    target.parent.mkdir(parents=True, exist_ok=True)
    document.save(str(target))
    return target


if __name__ == "__main__":
    print(build())
