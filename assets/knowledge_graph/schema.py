"""One extraction view of an ontology, built once per ontology and read by every layer.

The English lexicon (mentions.py), the relation scorer (scoring.py), the Korean layer (korean.py) and the examples
layer each used to walk the ontology themselves, collecting class words, relation descriptions and known names in
slightly different ways. Here they are collected once: classes with their words in every language, relations
with the texts that describe them (forward and inverse), literal properties with theirs, known individuals, and the
user's labeled examples. Each layer still embeds the texts with its own encoder (MiniLM for English, multilingual
e5 for Korean), because their thresholds are calibrated on those encoders.

    from assets.knowledge_graph.schema import extraction_schema
    schema = extraction_schema(ontology)
    schema.classes["Server"].words, schema.relations["RUNS_ON"].forward, schema.known[0].forms
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from resources.ontology import Ontology, humanize
from resources.ontology_examples import ExampleSet, load_examples

HANGUL = re.compile(r"[\uac00-\ud7a3]")


def split_local_name(local_name: str) -> str:
    """'dependsOn' -> 'depends on', 'RUNS_ON' -> 'runs on' (the words a local name is made of)."""
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", local_name or "")
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", text)
    return " ".join(w.lower() for w in re.split(r"[^A-Za-z0-9]+", text) if w)


def _unique(texts) -> tuple[str, ...]:
    return tuple(dict.fromkeys(t.strip() for t in texts if t and t.strip()))


@dataclass(frozen=True)
class ClassView:
    id: str
    keywords: tuple[str, ...]  # lower-case words that name the class in running text (the loader's keywords)
    words: tuple[str, ...]  # every word for the class in any language: labels, keywords, headwords, local name
    plural_keywords: tuple[str, ...]  # English plurals of the keywords ("hosts")
    description: str  # "label: comment", what a zero-shot encoder compares with


@dataclass(frozen=True)
class RelationView:
    id: str
    forward: tuple[str, ...]  # English phrases that state the relation subject -> object
    inverse: tuple[str, ...]  # phrases the ontology gives for object -> subject (kg:inversePhrase)
    texts: tuple[str, ...]  # every text about the relation in any language (labels, comment, phrases, inverse)


@dataclass(frozen=True)
class AttributeView:
    id: str
    texts: tuple[str, ...]


@dataclass(frozen=True)
class KnownView:
    label: str
    name: str
    forms: tuple[str, ...]  # the name and its aliases


@dataclass(frozen=True)
class ExtractionSchema:
    ontology: Ontology
    classes: dict[str, ClassView]
    relations: dict[str, RelationView]
    attributes: dict[str, AttributeView]
    known: tuple[KnownView, ...]
    # (source class, target class) -> the one relation named after the target's class that fits both ('country')
    class_named: dict[tuple[str, str], str]

    @property
    def examples(self) -> ExampleSet:
        """The user's labeled examples (examples.jsonl beside the ontology; re-read when the file changes)."""
        return load_examples(self.ontology)


def describe_relation(rel) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(forward, inverse) phrases: label, local-name words, kg:phrase hints, ASCII labels and the comment's verb
    phrases forward; kg:inversePhrase hints inverse (the English scorer adds the active form of passive labels)."""
    forward = {rel.label.lower(), humanize(rel.local_name or rel.name)}
    forward |= {p.lower() for p in rel.phrases}
    forward |= {label.lower() for label in rel.labels if label.isascii()}
    inverse = {p.lower() for p in rel.inverse_phrases}
    if rel.comment:
        comment = rel.comment.lower().rstrip(".")
        forward.add(comment)
        # 'The software needs, calls, queries or stores its data in the other software': each verb phrase
        for piece in re.split(r",|;|\bor\b|\band\b", comment):
            words = [w for w in piece.split() if w not in ("the", "a", "an", "its", "their")]
            if 0 < len(words) <= 4:
                forward.add(" ".join(words))
    return tuple(sorted(t for t in forward if t)), tuple(sorted(t for t in inverse if t))


def build_schema(ontology: Ontology) -> ExtractionSchema:
    classes = {}
    for class_id, info in ontology.classes.items():
        words = _unique(w.lower() for w in (info.label, *info.labels, *info.keywords, *info.headwords,
                                             split_local_name(info.local_name or class_id)))
        plurals = tuple(k + "s" for k in info.keywords if not HANGUL.search(k) and not k.endswith("s"))
        classes[class_id] = ClassView(class_id, tuple(info.keywords), words, plurals,
                                      f"{info.label}: {info.comment}" if info.comment else info.label)
    relations = {}
    for rel_id, info in ontology.relations.items():
        forward, inverse = describe_relation(info)
        texts = _unique([info.label, *info.labels, info.comment, split_local_name(info.local_name or rel_id),
                         *info.phrases, *info.inverse_phrases])
        relations[rel_id] = RelationView(rel_id, forward, inverse, texts)
    attributes = {name: AttributeView(name, tuple(sorted({a.label.lower(), humanize(a.local_name or name),
                                                          *(label.lower() for label in a.labels),
                                                          *(p.lower() for p in a.phrases)})))
                  for name, a in ontology.attributes.items()}
    known = tuple(KnownView(k.label, k.name, (k.name, *k.aliases)) for k in ontology.known_entities)
    return ExtractionSchema(ontology, classes, relations, attributes, known, class_named_relations(ontology))


def squash_name(text: str | None) -> str:
    """A name as letters and digits only, lower case: 'youthclub' for 'youth club', 'youthClub' and 'YOUTH_CLUB'."""
    return re.sub(r"[^0-9a-z]", "", (text or "").lower())


def class_named_relations(ontology: Ontology) -> dict[tuple[str, str], str]:
    """(source class, target class) -> the one relation named after the target's class (or a class above it) whose
    domain and range take them: 'country' (City -> Country), 'club' (Athlete -> Club). Such a relation means 'the
    source's <class>', so the clause that states a sibling relation between the two states it too."""
    named: dict[str, list[str]] = {}
    for rel_id, info in ontology.relations.items():
        for class_id in ontology.classes:
            if squash_name(class_id) and squash_name(class_id) in (squash_name(info.label),
                                                                squash_name(info.local_name or rel_id)):
                named.setdefault(class_id, []).append(rel_id)
    index = {}
    for target in ontology.classes:
        candidates = [rel_id for class_id, rel_ids in named.items() if ontology.is_a(target, class_id)
                      for rel_id in rel_ids]
        for source in ontology.classes if candidates else ():
            fitting = [rel_id for rel_id in candidates if ontology.domain_range_ok(rel_id, source, target)]
            if len(fitting) == 1:
                index[(source, target)] = fitting[0]
    return index


_SCHEMAS: dict[tuple[str, str], ExtractionSchema] = {}
_LOCK = threading.Lock()


def extraction_schema(ontology: Ontology) -> ExtractionSchema:
    """The view of this ontology (built on first use, then shared by every layer and chunk)."""
    key = (str(ontology.directory), ontology.fingerprint)
    with _LOCK:
        schema = _SCHEMAS.get(key)
        if schema is None:
            if len(_SCHEMAS) > 8:
                _SCHEMAS.clear()
            schema = _SCHEMAS[key] = build_schema(ontology)
        return schema


__all__ = ["AttributeView", "ClassView", "ExtractionSchema", "KnownView", "RelationView", "build_schema",
           "class_named_relations", "describe_relation", "extraction_schema", "split_local_name", "squash_name"]
