"""Entity mentions in English text: names found by shape, context and the ontology, typed from evidence.

A mention is a candidate name in one chunk. Its class comes from evidence of several strengths, collected for
the whole document before any relation is classified:

    known       a known individual of the ontology (or one of its aliases)
    pattern     a kg:namePattern hint matched the name
    keyword     a class word next to the name ("the server X", "X database", "Platform Team", "X (a database)",
                "X is a database"), or inside an identifier ("pg-node-1": node, "vault-db": db)
    table       the name sits in a table column or key-value field whose header names a class
    ner         spaCy's NER label, mapped to the classes whose labels/comments describe it (zero-shot)
    relation    the name was the argument of a confidently classified relation (domain/range say the class)
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache

from resources.ontology import Ontology, load_ontology, normalize_name

# Hyphen/underscore/dot-joined identifiers (srv-db-01, billing-db, app_node_3) that spaCy's tokenizer splits apart.
IDENT = re.compile(r"(?<![\w.-])[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)+(?![\w-])")
HANGUL = re.compile(r"[\uac00-\ud7a3]")
_FILLER = {"the", "a", "an", "its", "their", "our", "this", "that", "these", "those", "both", "each", "every", "all",
           "new", "old", "main", "primary", "internal", "external", "existing", "shared", "same", "other"}
EVIDENCE_WEIGHT = {"known": 10.0, "pattern": 6.0, "keyword": 4.0, "table": 4.0, "header": 3.0, "ner": 1.0,
                   "relation": 1.5, "default": 0.1}
# spaCy NER labels described in words, to map them onto any ontology's classes by similarity.
NER_DESCRIPTIONS = {
    "ORG": "organization: a company, team, department, agency, airline or institution",
    "PERSON": "person: a named human being",
    "GPE": "place: a city, country or state",
    "LOC": "location: a region, mountain or body of water",
    "FAC": "facility: a building, airport, highway, bridge or site",
    "PRODUCT": "product: a named product, vehicle, software or aircraft type",
    "NORP": "nationality or group",
    "WORK_OF_ART": "title of a book, song or work",
    "EVENT": "event: a named event",
    "LAW": "law or regulation",
}
_NOT_NAMES = {"i", "we", "you", "he", "she", "it", "they", "this", "that", "there", "here", "step", "note", "todo",
              "status", "context", "decision", "consequences", "yes", "no", "ok", "thanks", "thx", "hi", "hello"}


@dataclass
class Mention:
    surface: str  # the name as written (trimmed of articles and class words)
    chunk_id: str
    start: int = -1  # token offsets in the chunk's spaCy Doc (-1: found by the structure layer)
    end: int = -1
    label: str | None = None  # class id once typed
    evidence: list[tuple[str, str]] = field(default_factory=list)  # (class id, evidence kind)

    @property
    def key(self) -> str:
        return normalize_name(self.surface)


# ---------------------------------------------------------------------------------------------- spaCy pipeline

class _IdentifierMerger:
    """Merges the tokens of identifier-like names so that one token carries 'srv-db-01'."""

    def __call__(self, doc):
        spans = []
        for match in IDENT.finditer(doc.text):
            span = doc.char_span(match.start(), match.end())
            if span is not None and len(span) > 1:
                spans.append(span)
        if spans:
            with doc.retokenize() as retokenizer:
                for span in spans:
                    retokenizer.merge(span, attrs={"POS": "PROPN", "TAG": "NNP"})
        return doc


def _register_merger():
    from spacy.language import Language

    if not Language.has_factory("kg_identifier_merger"):
        @Language.factory("kg_identifier_merger")
        def make_identifier_merger(nlp, name):  # noqa: ARG001
            return _IdentifierMerger()


@lru_cache(maxsize=2)
def english_pipeline():
    """en_core_web_sm with identifier merging (one pipeline for every ontology: typing happens afterwards)."""
    import spacy

    _register_merger()
    nlp = spacy.load("en_core_web_sm")
    nlp.add_pipe("kg_identifier_merger", first=True)
    return nlp


# ---------------------------------------------------------------------------------------------- lexicon

class ClassLexicon:
    """Which class a word or name points to: class keywords (labels, altLabels, local-name words, any language),
    kg:namePattern hints, known individuals, and a zero-shot map from spaCy NER labels to classes."""

    def __init__(self, ontology: Ontology):
        self.ontology = ontology
        self.keyword_classes: dict[str, set[str]] = defaultdict(set)
        for cls in ontology.classes.values():
            for word in cls.keywords:
                self.keyword_classes[word.lower()].add(cls.name)
                if not HANGUL.search(word) and not word.endswith("s"):
                    self.keyword_classes[word.lower() + "s"].add(cls.name)  # plural: "apps", "hosts"
        self.max_keyword_words = max((len(k.split()) for k in self.keyword_classes), default=1)
        self.patterns = [(re.compile(p), c.name) for c in ontology.classes.values() for p in c.name_patterns]
        self.known: dict[str, tuple[str, str]] = {}  # key -> (class, canonical name)
        for known in ontology.known_entities:
            for form in (known.name, *known.aliases):
                self.known[normalize_name(form)] = (known.label, known.name)
        self.ner_classes = self._ner_map()

    def _ner_map(self) -> dict[str, list[str]]:
        """spaCy NER label -> classes it may stand for: kg:nerLabel hints, else embedding similarity."""
        mapping: dict[str, list[str]] = defaultdict(list)
        for cls in self.ontology.classes.values():
            for label in cls.ner_labels:
                mapping[label].append(cls.name)
        if mapping:
            return dict(mapping)
        from assets.knowledge_graph.scoring import embed

        classes = [c for c in self.ontology.classes.values() if c.name not in self.abstract_roots()]
        if not classes:
            return {}
        ner_names = list(NER_DESCRIPTIONS)
        ner_vecs = embed([NER_DESCRIPTIONS[n] for n in ner_names])
        cls_vecs = embed([f"{c.label}: {c.comment}" if c.comment else c.label for c in classes])
        sims = ner_vecs @ cls_vecs.T
        for i, ner in enumerate(ner_names):
            for j, cls in enumerate(classes):
                if sims[i, j] >= 0.45 and sims[i, j] >= sims[:, j].max() - 1e-6:
                    mapping[ner].append(cls.name)
        return dict(mapping)

    def abstract_roots(self) -> set[str]:
        """Classes every other class descends from (owl:Thing-like roots: 'Entity'): never a useful type."""
        names = set(self.ontology.classes)
        return {n for n in names if all(self.ontology.is_a(other, n) for other in names)}

    def classes_for_word(self, word: str) -> set[str]:
        return set(self.keyword_classes.get(word.lower(), ()))

    def classes_for_phrase(self, text: str) -> set[str]:
        """Classes named by a header or key ('Responsible team', 'Deployed apps', '실행 서버'): the longest keyword
        found as whole words, preferring the last (head) word."""
        words = re.findall(r"[\w\uac00-\ud7a3]+", text.lower())
        for size in range(min(self.max_keyword_words, len(words)), 0, -1):
            for start in range(len(words) - size, -1, -1):
                found = self.classes_for_word(" ".join(words[start:start + size]))
                if found:
                    return found
        # glued compounds: "hostname", "담당팀", "실행서버"
        for word in reversed(words):
            for keyword, classes in self.keyword_classes.items():
                glued = HANGUL.search(keyword) or (len(keyword) >= 4 and " " not in keyword)
                if glued and word != keyword and (word.endswith(keyword) or word.startswith(keyword)):
                    return set(classes)
        return set()

    def classes_in_identifier(self, name: str) -> set[str]:
        """A class word inside an identifier: the last non-numeric part first ('pg-node-1', 'vault-db')."""
        parts = [p for p in re.split(r"[-_.]", name.lower()) if p and not p.isdigit()]
        if len(parts) < 2:
            return set()
        for part in reversed(parts):
            stripped = re.sub(r"\d+$", "", part)
            found = self.classes_for_word(stripped) if stripped else set()
            if found:
                return found
        return set()

    def pattern_class(self, name: str) -> str | None:
        for regex, cls in self.patterns:
            if regex.match(name):
                return cls
        return None

    def strip_class_words(self, name: str) -> tuple[str, set[str]]:
        """'the Fraud Ops team' -> ('Fraud Ops', {Team}): the head (last) word of a multiword name says its class."""
        words = name.split()
        found: set[str] = set()
        while len(words) > 1 and words[0].lower() in _FILLER:
            words = words[1:]
        while len(words) > 1 and self.classes_for_word(words[-1]):
            found |= self.classes_for_word(words[-1])
            words = words[:-1]
        # a leading class word only introduces an identifier ('server srv-01', 'Team Phoenix' is a name)
        while len(words) == 2 and self.classes_for_word(words[0]) and IDENT.fullmatch(words[1]):
            found |= self.classes_for_word(words[0])
            words = words[1:]
        return " ".join(words), found


@lru_cache(maxsize=8)
def _lexicon(directory: str, fingerprint: str) -> ClassLexicon:
    return ClassLexicon(load_ontology(directory))


def lexicon_for(ontology: Ontology) -> ClassLexicon:
    return _lexicon(str(ontology.directory), ontology.fingerprint)


# ---------------------------------------------------------------------------------------------- finding names

def _is_name_token(token) -> bool:
    text = token.text
    if IDENT.fullmatch(text):
        return True
    if token.is_stop or token.is_punct or token.like_num or len(text) < 2:
        return False
    if text.lower() in _NOT_NAMES:
        return False
    if token.pos_ == "PROPN" or (text[0].isupper() and token.i > token.sent.start):
        return True
    # CamelCase / mixed-case single words (PaymentsGateway, iOS) and words with digits (web01)
    return bool(re.search(r"[a-z][A-Z]|[A-Za-z]\d|\d[A-Za-z]", text))


def _name_spans(doc):
    """Maximal runs of name-like tokens (proper nouns, identifiers), split at identifiers."""
    spans, start = [], None
    for token in doc:
        if _is_name_token(token) and not (start is not None and (IDENT.fullmatch(token.text) or
                                                                 IDENT.fullmatch(doc[token.i - 1].text))):
            if start is None:
                start = token.i
            continue
        if start is not None:
            spans.append((start, token.i))
            start = None
        if _is_name_token(token):
            start = token.i
    if start is not None:
        spans.append((start, len(doc)))
    return spans


def _context_classes(doc, start: int, end: int, lexicon: ClassLexicon) -> set[str]:
    """Class words right before ('the server X', 'team X') or after ('X database', 'X service') a name, in a
    parenthesis after it ('X (MySQL database)') or as the copula's attribute ('X is a database')."""
    found: set[str] = set()
    before = start - 1
    while before >= 0 and doc[before].lower_ in _FILLER:
        before -= 1
    if before >= 0 and doc[before].pos_ in ("NOUN", "PROPN") and before >= doc[start].sent.start:
        found |= lexicon.classes_for_word(doc[before].lower_) | lexicon.classes_for_word(doc[before].lemma_.lower())
    if end < len(doc) and doc[end].pos_ in ("NOUN", "PROPN") and not _is_name_token(doc[end]):
        found |= lexicon.classes_for_word(doc[end].lower_) | lexicon.classes_for_word(doc[end].lemma_.lower())
    if end < len(doc) and doc[end].text == "(":
        close = next((t.i for t in doc[end:min(len(doc), end + 12)] if t.text == ")"), None)
        if close is not None:
            for token in doc[end + 1:close]:
                found |= lexicon.classes_for_word(token.lower_) | lexicon.classes_for_word(token.lemma_.lower())
    head = doc[end - 1]
    # apposition / copula: "X, a PostgreSQL database", "X is a database"
    for token in head.children:
        if token.dep_ == "appos":
            found |= lexicon.classes_for_word(token.lemma_.lower()) | lexicon.classes_for_word(token.lower_)
    if head.dep_ in ("nsubj", "nsubjpass") and head.head.lemma_ == "be":
        for token in head.head.children:
            if token.dep_ == "attr" and not _is_name_token(token):
                found |= lexicon.classes_for_word(token.lemma_.lower()) | lexicon.classes_for_word(token.lower_)
    if head.dep_ == "appos" and not _is_name_token(head.head):
        found |= lexicon.classes_for_word(head.head.lemma_.lower()) | lexicon.classes_for_word(head.head.lower_)
    return found


