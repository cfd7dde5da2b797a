"""The examples layer's trained model: a logistic regression over mention-pair features, and how it reads a new
text (each pair's most probable reading whose ends fit the kinds and value shapes the examples showed)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from assets.knowledge_graph.examples_mentions import _NUMBER, _YEAR, NameGazetteer, Span, _clean, _iso_date
from assets.knowledge_graph.examples_pairs import _coordinated, mention_pairs, pair_features
from assets.knowledge_graph.mentions import doc_original
from resources.ontology import Ontology
from resources.ontology_examples import ExampleSet, loose


CLASSIFIER_C = 1.0  # inverse L2 strength: a few hundred labeled pairs, 800 features
DEFAULT_THRESHOLD = 0.5


@dataclass
class Prediction:
    subject: Span
    predicate: str  # relation or attribute identifier
    kind: str  # "relation" | "attribute"
    object: Span
    score: float
    sentence: str


@dataclass
class Calibration:
    threshold: float
    precision: float
    recall: float
    f1: float
    folds: int
    prototypes: int

    def as_metadata(self) -> dict:
        return {"threshold": round(self.threshold, 3), "cv_precision": round(self.precision, 3),
                "cv_recall": round(self.recall, 3), "cv_f1": round(self.f1, 3), "folds": self.folds,
                "prototypes": self.prototypes}


# ---------------------------------------------------------------------------------------------- model
@dataclass
class _Prototype:
    label: tuple[str, str, str] | None  # (predicate, kind, "forward" | "backward"); None = no relation
    example: int


def _fit(features: np.ndarray, prototypes: list[_Prototype]):
    """A multinomial logistic regression over the pair features; None when the examples give one class only."""
    labels = [str(p.label) for p in prototypes]
    if len(set(labels)) < 2:
        return None
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=CLASSIFIER_C, max_iter=3000).fit(features, labels)


@dataclass
class ExampleModel:
    ontology: Ontology
    examples: ExampleSet
    gazetteer: NameGazetteer
    features: np.ndarray
    prototypes: list[_Prototype]
    value_shapes: dict[str, str] = field(default_factory=dict)  # attribute -> how the examples write its values
    end_kinds: dict[tuple[str, str], Counter] = field(default_factory=dict)  # (predicate, role) -> kinds seen
    calibration: Calibration | None = None
    classifier: object = None

    def __post_init__(self):
        if self.classifier is None and len(self.prototypes):
            self.classifier = _fit(self.features, self.prototypes)
        by_name = {str(p.label): p.label for p in self.prototypes}
        self._labels = [by_name[c] for c in self.classifier.classes_] if self.classifier is not None else []

    @property
    def threshold(self) -> float:
        return self.calibration.threshold if self.calibration else DEFAULT_THRESHOLD

    # -- scoring
    def _candidates(self, features: np.ndarray):
        """For each pair, its two most probable relation readings (label, probability), best first."""
        probabilities = self.classifier.predict_proba(features)
        out = []
        for row in probabilities:
            order = np.argsort(-row)
            out.append([(self._labels[j], float(row[j])) for j in order[:3] if self._labels[j] is not None][:2])
        return out

    def _seen_kind(self, predicate: str, role: str, span: Span) -> bool:
        """The examples put mentions of this kind in this role of the property (once seen 3 times at least)."""
        seen = self.end_kinds.get((predicate, role))
        if not seen or sum(seen.values()) < 3:
            return True
        return seen[span.role_kind] > 0 or span.pronoun and seen["pronoun"] > 0

    def _fits(self, label, subject: Span, obj: Span) -> bool:
        predicate, kind, _ = label
        if subject.literal or (subject.pronoun and subject.referent is None):
            return False
        if not (self._seen_kind(predicate, "subject", subject) and self._seen_kind(predicate, "object", obj)):
            return False
        if kind == "relation":
            return not obj.literal and not obj.pronoun
        attr = self.ontology.attributes[predicate]
        wanted = {"iso-date": "date", "year": "year", "decimal": "number", "integer": "number"}.get(
            self.value_shapes.get(predicate, ""), attr.literal_kind or ("number" if attr.numeric else "text"))
        if wanted in ("number",):
            return obj.kind in ("number", "year") or bool(_NUMBER.search(obj.text) and obj.literal)
        if wanted == "year":
            return bool(_YEAR.search(obj.text))
        if wanted == "date":
            return obj.kind in ("date", "year") or _iso_date(obj.text) is not None
        return not obj.pronoun

    def predict(self, doc, threshold: float | None = None) -> list[Prediction]:
        """Facts of one parsed text (a chunk): each mention pair's most probable reading that fits its ends."""
        threshold = self.threshold if threshold is None else threshold
        pairs = list(mention_pairs(doc, self.gazetteer))
        if not pairs or self.classifier is None:
            return []
        found: list[Prediction] = []
        for (first, second, _, sentence), readings in zip(pairs, self._candidates(pair_features(doc, pairs))):
            if _coordinated(doc, first, second):
                continue  # 'X and Y ...': two conjuncts share one role, they are not each other's subject/object
            for label, score in readings:
                if score < threshold:
                    break
                subject, obj = (first, second) if label[2] == "forward" else (second, first)
                if self._fits(label, subject, obj):
                    found.append(Prediction(subject, label[0], label[1], obj, score, sentence))
                    break
        return _best_readings(found + _conjuncts(doc, found, self))


def _conjuncts(doc, found: list[Prediction], model: "ExampleModel") -> list[Prediction]:
    """'played for X, Y and Z': what holds for X holds for its conjuncts Y and Z (spaCy's conj), same score."""
    text = doc_original(doc)
    extra = []
    for p in found:
        if p.kind != "relation":
            continue
        head = doc.char_span(p.object.start, p.object.end, alignment_mode="expand")
        if head is None:
            continue
        for token in head.root.conjuncts:
            if token.i < head.root.i:
                continue
            span = doc[token.left_edge.i: token.right_edge.i + 1]
            parts = [t for t in span if t.dep_ not in ("cc", "det", "punct") and not (t.i > token.i and t.dep_ == "conj")]
            if not parts:
                continue
            start, end = _clean(text, parts[0].idx, parts[-1].idx + len(parts[-1].text))
            obj = Span(start, end, text[start:end], p.object.kind)
            if end > start and not obj.overlaps(p.subject) and model._fits((p.predicate, p.kind, "forward"),
                                                                             p.subject, obj):
                extra.append(Prediction(p.subject, p.predicate, p.kind, obj, p.score * 0.99, p.sentence))
    return extra


def _best_readings(found: list[Prediction]) -> list[Prediction]:
    """Of overlapping readings of one fact ('Germany' / 'Germany national team'), the best scored (then longest)."""
    found.sort(key=lambda p: (-p.score, -(p.object.end - p.object.start) - (p.subject.end - p.subject.start)))
    kept: list[Prediction] = []
    for p in found:
        if any(k.predicate == p.predicate and k.sentence == p.sentence and
               (k.subject.overlaps(p.subject) or loose(k.subject.name) == loose(p.subject.name)) and
               k.object.overlaps(p.object) for k in kept):
            continue
        # one mention is the object of one reading in a sentence
        if any(k.sentence == p.sentence and k.object.overlaps(p.object) and
               (k.subject.overlaps(p.subject) or loose(k.subject.name) == loose(p.subject.name)) for k in kept):
            continue
        kept.append(p)
    return kept
