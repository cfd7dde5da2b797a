"""Facts from document structure: tables (markdown, HTML, docx) and key-value blocks ('Host: app-node-3').

A table's header words say what its columns hold: a class ('Hostname', 'Deployed apps', 'Responsible team',
'실행 서버') or a relation ('Administered by', 'Depends on'), or a datatype property ('Port', 'Runway length (m)').
The first column is the row's subject; every other column relates to it through the one relation that the
header names, or that the ontology's domain/range allow between the two column classes. Cells may hold several
values ('payments-api, search-api'); a parenthesis after a name ('invoice-store (MySQL 8)') is not part of it
but may say its class. A key-value block under a heading is a one-row table whose subject is the heading.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser

from assets.knowledge_graph.mentions import IDENT, ClassLexicon
from assets.knowledge_graph.resolve import without_article
from assets.knowledge_graph.scoring import RelationScorer
from assets.knowledge_graph.sentences import normalize_value
from resources.ontology import Ontology

HEADER_RELATION_THRESHOLD = 0.55
# below that, a header names the relation the classes allow if it is clearly better than the others
HEADER_RELATION_CLEAR = 0.4
HEADER_RELATION_MARGIN = 0.1
# '*Leans on* lists hard runtime dependencies', 'Owner: the team that takes the pages': prose defining a header
_DEFINITION_CUE = r"\s*(?:[:=—–]|\s-\s|\b(?:is|are|means|lists|holds|names|gives|shows|says|contains|is for)\b)\s*"
SUBJECT_KEY_RELATION = 0.62  # a first key this close to a relation ('Host') relates the heading, not names the record
KIND_KEYS = {"kind", "type", "category", "class", "role", "종류", "유형"}
NAME_KEYS = {"name", "id", "identifier", "이름"}
_SPLIT = re.compile(r"\s*(?:[,;/、·\n]|\band\b|\s&\s|그리고)\s*")
_KV = re.compile(r"^\s*(?:[-*•]\s*)?(?:\*\*)?([^:：|]{1,40}?)(?:\*\*)?\s*[:：]\s*(.+?)\s*$")


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    text: str  # the element's flattened text, to find its chunk
    subject: str | None = None  # key-value blocks: the heading the block describes
    parts: list[str] = field(default_factory=list)  # the element texts it was read from
    chunk_id: str = ""  # a table chunk (row group with its header, assets/tables.py): the chunk it is


@dataclass
class StructureOutput:
    relations: list[dict] = field(default_factory=list)  # source/target surfaces + labels, type, chunk_id, sentence
    attributes: list[dict] = field(default_factory=list)
    typed_names: list[tuple[str, str, str, str]] = field(default_factory=list)  # (surface, class, evidence, chunk_id)
    names: list[tuple[str, str]] = field(default_factory=list)  # every name a cell/value held: (surface, chunk_id)
    consumed_texts: list[str] = field(default_factory=list)  # element texts the sentence layer should skip


class _TableParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self.header_rows = 0
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._row_is_header = False

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._row, self._row_is_header = [], False
        elif tag in ("td", "th"):
            self._cell = []
            self._row_is_header |= tag == "th"
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(html.unescape("".join(self._cell)).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if any(self._row):
                self.rows.append(self._row)
                if self._row_is_header and len(self.rows) == self.header_rows + 1:
                    self.header_rows += 1
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse_html_table(markup: str) -> tuple[list[str], list[list[str]]]:
    parser = _TableParser()
    parser.feed(markup)
    rows = parser.rows
    if not rows:
        return [], []
    return rows[0], rows[1:]


_DELIMITERS = ("|", "\t", ";")  # cell separators of text exports, most specific first (';' also splits a cell's names)


def row_delimiter(lines: list[str]) -> str | None:
    """The separator that splits every line into the same number (3 or more) of cells: an export pasted as text
    ('ci_name|form|site|support_group', tab- or semicolon-separated) is a table whatever its header says."""
    if len(lines) < 3:
        return None
    for delimiter in _DELIMITERS:
        counts = {line.strip().strip("|").count(delimiter) if delimiter == "|" else line.count(delimiter)
                  for line in lines}
        if len(counts) == 1 and counts.pop() >= 2:
            return delimiter
    return None


def parse_pipe_table(lines: list[str], delimiter: str = "|") -> tuple[list[str], list[list[str]]]:
    rows = []
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split(delimiter)]
        if all(re.fullmatch(r":?-{2,}:?", c) for c in cells if c):
            continue
        rows.append(cells)
    return (rows[0], rows[1:]) if rows else ([], [])


def tables_and_blocks(elements: list[dict] | None, chunks: list[dict]) -> list[Table]:
    """Tables (HTML from unstructured's text_as_html, or pipe tables in text) and key-value blocks."""
    items: list[tuple[str, str, str | None]] = []  # (kind, text, html)
    # tables chunked as row groups (each with its header and HTML) are read from their chunks, in place of the
    # whole-table elements: each row group's facts then point at the chunk that holds its rows
    chunk_tables = [c for c in chunks if c.get("table_html")]
    if elements:
        for element in elements:
            text = element.get("text") or ""
            markup = (element.get("metadata") or {}).get("text_as_html")
            kind = element.get("type", "")
            kind = "Table" if kind == "Table" and markup else kind
            items.append(("ChunkedTable" if kind == "Table" and chunk_tables else kind, text, markup))
        items = _delimited_tables(items)
    else:
        for chunk in chunks:
            items.extend([("ChunkedTable", chunk["text"], None)] if chunk.get("table_html") else _pseudo_elements(chunk["text"]))
    tables: list[Table] = []
    for chunk in chunk_tables:
        header, rows = parse_html_table(chunk["table_html"])
        if header and rows:
            tables.append(Table(header, rows, chunk["text"], parts=[chunk["text"]], chunk_id=chunk["chunk_id"]))
    if elements:
        tables.extend(list_tables(elements))
    heading: list[str | None] = [None]  # the latest heading: the subject of the block right after it
    block: list[tuple[str, str]] = []
    block_text: list[str] = []
    # record lines whose value is a statement ('hardware: dsp-host-1 and dsp-host-2 are managed by Ops'): the
    # sentence layer reads them too
    stated: set[str] = set()
    # a bare key inside a record ('hosts:'): its value is the list items that follow; with none, it heads the
    # next record ('dispatch-db:' over 'host: dsp-host-1')
    list_key: list = [None, [], []]  # key, items, element texts

    def close_list_key() -> bool:
        """Ends a bare key; True when it held items (it was a list value of the open record)."""
        key, values, texts = list_key
        list_key[:] = [None, [], []]
        if key is None:
            return False
        if values:
            block.append((key, ", ".join(values)))
            block_text.extend(texts)
            return True
        close_block()
        heading[0] = key
        return False

    def close_block():
        if block:
            tables.append(Table(header=[k for k, _ in block], rows=[[v for _, v in block]],
                                text="\n".join(block_text), subject=heading[0] or "",
                                parts=[t for t in block_text if t not in stated]))
            heading[0] = None
        block.clear()
        block_text.clear()

    for kind, text, markup in items:
        if kind == "ChunkedTable":
            close_block()
            continue
        if kind in ("Table", "PipeTable", "DelimitedTable"):
            close_block()
            lines = text.splitlines()
            header, rows = (parse_html_table(markup) if kind == "Table" else
                            parse_pipe_table(lines, row_delimiter(lines) or "|") if kind == "DelimitedTable" else
                            parse_pipe_table(lines))
            if header and rows:
                tables.append(Table(header, rows, text, parts=lines if kind == "DelimitedTable" else [text]))
            continue
        lines = [line for line in text.splitlines() if line.strip()]
        bare = _BARE_KEY.match(text) if len(lines) == 1 else None
        if list_key[0] is not None:
            items = [_ITEM.sub("", line).strip() for line in lines]
            if kind == "ListItem" or all(_ITEM.match(line) for line in lines):
                list_key[1].extend(_with_comment_as_note(item) for item in items if item)
                list_key[2].append(text)
                continue
            close_list_key()
        if bare and block and _is_kv(bare.group(1), ""):
            list_key[:] = [bare.group(1).strip(), [], [text]]
            continue
        pairs = [(key, _with_comment_as_note(value)) for key, value in
                 (m.groups() for m in (_KV.match(line) for line in lines) if m and _is_kv(*m.groups()))]
        if pairs and len(pairs) == len(lines):
            # every line is 'key: value' (parsers call some of them titles); a repeated key starts a new record
            for key, value in pairs:
                if any(k.lower() == key.strip().lower() for k, _ in block):
                    close_block()
                block.append((key.strip(), value.strip()))
                if len(value.split()) >= 6:
                    stated.add(text)
            block_text.append(text)
            continue
        close_block()
        if kind == "Title":
            heading[0] = text.strip().strip("#").strip()
    close_list_key()
    close_block()
    return tables


_BARE_KEY = re.compile(r"^\s*(?:\*\*)?([^:：|#]{1,40}?)(?:\*\*)?\s*[:：]\s*$")
_ITEM = re.compile(r"^\s*[-*•]\s+")


def heading_name(heading: str) -> str:
    """The name a heading is about: 'Estmark Airways - company profile' -> 'Estmark Airways', 'payments-api |
    overview' -> 'payments-api'; a heading without such a tail is kept whole ('ADR 017: Move the ledger' names no
    record subject, and stays no name)."""
    parts = re.split(r"\s+[-–—|]\s+", heading.strip(), maxsplit=1)
    if len(parts) == 2 and _looks_like_name(parts[0].strip()) and not _looks_like_name(parts[1].strip()):
        return parts[0].strip()
    return heading


def _with_comment_as_note(value: str) -> str:
    """'dispatch-db   # postgres 16' -> 'dispatch-db (postgres 16)': a trailing comment of a record line is a note
    about the value, read as a parenthesis is; 'C#' and '#42' are not comments."""
    match = re.match(r"^(.*?\S)\s+#\s+(.+)$", value)
    return f"{match.group(1)} ({match.group(2).replace('(', '').replace(')', '')})" if match else value


_EMPTY_CELL = {"-", "—", "n/a", "none"}
_ITEM_TAIL = re.compile(r"^(.{1,60}?)\s+(?:—|–|-{1,2}|:|→)\s+(.{1,60}?(?:\s*[(（][^)）]*[)）])?)$")


def list_tables(elements: list[dict]) -> list[Table]:
    """Nested lists as tables: each item of a list is a row (its name; what follows a dash, 'jvh-app-01 — Hosting
    Squad'; the names of its sub-items), so the ontology's classes choose the relations as for any table. Only
    lists with sub-items or with 'name — name' items are read: a plain bullet list is prose."""
    by_id = {e.get("element_id"): e for e in elements if e.get("element_id")}
    children: dict[str, list[dict]] = {}
    for element in elements:
        parent = (element.get("metadata") or {}).get("parent_id")
        if element.get("type") == "ListItem" and parent in by_id and by_id[parent].get("type") == "ListItem":
            children.setdefault(parent, []).append(element)
    siblings: dict[str | None, list[dict]] = {}
    for element in elements:
        if element.get("type") == "ListItem" and element.get("element_id") in children:
            siblings.setdefault((element.get("metadata") or {}).get("parent_id"), []).append(element)
    tables = []
    for items in siblings.values():
        rows = []
        for item in items:
            text = (item.get("text") or "").strip()
            match = _ITEM_TAIL.match(text)
            name, tail = (match.group(1), match.group(2)) if match else (text, "")
            subs = [(c.get("text") or "").strip().replace(";", ",") for c in children.get(item["element_id"], [])]
            rows.append([name, tail, "; ".join(subs)])
        if rows:
            # the items are read here, not as prose ('jvh-app-01 — Hosting Squad' is no sentence); sub-items are
            # bare names, which prose elsewhere in the chunk may also hold, so they stay
            parts = [(item.get("text") or "") for item in items]
            tables.append(Table(header=["", "", ""], rows=rows, text=(items[0].get("text") or ""), parts=parts))
    return tables


def _is_kv(key: str, value: str) -> bool:
    """'Host: app-node-3', 'Owning team: Payments Platform' — not '[10:02] mina: anyone know ...' or prose."""
    key = key.strip()
    return (bool(re.fullmatch(r"[\w\s\-/&().]+", key)) and len(key.split()) <= 4 and not re.search(r"\d", key)
            and len(value.split()) <= 12)


def _delimited_tables(items: list[tuple[str, str, str | None]]) -> list[tuple[str, str, str | None]]:
    """Runs of one-line pieces that one separator splits alike (a CMDB export pasted as text, which parsers cut
    into titles and paragraphs line by line) joined into one delimited table."""
    def one_line(item) -> bool:
        kind, text, _ = item
        return kind not in ("Table", "ChunkedTable", "PipeTable") and bool(text.strip()) and "\n" not in text.strip()

    out: list[tuple[str, str, str | None]] = []
    i = 0
    while i < len(items):
        lines = [text for _, text, _ in items[i:i + 3]] if all(one_line(x) for x in items[i:i + 3]) else []
        delimiter = row_delimiter(lines)
        if delimiter is None:
            out.append(items[i])
            i += 1
            continue
        j = i + 3
        while j < len(items) and one_line(items[j]) and row_delimiter(lines + [items[j][1]]) == delimiter:
            lines.append(items[j][1])
            j += 1
        # a header names columns in a few words each: a longer first line ('columns: host | support_group (team
        # accountable for it) | ...') describes the table and stays prose
        if any(len(cell.split()) > 4 for cell in lines[0].split(delimiter)) and len(lines) > 3:
            out.append(items[i])
            i += 1
            continue
        out.append(("DelimitedTable", "\n".join(lines), None))
        i = j
    return out


def _pseudo_elements(text: str) -> list[tuple[str, str, None]]:
    """Element-like pieces of plain chunk text: '#' headings, pipe tables, key-value lines, paragraphs."""
    out, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("|") and line.count("|") >= 2:
            block = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append(lines[i])
                i += 1
            out.append(("PipeTable", "\n".join(block), None))
            continue
        if line.strip().startswith("#"):
            out.append(("Title", line.strip().lstrip("#").strip(), None))
        elif line.strip():
            out.append(("ListItem" if _KV.match(line) else "NarrativeText", line, None))
        i += 1
    return out


def clean_cell_value(value: str) -> tuple[str, str]:
    """('invoice-store', 'MySQL 8') from 'invoice-store (MySQL 8)'; markdown emphasis, code and links removed."""
    value = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", value)
    value = value.replace("`", "").replace("**", "").strip()
    note = ""
    match = re.match(r"^(.*?)\s*[(（]([^)）]*)[)）]\s*$", value)
    if match and match.group(1):
        value, note = match.group(1).strip(), match.group(2).strip()
    value = without_article(value)
    return value.strip(" .:-—"), note


# a cell that says its row held once or does not hold yet ('DECOMMISSIONED 2024-03-18', '(historic) yard
# planner', 'ORDERED', 'planned'): the row's relations are not facts of today
NOT_NOW_STATES = ("decommissioned", "retired", "historic", "former", "removed", "deprecated", "ordered", "planned",
                  "proposed", "requested", "pending", "not approved", "cancelled", "canceled", "폐기", "철거", "예정",
                  "중단", "이전 완료")


def not_now_cell(cell: str) -> bool:
    words = cell.strip().lower().lstrip("([~*_ ").replace("~~", "")
    return any(words.startswith(state) for state in NOT_NOW_STATES)


def repeats_few_values(values: list[str]) -> bool:
    """Six or more values, each distinct one repeated three times on average: a category (site, env, status)."""
    return len(values) >= 6 and len(Counter(v.lower() for v in values)) <= len(values) / 3


def split_values(cell: str) -> list[str]:
    """Several names in one cell: commas, semicolons, slashes, 'and', line breaks (not inside parentheses); a
    crossed-out value ('~~jvh-app-03~~ (moved off)') is dropped with its note."""
    cell = re.sub(r"~~.+?~~(\s*[(（][^)）]*[)）])?", "", cell)
    # separators inside parentheses belong to the note ('srv-yard-02 (active/active)', '(MySQL 8, replica)')
    marks = {",": "\0", ";": "\1", "/": "\2", "、": "\3", "·": "\4"}
    protected = re.sub(r"\(([^)]*)\)", lambda m: "(" + "".join(marks.get(c, c) for c in m.group(1)) + ")", cell)
    back = {v: k for k, v in marks.items()}
    parts = ["".join(back.get(c, c) for c in p) for p in _SPLIT.split(protected)]
    return [p for p in (x.strip() for x in parts) if p and p.lower() not in _EMPTY_CELL
            and not re.match(r"(none|not yet|n/a)\b", p.lower())]


def header_definitions(headers: set[str], prose: str) -> dict[str, str]:
    """header -> the words the prose defines it with ('Column meanings: *Where it lives* is the VM or box the
    service is deployed to; ...' gives 'the VM or box the service is deployed to'), for headers of 2+ letters."""
    out = {}
    prose = re.sub(r"(?<!\n)\n(?!\n)", " ", prose)  # a definition wrapped over lines is one sentence
    for header in headers:
        if len(header.strip()) < 2 or not prose:
            continue
        quoted = r"[*_`\"'“‘]*"
        match = re.search(rf"(?<![\w]){quoted}{re.escape(header.strip())}{quoted}{_DEFINITION_CUE}([^;.\n]{{3,160}})",
                          prose, flags=re.IGNORECASE)
        if match:
            out[header] = match.group(1).strip(" *_`\"'”’")
            continue
        # 'columns: ci_name | support_group (team accountable for the CI) | ...': a gloss in parentheses
        # only where the line lists the table's other columns too: "본원 시스템(results notifier, ...)" in a remark
        # gives examples of a word, not the column's meaning
        for match in re.finditer(rf"(?<![\w]){quoted}{re.escape(header.strip())}{quoted}\s*[(（]([^)）\n]{{3,160}})[)）]",
                                 prose, flags=re.IGNORECASE):
            line = prose[max(prose.rfind("\n", 0, match.start()), prose.rfind(". ", 0, match.start())) + 1:match.start()]
            if any(other.strip() and other != header and other.strip().lower() in line.lower() for other in headers):
                out[header] = match.group(1).strip()
                break
    return out


# cell values that say nothing is there; a few more say nothing is named ('yes', 'tbd', 'various')
_NOT_A_NAME = _EMPTY_CELL | {"na", "tbd", "unknown", "yes", "no", "?", "todo", "various", "all", "see below"}


def _cell_name(text: str) -> bool:
    """A table cell in a column that relates rows names a thing by the place it holds, capitalized or not
    ('bed board', 'order router'): a few words, no sentence punctuation."""
    if re.fullmatch(r"\d{1,4}(?:[.,]\d+)?", text):
        return False  # '1961', '8443', '2.5': a value, not a name
    if _looks_like_name(text):
        return True
    return (0 < len(text) <= 40 and len(text.split()) <= 4 and text.lower() not in _NOT_A_NAME
            and bool(re.fullmatch(r"[\w][\w\s\-./&'+]*", text)) and not text.endswith("."))


def _looks_like_name(text: str) -> bool:
    if not text or len(text) > 60 or len(text.split()) > 6 or ":" in text:
        return False
    if IDENT.fullmatch(text) or re.search(r"[A-Z0-9\uac00-\ud7a3]", text[:1]):
        return True
    return bool(re.search(r"\d", text))


class StructureExtractor:
    def __init__(self, ontology: Ontology, lexicon: ClassLexicon, scorer: RelationScorer, type_of):
        self.ontology = ontology
        self.lexicon = lexicon
        self.scorer = scorer
        self.type_of = type_of  # surface -> class id or None (evidence found elsewhere in the document)
        self.glossary: dict[str, str] = {}  # header -> what the document's prose says the column holds
        self.category_keys: set[str] = set()  # record keys that name a category of the records (extract)

    def header_class(self, header: str) -> str | None:
        found = self._phrase_class(header)
        definition = self.glossary.get(header)
        if found is None and definition:
            # 'the VM or box the service is deployed to': the definition's first class word is what the column holds
            words = definition.split()
            found = next((c for i in range(1, len(words) + 1) if (c := self._phrase_class(" ".join(words[:i]))))
                         , None)
        return found

    def _phrase_class(self, phrase: str) -> str | None:
        classes = {c for c in self.lexicon.classes_for_phrase(phrase) if c not in self.lexicon.abstract_roots()}
        if not classes:
            return None
        return max(classes, key=lambda c: (self.ontology.specificity(c), c))

    def header_relation(self, header: str, key_class: str | None, column_class: str | None):
        """(relation, key_is_source, score) that a header names ('Administered by', 'Depends on'), type-checked:
        a header read forward ('Depends on') makes the row's subject the source, an inverse one ('Hosts') the target."""
        candidates = self.header_relations(header, key_class, column_class)
        return candidates[0] if candidates else None

    def header_relations(self, header: str, key_class: str | None, column_class: str | None,
                         cell_labels: tuple[str, ...] = ()) -> list[tuple]:
        """Every relation the classes allow, as (relation, key_is_source, score), best first; the header's
        definition in the document's prose ('*Leans on* lists hard runtime dependencies') is read with it.
        cell_labels: the classes of the column's typed cells, when its class was read from them: a relation most
        of them cannot stand in is not what the column holds."""
        definition = self.glossary.get(header)
        found = []
        for name, rel in self.ontology.relations.items():
            # an unnamed column (a list's sub-items) is related by the classes alone
            forward, inverse = self.scorer.score(header, name) if header.strip() else (0.0, 0.0)
            if definition:
                defined_forward, defined_inverse = self.scorer.score(definition, name)
                forward, inverse = max(forward, defined_forward), max(inverse, defined_inverse)
            orientations = [key_is_source for key_is_source in (True, False)
                            if self._orientation_ok(rel, key_is_source, key_class, column_class, cell_labels)]
            if not orientations:
                continue
            preferred = forward >= inverse
            key_is_source = preferred if preferred in orientations else orientations[0]
            found.append((name, key_is_source, max(forward, inverse)))
        return sorted(found, key=lambda c: -c[2])

    def _may_be(self, label: str | None, allowed: tuple[str, ...]) -> bool:
        """A column class may stand where allowed is expected: unknown, a subclass, or a more general class that a
        column of mixed names was given (a column of databases and unknown names holds software, maybe all
        databases)."""
        return (label is None or self.ontology.fits(label, allowed)
                or any(self.ontology.is_a(a, label) for a in allowed))

    def _orientation_ok(self, rel, key_is_source: bool, key_class: str | None, column_class: str | None,
                        cell_labels: tuple[str, ...] = ()) -> bool:
        """Whether rows may relate to their column cells through rel, the row's subject as source (or target);
        a relation most of the column's typed cells cannot stand in is not what the column holds."""
        src, tgt = (key_class, column_class) if key_is_source else (column_class, key_class)
        column_side = rel.ranges if key_is_source else rel.domains
        if cell_labels and 2 * sum(self.ontology.fits(l, column_side) for l in cell_labels) < len(cell_labels):
            return False
        return self._may_be(src, rel.domains) and self._may_be(tgt, rel.ranges)

    def fitting_relations(self, key_class: str, column_class: str,
                          cell_labels: tuple[str, ...] = ()) -> list[tuple[str, bool]]:
        return [(name, key_is_source) for name, rel in self.ontology.relations.items() for key_is_source in (True, False)
                if self._orientation_ok(rel, key_is_source, key_class, column_class, cell_labels)]

    def column_class_from_cells(self, values: list[str]) -> str | None:
        """The most specific class every typed cell belongs to; when some cells are untyped, one level more general
        (a column with two databases and five unknown names holds software, not databases)."""
        values = [v for v in values if _looks_like_name(v)]
        labels = [l for l in (self.type_of(v) for v in values) if l]
        if not labels:
            return None
        common = [c for c in self.ontology.classes[labels[0]].ancestors if all(self.ontology.is_a(l, c) for l in labels)]
        roots = self.lexicon.abstract_roots()
        if len(labels) < len(values) and len(common) > 1 and common[1] not in roots:
            common = common[1:]
        common = [c for c in common if c not in roots]
        return common[0] if common else None

    def extract(self, tables: list[Table], chunk_for, prose: str = "") -> StructureOutput:
        """Facts of every table and block; prose: the document's text outside them, where headers may be defined."""
        out = StructureOutput()
        self.glossary = header_definitions({h for t in tables for h in t.header}, prose)
        # a table chunked into row groups is one table: its columns' classes come from all of its rows
        rows_by_header: dict[tuple[str, ...], list[list[str]]] = {}
        for table in tables:
            if table.subject is None:
                rows_by_header.setdefault(tuple(table.header), []).extend(table.rows)
        # record keys whose values over all the document's records repeat a few ('site: yeongdo' in each host's)
        record_values: dict[str, list[str]] = {}
        for table in tables:
            if table.subject is not None and table.rows:
                for key, value in zip(table.header, table.rows[0]):
                    record_values.setdefault(key.strip().lower(), []).extend(split_values(value))
        self.category_keys = {key for key, values in record_values.items() if repeats_few_values(values)}
        for table in tables:
            chunk_id = table.chunk_id or chunk_for(table.text)
            out.consumed_texts.append(table.text)
            if table.subject is not None:
                self._block(table, chunk_id, out)
            else:
                self._table(table, chunk_id, out, class_rows=rows_by_header[tuple(table.header)])
        return out

    # ------------------------------------------------------------------ tables
    def _table(self, table: Table, chunk_id: str, out: StructureOutput, key_class: str | None = None,
               class_rows: list[list[str]] | None = None) -> None:
        """Relations and attributes of every row; key_class: the subject class when the caller knows it;
        class_rows: the rows the column classes are read from (the whole table when this is one row group)."""
        width = len(table.header)

        def cells_of(table_rows):
            padded = [r + [""] * (width - len(r)) for r in table_rows]
            return padded, [[[clean_cell_value(v) for v in split_values(r[j])] for r in padded] for j in range(width)]

        rows, cells = cells_of(table.rows)
        class_cells = cells_of(class_rows)[1] if class_rows else cells
        # a 'Kind'/'Type' column says each row's class in a class word ('application', 'database'): it types the
        # row's subject and relates nothing
        kind_columns = {j for j, h in enumerate(table.header) if j and h.strip().lower() in KIND_KEYS}
        for j in kind_columns:
            for row_index, row in enumerate(rows):
                cls = self.header_class(row[j]) if row[j].strip() else None
                for subject, _ in cells[0][row_index] if cls else ():
                    if _cell_name(subject):
                        self._typed(out, subject, cls, "table", "", chunk_id)
        classes = []
        for j, header in enumerate(table.header):
            if j == 0 and key_class is not None:
                classes.append((key_class, "table"))
                continue
            cls = self.header_class(header)
            evidence = "header"
            if cls is None:
                cls, evidence = self.column_class_from_cells([v for row in class_cells[j] for v, _ in row]), "relation"
            classes.append((cls, evidence))
        key_class = classes[0][0]

        def prose_column(j: int) -> bool:
            """A remarks column ('migrated from jvh-app-04 in May 2026'): many of its cells are phrases, not names."""
            values = [v for row in class_cells[j] for v, _ in row]
            return bool(values) and 3 * sum(len(v.split()) >= 4 for v in values) >= len(values)

        def column_reading(j: int, subject_class: str | None):
            """(attribute, None) or (None, (relation, key_is_source, score)) or (None, None) for column j."""
            column_class, evidence = classes[j]
            if subject_class is not None and column_class is None:
                attribute, _ = self.scorer.best_attribute(table.header[j], subject_class, or_subclass=True)
                if attribute:
                    return attribute, None
            if prose_column(j):
                return None, None
            cell_labels = ()
            if evidence == "relation":
                names = [v for row in class_cells[j] for v, _ in row if _looks_like_name(v)]
                typed = [(name, label) for name, label in zip(names, map(self.type_of, names)) if label]
                cell_labels = tuple(label for _, label in typed)
                guessed = getattr(self.type_of, "guessed", None)
                if typed and guessed is not None and all(guessed(name) for name, _ in typed):
                    # the cells' classes are only guesses (NER's ORG for 'Havell H-340'): the header says more
                    return None, self._column_relation(table.header[j], subject_class, None)
            return None, self._column_relation(table.header[j], subject_class, column_class, cell_labels)

        def category_column(j: int) -> bool:
            """A column that repeats one of a few values in most rows (site, environment, status): a category
            of the rows, never the source of one relation to many of them."""
            if len(rows) == 1:  # one record: its key's values in the document's other records
                repeated = table.header[j].strip().lower() in self.category_keys
            else:
                repeated = repeats_few_values([v for row in class_cells[j] for v, _ in row])
            return repeated and classes[j][1] != "header"

        readings = {j: (None, None) if j in kind_columns else column_reading(j, key_class) for j in range(1, width)}
        if key_class is None:
            # rows of unknown class: the columns read with confidence say what they are ('Needs at runtime' and
            # 'Who to call' relate software), and the other columns are read again with that class
            implied = [self.ontology.relations[c[0]].domain if c[1] else self.ontology.relations[c[0]].range
                       for _, c in readings.values() if c is not None and c[2] >= HEADER_RELATION_CLEAR]
            implied = [c for c in implied if c]
            specific = max(implied, key=lambda c: self.ontology.specificity(c), default=None)
            if specific and all(self.ontology.is_a(specific, c) for c in implied):
                key_class = specific
                readings.update({j: column_reading(j, key_class) for j, (a, c) in readings.items()
                                 if a is None and (c is None or c[2] < HEADER_RELATION_THRESHOLD)})
        for j, (attribute, choice) in list(readings.items()):
            if choice is not None and not choice[1] and choice[2] < HEADER_RELATION_THRESHOLD and category_column(j):
                readings[j] = (None, None)
        rows_not_now = {i for i, row in enumerate(rows) if any(not_now_cell(cell) for cell in row[1:])}
        for j in range(1, width):
            header = table.header[j]
            column_class, evidence = classes[j]
            attribute, choice = readings[j]
            if attribute:
                domain = self.ontology.attributes[attribute].domain
                # a property of a subclass says which one the row is ('Founded' of an Organization: an Airline)
                holder = domain if domain and key_class and self.ontology.is_a(domain, key_class) else key_class
                for row_index, row in enumerate(rows):
                    subjects = [v for v, _ in cells[0][row_index] if _cell_name(v)]
                    value = normalize_value(row[j], self.ontology.attributes[attribute].value_kind)
                    for subject in subjects:
                        if value:
                            out.attributes.append({"entity": subject, "entity_label": holder, "property": attribute,
                                                   "value": value, "chunk_id": chunk_id,
                                                   "sentence": " | ".join(row), "layer": "structure"})
                continue
            if choice is None:
                continue
            rel, key_is_source, score = choice
            info = self.ontology.relations[rel]
            key_allowed, col_allowed = (info.domains, info.ranges) if key_is_source else (info.ranges, info.domains)
            key_cls = key_class if key_class and self.ontology.fits(key_class, key_allowed) else None
            col_cls = column_class if column_class and self.ontology.fits(column_class, col_allowed) else None
            key_cls = key_cls or (info.domain if key_is_source else info.range) or None
            col_cls = col_cls or (info.range if key_is_source else info.domain) or None
            for row_index, row in enumerate(rows):
                subjects = [(v, n) for v, n in cells[0][row_index] if _cell_name(v)]
                objects = [(v, n) for v, n in cells[j][row_index] if _cell_name(v)]
                if row_index in rows_not_now:
                    objects = []  # the row's names are still typed; its relations held once, not now
                for subject, note in subjects:
                    self._typed(out, subject, key_cls, classes[0][1] if key_class else "relation", note, chunk_id)
                    for obj, obj_note in objects:
                        self._typed(out, obj, col_cls, evidence if column_class else "relation", obj_note, chunk_id)
                        source, target = (subject, obj) if key_is_source else (obj, subject)
                        out.relations.append({
                            "source": source, "source_label": key_cls if key_is_source else col_cls,
                            "target": target, "target_label": col_cls if key_is_source else key_cls,
                            "type": rel, "chunk_id": chunk_id, "layer": "structure", "score": round(score, 3),
                            "sentence": " | ".join(f"{h}: {c}" for h, c in zip(table.header, row))})

    def _column_relation(self, header: str, key_class: str | None, column_class: str | None,
                         cell_labels: tuple[str, ...] = ()):
        candidates = self.header_relations(header, key_class, column_class, cell_labels)
        named = candidates[0] if candidates else None
        if named and named[2] >= HEADER_RELATION_THRESHOLD:
            return named
        if not header.strip() and column_class and len(candidates) == 1:
            return named[0], named[1], 0.5  # an unnamed column whose cells can stand in one relation only
        if named and (key_class or column_class) and named[2] >= HEADER_RELATION_CLEAR and (
                len(candidates) == 1 or named[2] - candidates[1][2] >= HEADER_RELATION_MARGIN):
            return named  # an unusual header ('Where it lives') that still names one relation clearly best
        if key_class is None or column_class is None:
            return None
        fitting = self.fitting_relations(key_class, column_class, cell_labels)
        if len(fitting) == 1:
            return fitting[0][0], fitting[0][1], 0.5
        if len(fitting) > 1 and named and named[2] >= 0.3:
            for rel, key_is_source in fitting:
                if rel == named[0]:
                    return rel, key_is_source, named[2]
        return None

    def _typed(self, out: StructureOutput, surface: str, cls: str | None, evidence: str, note: str, chunk_id: str):
        out.names.append((surface, chunk_id))
        if cls:
            out.typed_names.append((surface, cls, evidence, chunk_id))
        for note_cls in self.lexicon.classes_for_phrase(note) if note else ():
            out.typed_names.append((surface, note_cls, "keyword", chunk_id))

    # ------------------------------------------------------------------ key-value blocks
    def _block(self, table: Table, chunk_id: str, out: StructureOutput) -> None:
        """A key-value record: its subject is the value of a first 'name'/class key ('service: Route Planner',
        'Host: bx-01'), else the heading right above it; 'Kind: application' types the subject."""
        pairs = list(zip(table.header, table.rows[0]))
        subject, subject_class = clean_cell_value(heading_name(table.subject or ""))[0], None
        keyed = False  # the subject is the value of a name or class key: a name by its place ('service: dispatch API')
        first_key, first_value = pairs[0]
        named = self.header_relation(first_key, None, None)
        # 'Host: bx-01' under the heading 'payments-api' relates the heading to a host; 'service: Route Planner'
        # (or any class key when there is no heading) names the record itself
        relational = named is not None and named[2] >= SUBJECT_KEY_RELATION and _looks_like_name(subject)
        if first_key.strip().lower() in NAME_KEYS or (
                self.header_class(first_key) and not relational and len(split_values(first_value)) == 1):
            subject, subject_class = clean_cell_value(first_value)[0], self.header_class(first_key)
            pairs = pairs[1:]
            keyed = True
        remaining = []
        for key, value in pairs:
            if key.strip().lower() in KIND_KEYS:
                subject_class = self.header_class(value) or subject_class
            else:
                remaining.append((key, value))
        if not (_looks_like_name(subject) or keyed and _cell_name(subject)):
            return
        subject_class = subject_class or self.type_of(subject)
        if subject_class:
            out.typed_names.append((subject, subject_class, "table", chunk_id))
        out.names.append((subject, chunk_id))
        synthetic = Table(header=[table.subject or "name", *[k for k, _ in remaining]],
                          rows=[[subject, *[v for _, v in remaining]]], text=table.text)
        if remaining:
            self._table(synthetic, chunk_id, out, key_class=subject_class)
