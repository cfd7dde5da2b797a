"""The examples layer: relations and literal facts learned from a user's labeled sentences (examples.jsonl beside
the ontology) by a classifier over mention pairs. No rule here knows an ontology, a language's names or a property.

Training: every pair of mentions in an example sentence is read three ways — its *pair context* (the words around
and between the two mentions, each mention replaced by its coarse kind: 'person , who played for organization ,
was born in year'), its *dependency path* (the parse-tree words that link the two: 'nsubjpass create agent pobj'),
both embedded with the packaged MiniLM, and the two mentions' kinds. A pair the example labels is an instance of
that property (and of the order its subject and object appear in); an unlabeled pair is an instance of "no
relation", so the classifier learns when two names merely co-occur. A multinomial logistic regression (scikit-learn)
learns from them; its decision threshold is calibrated by two-fold cross-validation on the examples themselves and
reported (`ExampleModel.calibration`).

Extraction: the same mentions in a new sentence; each pair's most probable reading whose ends fit it (the kinds the
examples put in each role, the value shape of a literal) is kept above the threshold; a pronoun ("he", "its")
stands for the first name of its paragraph. Names the examples typed become a gazetteer (lower-case and
multi-word names included) and type votes.

This module trains and calibrates the model and turns its predictions into raw facts; mention finding
(examples_mentions), pair features (examples_pairs) and the model itself (examples_model) are its sibling modules.
"""

from __future__ import annotations

import re
import threading
from collections import Counter, defaultdict

import numpy as np

from assets.knowledge_graph.examples_mentions import (
    _NUMBER,
    NER_KIND,
    NameGazetteer,
    Span,
    _iso_date,
    literal_value,
    value_shape,
)
from assets.knowledge_graph.examples_model import DEFAULT_THRESHOLD, Calibration, ExampleModel, _Prototype
from assets.knowledge_graph.examples_pairs import mention_pairs, pair_features
from assets.knowledge_graph.mentions import parse_english
from assets.knowledge_graph.schema import extraction_schema
from resources.ontology import Ontology
from resources.ontology_examples import ExampleSet, LabeledExample, loose


MIN_EXAMPLES = 8  # below this there is nothing to cross-validate: the layer stays off
LOWEST_THRESHOLD = 0.1


# ---------------------------------------------------------------------------------------------- training
def _same_value(span: Span, gold: str) -> bool:
    gold = gold.strip().strip('"')
    gold_number = _NUMBER.search(gold)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", gold):
        return _iso_date(span.text) == gold or gold[:4] == span.text.strip()
    if gold_number and span.literal:
        found = _NUMBER.search(span.text)
        try:
            return bool(found) and abs(float(found.group(0).replace(",", "").replace("−", "-")) -
                                       float(gold_number.group(0).replace(",", ""))) < 1e-6
        except ValueError:
            return False
    return _same_name(span.text, gold)


def _same_name(surface: str, gold: str) -> bool:
    a, b = loose(surface), loose(gold)
    if not a or not b:
        return False
    if a == b:
        return True
    head = loose(re.split(r"[,(]", gold)[0])
    if a == head:
        return True
    aw, bw = a.split(), head.split()
    if len(aw) >= 2 and set(aw) <= set(bw) and len(aw) * 2 >= len(bw):
        return True
    return len(bw) >= 1 and set(bw) <= set(aw) and len(aw) <= len(bw) + 1


def _gold_label(example: LabeledExample, subject: Span, obj: Span):
    for triple in example.triples:
        subject_ok = _same_name(subject.name, triple.subject)
        if triple.kind == "attribute":
            object_ok = _same_value(obj, triple.object)
        else:
            object_ok = not obj.pronoun and _same_name(obj.text, triple.object)
        if subject_ok and object_ok:
            return triple
    return None


_MODELS: dict[tuple, ExampleModel | None] = {}
_LOCK = threading.Lock()


def trained_model(ontology: Ontology) -> ExampleModel | None:
    """The model if this process already trained it (for reports: never trains)."""
    examples = extraction_schema(ontology).examples
    return _MODELS.get((ontology.fingerprint, examples.fingerprint))


def model_for(ontology: Ontology) -> ExampleModel | None:
    """The examples model of an ontology (None without enough examples), trained once per examples file."""
    examples = extraction_schema(ontology).examples
    if len(examples.examples) < MIN_EXAMPLES:
        return None
    key = (ontology.fingerprint, examples.fingerprint)
    with _LOCK:
        if key not in _MODELS:
            if len(_MODELS) > 4:
                _MODELS.clear()
            _MODELS[key] = train(ontology, examples)
        return _MODELS[key]


def _example_gazetteer(examples: ExampleSet, docs) -> dict[str, str]:
    """Names of the examples' subjects and objects, with the kind spaCy gives them in context."""
    kinds: dict[str, Counter] = defaultdict(Counter)
    for example, doc in zip(examples.examples, docs):
        ents = [(e.start_char, e.end_char, NER_KIND.get(e.label_, "thing")) for e in doc.ents]
        text = example.text
        for triple in example.triples:
            for name in (triple.subject, triple.object) if triple.kind == "relation" else (triple.subject,):
                position = loose(text).find(loose(name))
                found = re.search(re.escape(name), text, re.IGNORECASE)
                if found:
                    kind = next((k for s, e, k in ents if s <= found.start() < e), "thing")
                    kinds[name][kind] += 1
                elif position >= 0:
                    kinds[name]["thing"] += 1
    return {name: counter.most_common(1)[0][0] for name, counter in kinds.items()}