def find_mentions(doc, chunk_id: str, lexicon: ClassLexicon) -> list[Mention]:
    """Candidate names of one chunk with the typing evidence the text itself gives."""
    ner = {}
    for ent in doc.ents:
        for i in range(ent.start, ent.end):
            ner[i] = ent.label_
    mentions = []
    for start, end in _name_spans(doc):
        surface = doc[start:end].text.strip()
        if not surface or surface.lower() in _NOT_NAMES or not re.search(r"[A-Za-z0-9\uac00-\ud7a3]", surface):
            continue
        mention = Mention(surface=surface, chunk_id=chunk_id, start=start, end=end)
        name, inner = lexicon.strip_class_words(surface)
        known = lexicon.known.get(normalize_name(surface)) or lexicon.known.get(normalize_name(name))
        if known:
            mention.evidence.append((known[0], "known"))
        pattern = lexicon.pattern_class(surface)
        if pattern:
            mention.evidence.append((pattern, "pattern"))
        for cls in inner:
            mention.evidence.append((cls, "keyword"))  # "Platform Team", "billing database"
        for cls in _context_classes(doc, start, end, lexicon):
            mention.evidence.append((cls, "keyword"))
        for cls in lexicon.classes_in_identifier(surface):
            mention.evidence.append((cls, "keyword"))
        labels = Counter(ner[i] for i in range(start, end) if i in ner)
        if labels:
            for cls in lexicon.ner_classes.get(labels.most_common(1)[0][0], []):
                mention.evidence.append((cls, "ner"))
        mentions.append(mention)
    return mentions


