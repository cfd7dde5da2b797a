"""A user's labeled examples for their ontology: an optional `examples.jsonl` in the ontology folder.

One JSON object a line: {"text": "...", "triples": [["subject", "relation", "object"], ...]}, where relation is the
property's local name or any of its labels (any case, any naming style) and object a name or a literal value.
Extraction layers learn from them (relation prototypes, entity typing, few-shot prompts, an extraction adapter);
nothing here is written for a particular ontology.

A malformed line (bad JSON, unknown relation, a subject that its text does not contain) is reported by line number
and skipped, never fatal: the remaining examples still teach.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from resources.ontology import Ontology, humanize

EXAMPLES_FILE = "examples.jsonl"


@dataclass(frozen=True)
class LabeledTriple:
    subject: str
    predicate: str  # relation identifier (RUNS_ON) or attribute identifier (runway_length)
    object: str
    kind: str  # "relation" | "attribute"


@dataclass(frozen=True)
class LabeledExample:
    text: str
    triples: tuple[LabeledTriple, ...]
    line: int


@dataclass
class ExampleSet:
    path: Path | None
    examples: list[LabeledExample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "examples.jsonl line 7: ..." per skipped line or triple
    fingerprint: str = ""  # sha256 of the file ("" when there is none): caches and re-extraction follow edits

    def __bool__(self) -> bool:
        return bool(self.examples)

    @property
    def triple_count(self) -> int:
        return sum(len(e.triples) for e in self.examples)


def _key(text: str) -> str:
    """Letters and digits, lower-cased, accents folded: 'birthPlace', 'birth place', 'BIRTH_PLACE' -> 'birthplace'."""
    folded = unicodedata.normalize("NFKC", str(text)).lower()
    return re.sub(r"[\W_]+", "", folded)


def loose(text: str) -> str:
    """A name as it reads in running text: accents folded, punctuation and underscores as spaces, lower-cased
    ('U.S. Città_di Palermo' -> 'u s citta di palermo'); Hangul is kept whole."""
    decomposed = unicodedata.normalize("NFKD", str(text))
    folded = unicodedata.normalize("NFC", "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn"))
    return " ".join(re.sub(r"[\W_]+", " ", folded.lower()).split())


def predicate_index(ontology: Ontology) -> dict[str, tuple[str, str]]:
    """Every way a user may write a property -> (identifier, kind): identifier, local name, each label."""
    index: dict[str, tuple[str, str]] = {}
    for kind, table in (("attribute", ontology.attributes), ("relation", ontology.relations)):
        for ident, info in table.items():
            for form in (ident, info.local_name, info.label, humanize(info.local_name or ident), *info.labels):
                if form:
                    index.setdefault(_key(form), (ident, kind))
    return index


def contains_name(text: str, name: str) -> bool:
    """Whether text names `name` (see loose(); the part before a comma or a parenthesis is enough: 'Regina,
    Saskatchewan' is named by 'Regina'; 'US' and 'U.S.' read alike)."""
    haystack = f" {loose(text)} "
    compact = haystack.replace(" ", "")
    for candidate in (name, re.split(r"[,(]", str(name))[0]):
        needle = loose(candidate)
        if not needle:
            continue
        # Korean particles attach to the name ("손흥민은"): after Hangul no word boundary is needed
        tail = "" if re.match(r"[\uac00-\ud7a3]", needle[-1]) else " "
        if f" {needle}{tail}" in haystack or (len(needle) > 3 and needle.replace(" ", "") in compact):
            return True
    return False


def parse_examples(path: Path, ontology: Ontology) -> ExampleSet:
    out = ExampleSet(path=path)
    data = path.read_bytes()
    out.fingerprint = hashlib.sha256(data).hexdigest()
    index = predicate_index(ontology)
    for number, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        where = f"{path.name} line {number}"
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            out.problems.append(f"{where}: not JSON ({exc.msg} at column {exc.colno}); skipped")
            continue
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
            out.problems.append(f"{where}: needs an object with a non-empty \"text\"; skipped")
            continue
        triples_in = row.get("triples")
        if not isinstance(triples_in, list):
            out.problems.append(f"{where}: \"triples\" must be a list of [subject, relation, object]; skipped")
            continue
        triples = []
        for position, triple in enumerate(triples_in, start=1):
            what = f"{where}, triple {position}"
            if not (isinstance(triple, (list, tuple)) and len(triple) == 3 and all(isinstance(t, (str, int, float))
                                                                                 for t in triple)):
                out.problems.append(f"{what}: not [subject, relation, object]; skipped")
                continue
            subject, relation, obj = (str(t).strip() for t in triple)
            resolved = index.get(_key(relation))
            if resolved is None:
                out.problems.append(f"{what}: relation {relation!r} is not a property of the ontology; skipped")
                continue
            if not contains_name(row["text"], subject):
                out.problems.append(f"{what}: subject {subject!r} does not occur in the text; skipped")
                continue
            if not obj:
                out.problems.append(f"{what}: empty object; skipped")
                continue
            ident, kind = resolved
            triples.append(LabeledTriple(subject.replace("_", " "), ident, obj.replace("_", " ") if kind == "relation"
                                         else obj, kind))
        out.examples.append(LabeledExample(text=row["text"], triples=tuple(triples), line=number))
    return out


def load_examples(ontology: Ontology) -> ExampleSet:
    """The examples beside the ontology's files (an empty set when there is no examples.jsonl)."""
    path = Path(ontology.directory) / EXAMPLES_FILE
    if not path.is_file():
        return ExampleSet(path=None)
    stat = path.stat()
    cached = _EXAMPLES.get((str(path), stat.st_mtime_ns, stat.st_size, ontology.fingerprint))
    if cached is None:
        cached = parse_examples(path, ontology)
        if len(_EXAMPLES) > 16:
            _EXAMPLES.clear()
        _EXAMPLES[(str(path), stat.st_mtime_ns, stat.st_size, ontology.fingerprint)] = cached
    return cached


_EXAMPLES: dict[tuple, ExampleSet] = {}