def train(ontology: Ontology, examples: ExampleSet) -> ExampleModel:
    docs = parse_english([e.text for e in examples.examples])
    gazetteer = NameGazetteer(_example_gazetteer(examples, docs))
    features: list[np.ndarray] = []
    prototypes: list[_Prototype] = []
    gold_counts: list[int] = []
    end_kinds: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for index, (example, doc) in enumerate(zip(examples.examples, docs)):
        pairs = list(mention_pairs(doc, gazetteer))
        features.append(pair_features(doc, pairs))
        for first, second, _, _ in pairs:
            label = None
            forward = _gold_label(example, first, second)
            backward = None if forward else _gold_label(example, second, first)
            if forward:
                label = (forward.predicate, forward.kind, "forward")
            elif backward:
                label = (backward.predicate, backward.kind, "backward")
            if label:
                subject, obj = (first, second) if forward else (second, first)
                for role, span in (("subject", subject), ("object", obj)):
                    end_kinds[(label[0], role)][span.role_kind] += 1
            prototypes.append(_Prototype(label, index))
        gold_counts.append(len(example.triples))
    matrix = np.vstack(features) if features else pair_features(None, [])
    shapes: dict[str, Counter] = defaultdict(Counter)
    for example in examples.examples:
        for triple in example.triples:
            if triple.kind == "attribute":
                shapes[triple.predicate][value_shape(triple.object)] += 1
    model = ExampleModel(ontology, examples, gazetteer, matrix, prototypes,
                         value_shapes={attr: counter.most_common(1)[0][0] for attr, counter in shapes.items()},
                         end_kinds=dict(end_kinds))
    model.calibration = _calibrate(model, docs, gold_counts)
    return model


def _calibrate(model: ExampleModel, docs, gold_counts: list[int]) -> Calibration:
    """Two folds: each half's sentences are read by a classifier trained on the other half; the threshold that
    gives the best F0.5 over all examples is kept."""
    folds = 2
    fold_of = [i % folds for i in range(len(docs))]
    scored: list[tuple[float, bool]] = []
    proto_fold = np.asarray([fold_of[p.example] for p in model.prototypes])
    gold_total = sum(gold_counts)
    for fold in range(folds):
        others = _without_fold(model, proto_fold != fold)
        for index, doc in enumerate(docs):
            if fold_of[index] != fold:
                continue
            example = model.examples.examples[index]
            for p in others.predict(doc, threshold=LOWEST_THRESHOLD):
                triple = _gold_label(example, p.subject, p.object)
                scored.append((p.score, bool(triple and triple.predicate == p.predicate)))
    best = Calibration(DEFAULT_THRESHOLD, 0.0, 0.0, 0.0, folds, len(model.prototypes))
    best_half = 0.0
    for threshold in np.arange(LOWEST_THRESHOLD, 0.95, 0.025):
        kept = [ok for score, ok in scored if score >= threshold]
        tp = sum(kept)
        p = tp / len(kept) if kept else 0.0
        r = tp / gold_total if gold_total else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        # precision weighs double (F0.5): names in new text are less often the examples' own than in the folds
        f_half = 1.25 * p * r / (0.25 * p + r) if p + r else 0.0
        if f_half > best_half:
            best_half = f_half
            best = Calibration(float(threshold), p, r, f1, folds, len(model.prototypes))
    return best


def _without_fold(model: ExampleModel, keep: np.ndarray) -> ExampleModel:
    """The model with only the prototypes in keep (cross-validation: the other fold's)."""
    return ExampleModel(model.ontology, model.examples, model.gazetteer, model.features[keep],
                        [p for p, k in zip(model.prototypes, keep) if k], value_shapes=model.value_shapes,
                        end_kinds=model.end_kinds)


def extract_with_examples(model: ExampleModel, doc, chunk_id: str):
    """(relations, attributes) as extract_facts' raw facts: dicts with the surfaces, the classes the ontology gives
    their ends, the sentence and score."""
    relations, attributes = [], []
    for p in model.predict(doc):
        subject = p.subject.name
        if p.kind == "relation":
            rel = model.ontology.relations[p.predicate]
            relations.append({"source": subject, "source_label": rel.domain or None, "type": p.predicate,
                              "target": p.object.text, "target_label": rel.range or None, "chunk_id": chunk_id,
                              "sentence": p.sentence, "score": p.score})
        else:
            attr = model.ontology.attributes[p.predicate]
            kind = attr.literal_kind or ("number" if attr.numeric else "text")
            attributes.append({"entity": subject, "entity_label": attr.domain, "property": p.predicate,
                               "value": literal_value(p.object, kind, model.value_shapes.get(p.predicate, "")),
                               "chunk_id": chunk_id, "sentence": p.sentence,
                               "layer": "examples", "score": p.score})
    return relations, attributes


__all__ = ["extract_with_examples", "model_for", "train"]
