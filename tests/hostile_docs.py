"""Hostile documents for tests: built on the fly, small on disk, expensive for a naive parser."""

from __future__ import annotations

import zlib
from pathlib import Path

from tests.docfactory import one_page_pdf


def spinning_pdf(path: Path, operations: int = 3_000_000) -> Path:
    """A valid one-page PDF whose Flate-compressed content stream (a few KB) inflates to millions of text
    operators: pdfminer interprets them one by one for minutes."""
    stream = zlib.compress(b"BT /F1 11 Tf 56 700 Td " + b"(x) Tj 1 0 Td " * operations + b"ET", 9)
    path.write_bytes(one_page_pdf(b"<< /Length %d /Filter /FlateDecode >>" % len(stream), stream))
    return path


def billion_laughs(levels: int = 9, fanout: int = 10, root: str = "html") -> bytes:
    """The classic XML entity expansion: a few hundred bytes that expand to fanout**levels copies of 'lol'."""
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{"".join(f"&lol{i - 1};" for _ in range(fanout))}">' for i in range(1, levels + 1)]
    body = f"<body><p>Intro text.</p><p>&lol{levels};</p></body>" if root == "html" else f"<doc>&lol{levels};</doc>"
    return (f'<?xml version="1.0"?>\n<!DOCTYPE {root} [\n' + "\n".join(entities) + f"\n]>\n<{root}>{body}</{root}>").encode()


def deeply_nested(depth: int = 100_000, tag: str = "div") -> bytes:
    return (f"<html><body><p>Shallow text.</p>" + f"<{tag}>" * depth + "deep text" + f"</{tag}>" * depth
            + "</body></html>").encode()
