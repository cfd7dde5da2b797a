"""Mentions for the examples layer: names, numbers, dates and pronouns in one parsed English sentence (spaCy entities,
noun chunks, proper-noun runs, the examples' own names), and literal values in the shape the examples write them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from assets.knowledge_graph.mentions import doc_original
from resources.ontology_examples import loose


PRONOUNS = {"he", "she", "his", "her", "him", "they", "their", "them", "it", "its", "hers", "theirs"}
NER_KIND = {"PERSON": "person", "GPE": "place", "LOC": "place", "FAC": "place", "ORG": "organization",
            "NORP": "group", "DATE": "date", "TIME": "date", "CARDINAL": "number", "QUANTITY": "number",
            "MONEY": "number", "PERCENT": "number", "ORDINAL": "number", "WORK_OF_ART": "work", "EVENT": "event",
            "PRODUCT": "product", "LANGUAGE": "language", "LAW": "work"}
LITERAL_KINDS = {"number", "date", "year"}
_NUMBER = re.compile(r"[-+−]?\d[\d,]*(?:\.\d+)?")
_YEAR = re.compile(r"\b(1[0-9]{3}|2[0-9]{3})\b")
_LEADING = re.compile(r"^(?:the|a|an)\s+", re.IGNORECASE)
_TRAILING = re.compile(r"(?:'s|’s|')$")


@dataclass
class Span:
    start: int  # character offsets in the chunk's text
    end: int
    text: str
    kind: str  # the coarse kind word that stands for the mention in a pair context
    pronoun: bool = False
    referent: "Span | None" = None

    @property
    def literal(self) -> bool:
        return self.kind in LITERAL_KINDS

    @property
    def name(self) -> str:
        return self.referent.text if self.pronoun and self.referent else self.text

    @property
    def role_kind(self) -> str:
        """The kind the mention stands for: a linked pronoun's referent's."""
        return self.referent.kind if self.pronoun and self.referent else self.kind

    def overlaps(self, other: "Span") -> bool:
        return self.start < other.end and other.start < self.end


# ---------------------------------------------------------------------------------------------- mentions
def _clean(text: str, start: int, end: int) -> tuple[int, int]:
    """Trim articles, possessive endings and punctuation off a span."""
    piece = text[start:end]
    lead = _LEADING.match(piece)
    if lead and lead.end() < len(piece):
        start += lead.end()
    piece = text[start:end]
    trail = _TRAILING.search(piece)
    if trail and trail.start() > 0:
        end = start + trail.start()
    while end > start and text[end - 1] in " ,;:.!?)\"'":
        if text[end - 1] == "." and re.search(r"\.\w+\.$", text[start:end]):
            break  # 'F.C.', 'U.S.': the period belongs to the abbreviation
        end -= 1
    while start < end and text[start] in " ,;:(\"'":
        start += 1
    return start, end


def _kind_of_literal(text: str) -> str | None:
    if _YEAR.fullmatch(text.strip()):
        return "year"
    if _NUMBER.search(text) and not re.search(r"[A-Za-z]{4,}", re.sub(r"\b(?:" + _month_words() + r")\b", "", text,
                                                                      flags=re.IGNORECASE)):
        return "number"
    return None


def _looks_literal(piece: str) -> bool:
    """A number with at most lower-case unit words ('5.6kg', '1.905 metres', '-7'), not a name with digits."""
    if not _NUMBER.search(piece):
        return False
    rest = _NUMBER.sub(" ", piece)
    rest = re.sub(r"\b(?:" + _month_words() + r")\b", " ", rest, flags=re.IGNORECASE)
    return not re.search(r"[A-Z]|\w*\d\w*[A-Za-z]|[A-Za-z]\w*\d", rest)


def _month_words() -> str:
    return ("january|february|march|april|may|june|july|august|september|october|november|december|"
            "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec")


def find_spans(doc, start_char: int, end_char: int, gazetteer: "NameGazetteer | None") -> list[Span]:
    """Mentions in one sentence of a parsed chunk: known names, named entities, proper-noun phrases, numbers and
    dates, pronouns. Overlapping alternatives are all kept: the scorer decides which reading links."""
    text = doc_original(doc)
    spans: dict[tuple[int, int], Span] = {}

    def add(start: int, end: int, kind: str, pronoun: bool = False, from_gazetteer: bool = False) -> None:
        start, end = _clean(text, start, end)
        if end - start < 1 or (end - start < 2 and not text[start:end].isdigit()):
            return
        key = (start, end)
        if key in spans:
            return
        piece = text[start:end]
        if not from_gazetteer and kind != "date" and _looks_literal(piece):
            kind = "year" if _YEAR.fullmatch(piece) else "date" if _iso_date(piece) else "number"
        elif not from_gazetteer and kind in LITERAL_KINDS and not _looks_literal(piece) and kind != "date":
            kind = "thing"  # '1036 Ganymed', '(19255) 1994 VK8': a name that starts with digits
        spans[key] = Span(start, end, text[start:end], kind, pronoun)

    if gazetteer is not None:
        for start, end, kind in gazetteer.find(text, start_char, end_char):
            add(start, end, kind, from_gazetteer=True)
    sent = doc.char_span(start_char, end_char, alignment_mode="expand")
    if sent is None:
        return []
    for ent in doc.ents:
        if ent.start_char < start_char or ent.end_char > end_char:
            continue
        kind = NER_KIND.get(ent.label_, "thing")
        if kind in ("date", "number"):
            kind = _kind_of_literal(ent.text) or kind
        add(ent.start_char, ent.end_char, kind)
    for chunk in doc.noun_chunks:
        if chunk.start_char < start_char or chunk.end_char > end_char:
            continue
        tokens = [t for t in chunk if t.dep_ not in ("det", "poss", "case") and not t.is_punct]
        if not tokens or any(t.dep_ == "cc" for t in chunk):
            continue  # "X and Y": the conjuncts are mentions, the coordination is not
        if any(t.pos_ == "PROPN" or (t.text[:1].isupper() and t.i > sent.start) for t in tokens):
            kind = "thing"
            first = tokens[0]
            # "Aaron Hunt's club": the possessor and the possessed are two mentions
            owners = [t for t in chunk if t.dep_ == "poss" or t.tag_ == "POS"]
            if owners:
                cut = max(t.i for t in owners)
                tail = [t for t in tokens if t.i > cut]
                if tail:
                    first = tail[0]
                    tokens = tail
            add(first.idx, tokens[-1].idx + len(tokens[-1].text), kind)
    for token in sent:
        low = token.text.lower()
        if low in PRONOUNS and token.pos_ in ("PRON", "DET"):
            add(token.idx, token.idx + len(token.text), "pronoun", pronoun=True)
        elif token.like_num and not any(s.start <= token.idx < s.end for s in spans.values()):
            add(token.idx, token.idx + len(token.text), _kind_of_literal(token.text) or "number")
    # a proper-noun run the chunker split ("SV Werder Bremen II"): maximal PROPN sequences
    run: list = []
    for token in list(sent) + [None]:
        if token is not None and (token.pos_ == "PROPN" or (run and token.like_num and token.text.isalnum())):
            run.append(token)
            continue
        if run:
            add(run[0].idx, run[-1].idx + len(run[-1].text), "thing")
        run = []
    out = sorted(spans.values(), key=lambda s: (s.start, -s.end))
    return out


def _link_pronouns(spans: list[Span], paragraph_first: Span | None) -> None:
    """A pronoun stands for the first name of its paragraph (the paragraph's topic): 'Aaron Hunt ... his club'."""
    for span in spans:
        if span.pronoun:
            span.referent = paragraph_first


class NameGazetteer:
    """The names the examples use (subjects and objects), found whole-word and case-insensitively in new text —
    lower-case and multi-word names too — with the kind the examples' contexts gave them."""

    def __init__(self, names: dict[str, str]):
        self.kinds = {loose(n): k for n, k in names.items() if len(loose(n)) >= 3}
        forms = sorted({n for n in names if len(loose(n)) >= 3}, key=lambda n: (-len(n), n))
        self.pattern = re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(n) for n in forms) + r")(?![\w-])",
                                  re.IGNORECASE) if forms else None

    def find(self, text: str, start: int, end: int):
        if self.pattern is None:
            return
        for match in self.pattern.finditer(text, start, end):
            yield match.start(), match.end(), self.kinds.get(loose(match.group(0)), "thing")


