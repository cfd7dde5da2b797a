"""Zero-shot relation scoring: how well a predicate ('is deployed on', 'pulls data from', 'Owning team') fits each
relation of any ontology, with the packaged sentence-embedding model (MiniLM) and the relation's own words.

A relation is described by its label, its local name split into words, its comment and any kg:phrase hints;
kg:inversePhrase hints and the active form of a passive label ('managed by' -> 'manages') describe the inverse
direction. Nothing here knows about a particular ontology.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from assets.knowledge_graph.embedding import embed
from assets.knowledge_graph.mentions import english_pipeline
from assets.knowledge_graph.schema import extraction_schema
from resources.ontology import Ontology, RelationInfo, humanize
from resources.ontology_loading import load_ontology


def _active_form(label: str) -> str | None:
    """'managed by' -> 'manages'; 'is owned by' -> 'owns': the inverse reading of a passive label."""
    words = label.lower().split()
    if len(words) >= 2 and words[-1] == "by":
        words = [w for w in words[:-1] if w not in ("is", "are", "be", "being", "was")]
        if words:
            lemma = english_pipeline()(f"it is {words[-1]} by them")[2].lemma_.lower()
            words[-1] = lemma + ("es" if lemma.endswith(("s", "sh", "ch", "x")) else "s")
            return " ".join(words)
    return None


def describe(rel: RelationInfo, view) -> "RelationDescription":
    """The schema's phrases of a relation; the active form of a passive label or phrase reads it backwards."""
    named = {rel.label.lower(), humanize(rel.local_name or rel.name), *(p.lower() for p in rel.phrases),
             *(label.lower() for label in rel.labels if label.isascii())}
    inverse = set(view.inverse) | {a for a in map(_active_form, named) if a}
    return RelationDescription(rel, list(view.forward), sorted(inverse))


def is_passive_label(label: str) -> bool:
    return label.lower().split()[-1:] == ["by"]


@dataclass
class RelationDescription:
    relation: RelationInfo
    forward: list[str]
    inverse: list[str]


class RelationScorer:
    """Cosine similarity of a predicate phrase to each relation's forward and inverse descriptions."""

    def __init__(self, ontology: Ontology):
        self.ontology = ontology
        schema = extraction_schema(ontology)
        self.descriptions = {name: describe(rel, schema.relations[name]) for name, rel in ontology.relations.items()}
        self._vectors = {name: (embed(d.forward), embed(d.inverse) if d.inverse else None)
                         for name, d in self.descriptions.items()}
        self.attribute_texts = {name: list(view.texts) for name, view in schema.attributes.items()}
        self._attr_vectors = {name: embed(texts) for name, texts in self.attribute_texts.items()}

    def score(self, predicate: str, relation: str) -> tuple[float, float]:
        """(forward similarity, inverse similarity) of the predicate to the relation."""
        vector = embed([predicate.lower()])[0]
        forward, inverse = self._vectors[relation]
        return float((forward @ vector).max()), float((inverse @ vector).max()) if inverse is not None else 0.0

    def lexical(self, predicate_lemmas: set[str], relation: str) -> tuple[bool, bool]:
        """Whether a content word of the predicate occurs in the relation's forward / inverse descriptions."""
        desc = self.descriptions[relation]
        def words(texts):
            return {w for t in texts for w in t.split() if len(w) > 2 and w not in _STOP}
        return bool(predicate_lemmas & _stems(words(desc.forward))), bool(predicate_lemmas & _stems(words(desc.inverse)))

    def best_attribute(self, text: str, label: str | None, threshold: float = 0.6,
                       or_subclass: bool = False) -> tuple[str | None, float]:
        """The datatype property a header/key names ('Runway length (m)' -> runway_length), domain-checked;
        or_subclass: a property of a subclass of label fits too (a record of an Organization may be an Airline's)."""
        if not self._attr_vectors:
            return None, 0.0
        vector = embed([text.lower()])[0]
        best, best_score = None, 0.0
        for name, vectors in self._attr_vectors.items():
            domain = self.ontology.attributes[name].domain
            if label is not None and not self.ontology.attribute_ok(name, label) and not (
                    or_subclass and domain and self.ontology.is_a(domain, label)):
                continue
            score = float((vectors @ vector).max())
            if score > best_score:
                best, best_score = name, score
        return (best, best_score) if best_score >= threshold else (None, best_score)


_STOP = {"the", "and", "for", "its", "that", "with", "from", "into", "other", "are", "was", "has", "have"}


def _stems(words: set[str]) -> set[str]:
    out = set()
    for word in words:
        out.add(word)
        for suffix in ("ing", "ed", "es", "s"):
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                out.add(word[: -len(suffix)])
                out.add(word[: -len(suffix)] + "e")
    return out


@lru_cache(maxsize=8)
def _scorer(directory: str, fingerprint: str) -> RelationScorer:
    return RelationScorer(load_ontology(directory))


def scorer_for(ontology: Ontology) -> RelationScorer:
    return _scorer(str(ontology.directory), ontology.fingerprint)
