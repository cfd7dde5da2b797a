"""Tables kept as tables through chunking: row groups with the header repeated, never split mid-row.

unstructured gives table elements (xlsx, csv, docx, html, ods...) their structure as metadata.text_as_html.
chunk_by_title would cut a long table's text anywhere; instead each table becomes chunks of whole rows that fit
the chunk size and the embedder's token window, each starting with the header row, carrying its rows as HTML
(table_html) so the knowledge-graph stage reads them as a table. The chunk text is a pipe table (readable to
BM25, the embedder and the graph stage's pipe-table reader alike).
"""

from __future__ import annotations

import html


def table_rows(markup: str) -> list[list[str]]:
    """Rows of cell texts of an HTML table (lxml, which unstructured already uses)."""
    import lxml.html

    try:
        root = lxml.html.fromstring(markup)
    except Exception:  # noqa: BLE001  (empty or broken markup: no structure to keep)
        return []
    rows = []
    for tr in root.iter("tr"):
        cells = [" ".join(cell.text_content().split()) for cell in tr if cell.tag in ("td", "th")]
        if any(cells):
            rows.append(cells)
    return rows


def _pipe_line(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


def table_text(header: list[str], rows: list[list[str]]) -> str:
    lines = [_pipe_line(header), "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + [_pipe_line(r) for r in rows])


def table_html(header: list[str], rows: list[list[str]]) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def table_chunks(markup: str, max_characters: int, max_tokens: int, tokenizer) -> list[dict]:
    """[{text, table_html, rows}] row groups of one table, each with the header row first.

    A group holds as many whole rows as fit max_characters and max_tokens (header included); a single row
    larger than that alone is its own group (the token-window split after this may then cut it).
    """
    rows = table_rows(markup)
    if not rows:
        return []
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    header, body = rows[0], rows[1:]
    if not body:
        return [{"text": table_text(header, []), "table_html": table_html(header, []), "rows": 0}]
    lines = [table_text(header, [])] + [_pipe_line(r) for r in body]
    # attention_mask: the packaged tokenizer pads (and truncates) to 128 tokens
    tokens = [sum(e.attention_mask) for e in tokenizer.encode_batch(lines, add_special_tokens=False)]
    budget_tokens = max(8, max_tokens - 2)
    groups, current, chars, used = [], [], len(lines[0]), tokens[0]
    for row, line, count in zip(body, lines[1:], tokens[1:]):
        if current and (chars + 1 + len(line) > max_characters or used + count > budget_tokens):
            groups.append(current)
            current, chars, used = [], len(lines[0]), tokens[0]
        current.append(row)
        chars += 1 + len(line)
        used += count
    if current:
        groups.append(current)
    return [{"text": table_text(header, group), "table_html": table_html(header, group), "rows": len(group)}
            for group in groups]