def _iso_date(text: str) -> str | None:
    """'30 May 1996' -> '1996-05-30' when the text gives day, month and year; None otherwise."""
    if not (_YEAR.search(text) and (re.search(_month_words(), text, re.IGNORECASE) or re.search(r"\d+[-/.]\d+[-/.]\d+",
                                                                                                text))):
        return None
    try:
        from dateutil import parser as date_parser

        return date_parser.parse(text, fuzzy=True, default=None).date().isoformat()
    except (ValueError, OverflowError, TypeError, AttributeError):
        return None


def value_shape(value: str) -> str:
    """How a labeled literal is written: 'iso-date', 'year', 'decimal', 'integer' or 'text'."""
    value = value.strip().strip('"')
    head = re.split(r"\s*\(", value)[0]
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", head):
        return "iso-date"
    if _YEAR.fullmatch(head):
        return "year"
    if re.fullmatch(r"[-+]?\d+\.\d+", head):
        return "decimal"
    if re.fullmatch(r"[-+]?\d+", head):
        return "integer"
    return "text"


def literal_value(span: Span, kind: str, shape: str = "") -> str:
    """A literal as stored: a number without its unit, a year, an ISO date where the text gives one — in the
    shape the user's examples write that property's values ('374976' -> '374976.0' when they write decimals)."""
    text = span.text
    if shape == "iso-date" and _iso_date(text):
        return _iso_date(text)
    if shape == "decimal":
        found = _NUMBER.search(text)
        if found:
            number = found.group(0).replace(",", "").replace("−", "-")
            return number if "." in number else number + ".0"
    if shape == "year":
        kind = "year"
    if kind == "year":
        found = _YEAR.search(text)
        return found.group(1) if found else text
    if kind == "date":
        return _iso_date(text) or text
    if kind == "number":
        found = _NUMBER.search(text)
        return found.group(0).replace(",", "").replace("−", "-") if found else text
    return text