def gazetteer_mentions(doc, chunk_id: str, names: dict[str, str], taken: list[Mention]) -> list[Mention]:
    """Bare, lower-case or differently cased mentions of names the document typed elsewhere."""
    from spacy.matcher import PhraseMatcher

    if not names:
        return []
    matcher = PhraseMatcher(doc.vocab, attr="LOWER")
    nlp = english_pipeline()
    for key, surface in names.items():
        matcher.add(key, [nlp.make_doc(surface)])
    occupied = {i for m in taken for i in range(m.start, m.end)}
    found = []
    for match_id, start, end in sorted(matcher(doc), key=lambda m: (m[1], -(m[2] - m[1]))):
        if any(i in occupied for i in range(start, end)):
            continue
        found.append(Mention(surface=doc[start:end].text, chunk_id=chunk_id, start=start, end=end))
        occupied.update(range(start, end))
    return found


# ---------------------------------------------------------------------------------------------- typing

class TypeVotes:
    """Document-level class votes per name key; the decided class is the best-supported one, refined to the
    most specific compatible class that has support, and never an abstract root."""

    def __init__(self, ontology: Ontology, lexicon: ClassLexicon):
        self.ontology = ontology
        self.lexicon = lexicon
        self.votes: dict[str, Counter] = defaultdict(Counter)
        self.roots = lexicon.abstract_roots()

    def add(self, key: str, cls: str, kind: str) -> None:
        if key and cls in self.ontology.classes and cls not in self.roots:
            self.votes[key][cls] += EVIDENCE_WEIGHT[kind]

    def add_mention(self, mention: Mention) -> None:
        for cls, kind in mention.evidence:
            self.add(mention.key, cls, kind)

    def label(self, key: str) -> str | None:
        counter = self.votes.get(key)
        if not counter:
            return None
        # group votes by compatibility: a class' support includes its sub- and superclasses' votes
        def support(cls: str) -> float:
            return sum(w for other, w in counter.items() if self.ontology.is_a(other, cls) or self.ontology.is_a(cls, other))

        best = max(counter, key=lambda c: (support(c), counter[c], self.ontology.specificity(c), c))
        refined = [c for c in counter if self.ontology.is_a(c, best) and c != best]
        if refined:
            best = max(refined, key=lambda c: (counter[c], self.ontology.specificity(c), c))
        return self.concrete(best)

    def concrete(self, cls: str) -> str:
        """An abstract class (one with subclasses) stays as it is: its subclass is only taken with evidence."""
        return cls
