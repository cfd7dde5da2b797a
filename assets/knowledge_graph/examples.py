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
"""

from __future__ import annotations

import re
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from assets.knowledge_graph.embedding import embed
from assets.knowledge_graph.mentions import doc_original, parse_english
from assets.knowledge_graph.schema import extraction_schema
from resources.ontology import Ontology
from resources.ontology_examples import ExampleSet, LabeledExample, loose

MIN_EXAMPLES = 8  # below this there is nothing to cross-validate: the layer stays off
CLASSIFIER_C = 1.0  # inverse L2 strength: a few hundred labeled pairs, 800 features
LOWEST_THRESHOLD = 0.1
DEFAULT_THRESHOLD = 0.5
LEFT_WORDS, RIGHT_WORDS, BETWEEN_HEAD, BETWEEN_TAIL = 3, 2, 3, 5
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


# ---------------------------------------------------------------------------------------------- contexts
def _words(text: str) -> list[str]:
    return re.findall(r"\w+(?:[-'.]\w+)*|[^\w\s]", text)


def pair_context(text: str, first: Span, second: Span, sentence_start: int, sentence_end: int) -> str:
    """The words around and between two mentions (in text order), each mention replaced by its kind."""
    left = _words(text[sentence_start:first.start])[-LEFT_WORDS:]
    between = _words(text[first.end:second.start])
    if len(between) > BETWEEN_HEAD + BETWEEN_TAIL:
        between = between[:BETWEEN_HEAD] + ["..."] + between[-BETWEEN_TAIL:]
    right = _words(text[second.end:sentence_end])[:RIGHT_WORDS]
    first_kind = "pronoun" if first.pronoun else first.kind
    second_kind = "pronoun" if second.pronoun else second.kind
    return " ".join(left + [f"<{first_kind}>"] + between + [f"<{second_kind}>"] + right)


def _sentences(doc):
    """(start_char, end_char) of each sentence and the paragraph (blank-line separated) it belongs to."""
    text = doc_original(doc)
    breaks = [m.start() for m in re.finditer(r"\n\s*\n", text)]
    for sent in doc.sents:
        paragraph = sum(1 for b in breaks if b < sent.start_char)
        yield sent.start_char, sent.end_char, paragraph


def mention_pairs(doc, gazetteer: "NameGazetteer | None"):
    """(first, second, pair context, sentence) for every pair of mentions in each sentence of a parsed text, in
    text order, pronouns linked to their paragraph's first name: what training and prediction both read."""
    text = doc_original(doc)
    first_of_paragraph: dict[int, Span] = {}
    for start, end, paragraph in _sentences(doc):
        spans = find_spans(doc, start, end, gazetteer)
        names = [s for s in spans if not s.pronoun and not s.literal]
        if names and paragraph not in first_of_paragraph:
            first_of_paragraph[paragraph] = names[0]
        _link_pronouns(spans, first_of_paragraph.get(paragraph))
        sentence = text[start:end].strip()
        for first, second in _pairs(spans):
            yield first, second, pair_context(text, first, second, start, end), sentence


def _pairs(spans: list[Span]):
    for i, first in enumerate(spans):
        for second in spans[i + 1:]:
            if first.overlaps(second) or (first.pronoun and second.pronoun) or loose(first.name) == loose(second.name):
                continue
            yield first, second


def dependency_path(doc, first: Span, second: Span) -> str:
    """The words on the parse-tree path between two mentions, with their own attachments at its ends:
    'nsubjpass create agent pobj' for 'Bolt was created by Paris Cullins'. Wording between the two names
    that does not link them ('..., and ...') stays off the path."""
    a = doc.char_span(first.start, first.end, alignment_mode="expand")
    b = doc.char_span(second.start, second.end, alignment_mode="expand")
    if a is None or b is None:
        return "none"
    up_a, up_b = [a.root, *a.root.ancestors], [b.root, *b.root.ancestors]
    depth_b = {token.i: depth for depth, token in enumerate(up_b)}
    for depth, token in enumerate(up_a):
        if token.i in depth_b:
            path = up_a[1:depth + 1] + list(reversed(up_b[1:depth_b[token.i]]))
            words = [t.lemma_.lower() for t in path if t.i not in (a.root.i, b.root.i)]
            return " ".join([a.root.dep_, *words, b.root.dep_])
    return "none"  # different sentences' trees


def _coordinated(doc, first: Span, second: Span) -> bool:
    """The two mentions are conjuncts of one coordination ('Paris Cullins and Gary Cohn')."""
    a = doc.char_span(first.start, first.end, alignment_mode="expand")
    b = doc.char_span(second.start, second.end, alignment_mode="expand")
    return a is not None and b is not None and (a.root in b.root.conjuncts or b.root in a.root.conjuncts)


KINDS = ("person", "place", "organization", "thing", "number", "date", "year", "pronoun")


def _kind_index(span: Span) -> int:
    return KINDS.index(span.role_kind) if span.role_kind in KINDS else KINDS.index("thing")


def pair_features(doc, pairs) -> np.ndarray:
    """What the classifier reads of each mention pair: its context and its dependency path (both embedded) and
    the two mentions' kinds."""
    if not pairs:
        return np.zeros((0, 2 * 384 + 2 * len(KINDS)), dtype=np.float32)
    kinds = np.zeros((len(pairs), 2 * len(KINDS)), dtype=np.float32)
    for row, (first, second, _, _) in enumerate(pairs):
        kinds[row, _kind_index(first)] = 1.0
        kinds[row, len(KINDS) + _kind_index(second)] = 1.0
    return np.hstack([embed([context for _, _, context, _ in pairs]),
                      embed([dependency_path(doc, first, second) for first, second, _, _ in pairs]), kinds])


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


# ---------------------------------------------------------------------------------------------- training
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


__all__ = ["Calibration", "ExampleModel", "NameGazetteer", "Prediction", "extract_with_examples", "find_spans",
           "model_for", "pair_context", "train"]
