"""What the Korean layer needs from one ontology: class words (exact or cross-lingual by e5), relation texts and
their embeddings scored against a bank of generic verbs, known names; built once per ontology content."""

from __future__ import annotations

import re
import threading

import numpy as np

from assets.knowledge_graph.korean_models import EMBEDDINGS
from assets.knowledge_graph.schema import extraction_schema
from resources.ontology import Ontology, normalize_name


# A Hangul noun with no exact label match is a class word when its e5 cosine to one of the class's non-Korean words
# reaches this, with this margin over the next class. Translations (서버/server 0.945, 팀/team 0.939, 공항/airport)
# score 0.90-0.96, unrelated nouns 0.83-0.88; on the English-only infrastructure ontology 12 of 14 Korean class
# words are found and 1 of 16 common nouns is wrongly taken (데이터 -> Database, 0.906); aviation: 0 of 40.
CLASS_WORD_MIN_COSINE = 0.90
CLASS_WORD_MIN_MARGIN = 0.015

_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
# Calibration bank: generic verbs unrelated to any particular domain, in the same role frame as the predicate.
_GENERIC_VERBS = ("본다", "기다린다", "좋아한다", "말한다", "읽는다", "배운다", "기억한다", "설명한다", "소개한다",
                  "발표한다", "찾는다", "묻는다", "정리한다", "준비한다", "시작한다", "끝낸다", "보낸다", "쓴다",
                  "그린다", "칭찬한다")
_GENERIC_PASSIVE_VERBS = ("보인다", "기다려진다", "말해진다", "읽힌다", "기억된다", "설명된다", "소개된다", "발표된다",
                          "정리된다", "준비된다", "시작된다", "끝난다", "언급된다", "칭찬받는다", "그려진다")
# Nouns that are close translations of a class's English word but never class words: 데이터 is "data", not
# "database" (e5 cosine 0.906, the one false class word measured on the infrastructure ontology).
_NOT_CLASS_WORDS = {"데이터"}



# ------------------------------------------------------------------------------------------------ ontology index

def _squash(text: str) -> str:
    """Name key that also ignores spaces: "플랫폼 팀" and "플랫폼팀" are one name."""
    return normalize_name(text).replace("-", "")


class _OntologyIndex:
    """What this layer needs from one ontology: class words, relation texts and their embeddings, known names."""

    def __init__(self, ontology: Ontology):
        self.ontology = ontology
        schema = extraction_schema(ontology)
        self.class_words: dict[str, str] = {}  # squashed word -> class id
        owners, words = [], []
        for class_id, view in schema.classes.items():
            for word in view.words:
                self.class_words.setdefault(_squash(word), class_id)
                if not _HANGUL.search(word):  # Korean labels match exactly; the similarity threshold is
                    owners.append(class_id)  # calibrated for Korean word vs English label
                    words.append(word)
        self.class_owners = owners
        self.class_vectors = EMBEDDINGS.queries(words)
        self._nearest: dict[str, str | None] = {}

        # (relation id, text): labels in any language, comment, split local name and phrases; inverse phrases
        # ("hosts", "is used by") say what the relation is about too (direction comes from grammar, not from them)
        self.relation_texts: list[tuple[str, str]] = [(rel_id, text) for rel_id, view in schema.relations.items()
                                                      for text in view.texts]
        self.relation_ids = [rel for rel in ontology.relations if any(r == rel for r, _ in self.relation_texts)]
        self.relation_vectors = EMBEDDINGS.passages([t for _, t in self.relation_texts])
        self._owner_masks = {rel: np.array([r == rel for r, _ in self.relation_texts]) for rel in self.relation_ids}
        self._bank_stats: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

        self.known: dict[str, tuple[str, str]] = {}  # squashed name or alias -> (class id, canonical name)
        for entity in schema.known:
            for form in entity.forms:
                self.known.setdefault(_squash(form), (entity.label, entity.name))

    # -------------------------------------------------------------- classes
    def class_of_word(self, word: str, cross_lingual: bool = True) -> str | None:
        word = (word or "").strip()
        if not word:
            return None
        hit = self.class_words.get(_squash(word))
        if hit or not cross_lingual or not _HANGUL.search(word) or not self.class_owners or word in _NOT_CLASS_WORDS:
            return hit
        if word not in self._nearest:
            if len(self._nearest) > 50_000:
                self._nearest.clear()
            scores = self.class_vectors @ EMBEDDINGS.queries([word])[0]
            best: dict[str, float] = {}
            for owner, score in zip(self.class_owners, scores):
                best[owner] = max(best.get(owner, -1.0), float(score))
            ranked = sorted(best.items(), key=lambda item: -item[1])
            runner_up = ranked[1][1] if len(ranked) > 1 else -1.0
            ok = ranked[0][1] >= CLASS_WORD_MIN_COSINE and ranked[0][1] - runner_up >= CLASS_WORD_MIN_MARGIN
            self._nearest[word] = ranked[0][0] if ok else None
        return self._nearest[word]

    def pattern_class(self, name: str) -> str | None:
        for class_id, info in self.ontology.classes.items():
            for pattern in getattr(info, "name_patterns", ()):
                try:
                    if re.search(pattern, name):
                        return class_id
                except re.error:
                    continue
        return None

    # -------------------------------------------------------------- relations
    def _per_relation(self, scores: np.ndarray) -> np.ndarray:
        """(n, texts) cosine matrix -> (n, relations) best cosine per relation."""
        return np.stack([scores[:, self._owner_masks[rel]].max(axis=1) for rel in self.relation_ids], axis=1)

    def _bank(self, particle: str, passive: bool, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and spread of each relation's score over generic verbs in the same frame (same classes, particle)."""
        key = (particle, passive, names)
        if key not in self._bank_stats:
            verbs = _GENERIC_PASSIVE_VERBS if passive else _GENERIC_VERBS
            frames = [f"{names[0]}는 {names[1]}{particle} {verb}" for verb in verbs]
            per_relation = self._per_relation(EMBEDDINGS.queries(frames) @ self.relation_vectors.T)
            self._bank_stats[key] = (per_relation.mean(axis=0), per_relation.std(axis=0) + 1e-6)
        return self._bank_stats[key]

    def score_frame(self, frame: str, particle: str, passive: bool,
                    names: tuple[str, str]) -> dict[str, tuple[float, float]]:
        """relation id -> (z-score, best cosine) of one predicate frame against the relation's texts."""
        if not self.relation_texts:
            return {}
        cosines = self.relation_vectors @ EMBEDDINGS.queries([frame])[0]
        mean, std = self._bank(particle, passive, names)
        result = {}
        for column, rel in enumerate(self.relation_ids):
            mask = self._owner_masks[rel]
            best = float(cosines[mask].max())
            result[rel] = ((best - float(mean[column])) / float(std[column]), best)
        return result


_INDEXES: dict[str, _OntologyIndex] = {}
_INDEX_LOCK = threading.Lock()


def _index(ontology: Ontology) -> _OntologyIndex:
    """The ontology's index, built once per ontology content (its fingerprint) since it embeds every label."""
    fingerprint = getattr(ontology, "fingerprint", "")
    key = fingerprint or f"id:{id(ontology)}"
    with _INDEX_LOCK:
        index = _INDEXES.get(key)
        if index is None or (not fingerprint and index.ontology is not ontology):
            if len(_INDEXES) > 8:
                _INDEXES.clear()
            index = _INDEXES[key] = _OntologyIndex(ontology)
        return index
