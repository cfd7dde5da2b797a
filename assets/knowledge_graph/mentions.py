"""Entity mentions in English text: names found by shape, context and the ontology, typed from evidence.

A mention is a candidate name in one chunk. Its class comes from evidence of several strengths, collected for
the whole document before any relation is classified:

    known       a known individual of the ontology (or one of its aliases)
    pattern     a kg:namePattern hint matched the name
    keyword     a class word next to the name ("the server X", "X database", "Platform Team", "X (a database)",
                "X is a database"), or inside an identifier ("pg-node-1": node, "vault-db": db)
    table       the name sits in a table column or key-value field whose header names a class
    corpus      another document of the run typed the name in its tables or records (corpus.py)
    ner         spaCy's NER label, mapped to the classes whose labels/comments describe it (zero-shot)
    relation    the name was the argument of a confidently classified relation (domain/range say the class)
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache

from assets.junk import is_code_line
from assets.knowledge_graph.schema import extraction_schema
from resources.ontology import Ontology, normalize_name
from resources.ontology_loading import load_ontology

# Hyphen/underscore/dot-joined identifiers (srv-db-01, billing-db, app_node_3) that spaCy's tokenizer splits apart.
IDENT = re.compile(r"(?<![A-Za-z0-9_.-])[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)+(?![A-Za-z0-9_-])")  # ASCII bounds:
# 'srv-app-01에서' holds the identifier 'srv-app-01' followed by a Korean particle
HANGUL = re.compile(r"[\uac00-\ud7a3]")
_FILLER = {"the", "a", "an", "its", "their", "our", "this", "that", "these", "those", "both", "each", "every", "all",
           "new", "old", "main", "primary", "internal", "external", "existing", "shared", "same", "other"}
EVIDENCE_WEIGHT = {"known": 10.0, "pattern": 6.0, "keyword": 4.0, "table": 4.0, "header": 3.0, "corpus": 3.0,
                   "inner": 2.0, "ner": 1.0, "relation": 1.5}
INTRINSIC_EVIDENCE = {"known", "pattern", "inner"}
GUESS_EVIDENCE = {"ner", "relation"}  # evidence that guesses a class; everything else reads it from the text
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
_NAMING_WORDS = {"called", "named", "titled", "entitled", "dubbed", "known"}
_VALUE_ENTS = {"DATE", "TIME", "MONEY", "PERCENT", "CARDINAL", "ORDINAL", "QUANTITY"}
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
    class_words: set[int] = field(default_factory=set)  # tokens of class words that introduce it ('the server')
    guessed: bool = False  # its document-level class rests only on guesses (NER, a relation read earlier)

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
                    retokenizer.merge(span)
        return doc


class _LineSentences:
    """Rule-based sentence boundaries, set before the parser: after . ! ? and at every new line (chat lines, list
    items, table rows), and nowhere else — the statistical parser splits at names that start in lower case
    ('... Storefront Web. catalog-db belongs to ...' became three sentences)."""

    def __call__(self, doc):
        for token in doc[1:]:
            previous = doc[token.i - 1]
            token.is_sent_start = bool(previous.text in (".", "!", "?") or "\n" in previous.whitespace_
                                       or (previous.is_space and "\n" in previous.text))
        return doc


_ADJECTIVAL_PARTS = re.compile(r"(ing|ed|ly|ible|able|ive|ous|ful|less|al)$|^(only|end|time|side|wide|like|free|up|in|off|"
                               r"out|level|based|term|party|premise|friendly|safe|aware|scale|grade|class|to|by|new|old)s?$")


def is_identifier(text: str) -> bool:
    """'app-node-3', 'payments-gateway', 'srv_db_01' name things; 'customer-facing', 'read-only' describe them."""
    if not IDENT.fullmatch(text):
        return False
    if re.search(r"\d|_", text):
        return True
    return not _ADJECTIVAL_PARTS.search(text.lower().split("-")[-1])


def mask_identifiers(text: str) -> str:
    """Identifiers replaced by a capitalised placeholder of the same length ('app-node-3' -> 'Xxxxxxxxxx'): the
    tagger and parser, trained on prose, then treat them as the proper nouns they are instead of verbs or
    adjectives. Offsets stay the same, so names are read back from the original text."""
    return IDENT.sub(lambda m: "X" + "x" * (len(m.group(0)) - 1) if is_identifier(m.group(0)) else m.group(0), text)


def parse_english(texts: list[str]) -> list:
    """spaCy Docs of the texts, identifiers masked for the parser; doc.user_data['original'] keeps the text."""
    nlp = english_pipeline()
    docs = list(nlp.pipe([mask_identifiers(t) for t in texts], batch_size=32))
    for doc, text in zip(docs, texts):
        doc.user_data["original"] = text
    return docs


def doc_original(doc) -> str:
    """The text a Doc was parsed from, identifiers unmasked (doc.text is rebuilt from every token on each access:
    never evaluate it per token)."""
    text = doc.user_data.get("original")
    return doc.text if text is None else text


def original_text(doc, start: int, end: int) -> str:
    """The original words of tokens start..end (identifiers unmasked)."""
    if start >= end:
        return ""
    text = doc_original(doc)
    return text[doc[start].idx: doc[end - 1].idx + len(doc[end - 1].text)]


def token_text(token) -> str:
    return original_text(token.doc, token.i, token.i + 1)


def prose(text: str) -> str:
    """Text as the English pipeline reads it: a wrapped line is joined to the line before; a line that starts a
    new item (bullet, number, bracket, table row) or follows a line ending in . : ! ? stays on its own. Lines of
    program text (assets.junk.is_code_line) are left out: they state no fact of any ontology."""
    lines = ["" if is_code_line(line) else line for line in text.split("\n")]
    out = [lines[0]]
    for line in lines[1:]:
        previous = out[-1].rstrip()
        stripped = line.strip()
        new_item = re.match(r"^([-*•>|\[(#]|\d+[.)]\s|[A-Z][\w .-]{0,30}:\s)", stripped) is not None
        ends = previous.endswith((".", ":", "!", "?", ";")) or not previous.strip()
        short_previous = len(previous) < 40 and stripped[:1].isupper()
        if stripped and not new_item and not ends and not short_previous:
            out[-1] = previous + " " + stripped
        else:
            out.append(line)
    return "\n".join(out)


def _register_merger():
    from spacy.language import Language

    if not Language.has_factory("kg_identifier_merger"):
        @Language.factory("kg_identifier_merger")
        def make_identifier_merger(nlp, name):  # noqa: ARG001
            return _IdentifierMerger()
    if not Language.has_factory("kg_line_sentences"):
        @Language.factory("kg_line_sentences")
        def make_line_sentences(nlp, name):  # noqa: ARG001
            return _LineSentences()


@lru_cache(maxsize=2)
def english_pipeline():
    """en_core_web_sm with identifier merging (one pipeline for every ontology: typing happens afterwards)."""
    import spacy

    _register_merger()
    nlp = spacy.load("en_core_web_sm")
    nlp.add_pipe("kg_identifier_merger", first=True)
    nlp.add_pipe("kg_line_sentences", after="kg_identifier_merger")
    return nlp


# ---------------------------------------------------------------------------------------------- lexicon

class ClassLexicon:
    """Which class a word or name points to: class keywords (labels, altLabels, local-name words, any language),
    kg:namePattern hints, known individuals, and a zero-shot map from spaCy NER labels to classes."""

    def __init__(self, ontology: Ontology):
        self.ontology = ontology
        self.schema = extraction_schema(ontology)
        self.keyword_classes: dict[str, set[str]] = defaultdict(set)
        for cls in self.schema.classes.values():
            for word in (*cls.keywords, *cls.plural_keywords):  # plural: "apps", "hosts"
                self.keyword_classes[word.lower()].add(cls.id)
        self.max_keyword_words = max((len(k.split()) for k in self.keyword_classes), default=1)
        self.patterns = [(re.compile(p), c.name) for c in ontology.classes.values() for p in c.name_patterns]
        self.known: dict[str, tuple[str, str]] = {}  # key -> (class, canonical name)
        for known in self.schema.known:
            for form in known.forms:
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
        from assets.knowledge_graph.embedding import embed

        classes = [c for c in self.ontology.classes.values() if c.name not in self.abstract_roots()]
        if not classes:
            return {}
        ner_names = list(NER_DESCRIPTIONS)
        ner_vecs = embed([NER_DESCRIPTIONS[n] for n in ner_names])
        cls_vecs = embed([self.schema.classes[c.name].description for c in classes])
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
        # the head says the class: 'Floor Apps Team' is a team; a word before it naming another class ('Apps')
        # is part of the name, one naming the same class ('payments api service') is not
        while len(words) > 1 and self.classes_for_word(words[-1]) and (
                not found or self.classes_for_word(words[-1]) <= found):
            found |= self.classes_for_word(words[-1])
            words = words[:-1]
        # a leading class word only introduces an identifier ('server srv-01', 'Team Phoenix' is a name)
        while len(words) == 2 and self.classes_for_word(words[0]) and (IDENT.fullmatch(words[1]) or
                                                                       re.search(r"\d", words[1])):
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
    text = token_text(token)
    if HANGUL.search(text):
        return False  # Korean text is read by the Korean layer
    if text != token.text and re.search(r"\d|_|[A-Z]", text):
        return True  # a masked identifier shaped like a name (srv-db-01, Envoy_Proxy)
    if token.ent_type_ in _VALUE_ENTS and not re.fullmatch(r"[A-Z][a-z]{2,}\w*\d\w*", text):
        return False  # a value ('2024', 'Q3'), not a capitalised word with digits ('App0309', which NER calls a DATE)
    if text[:1].islower() and not IDENT.fullmatch(text) and not re.search(r"\d|[A-Z]", text):
        return False  # 'fyi', 'mina': a lower-case word names something only when shaped like an identifier
    if IDENT.fullmatch(text):
        # 'customer-facing', 'on-premise', 'read-only' modify a noun; 'search-indexer is running' names a thing
        modifier = token.dep_ in ("amod", "advmod") and not re.search(r"\d", text) and token.head.pos_ == "NOUN" or (
            token.dep_ == "compound" and token.head.pos_ == "NOUN" and token.head.text.islower())
        return is_identifier(text) and (bool(re.search(r"\d|[A-Z]", text)) or not modifier)
    if token.is_stop or token.is_punct or token.like_num or len(text) < 2:
        return False
    if text.lower() in _NOT_NAMES:
        return False
    first_word = next((t.i for t in token.sent if t.is_alpha), token.sent.start)
    if text[0].isupper() and token.i > first_word:
        return True
    if token.pos_ == "PROPN" and (token.i > first_word or token.dep_ not in ("ROOT",)):
        return True
    # CamelCase / mixed-case single words (PaymentsGateway, iOS) and words with digits (web01)
    return bool(re.search(r"[a-z][A-Z]|[A-Za-z]\d|\d[A-Za-z]", text))


def _name_spans(doc):
    """Maximal runs of name-like tokens (proper nouns, identifiers), split at identifiers; a number right after a
    capitalised name belongs to it ('Boeing 737', 'Runway 33')."""
    spans, start = [], None
    for token in doc:
        if start is not None and token.like_num and doc[token.i - 1].text[:1].isupper() and \
                not IDENT.fullmatch(token_text(doc[token.i - 1])):
            continue
        if start is None and token.text[:1].isupper() and token.i + 1 < len(doc) and \
                doc[token.i + 1].pos_ == "PROPN" and _is_name_token(doc[token.i + 1]) and not token.is_stop \
                and token_text(doc[token.i + 1]) == doc[token.i + 1].text:  # not 'Running ledger-db on ...'
            start = token.i  # 'Orders API ...': a capitalised first word before a proper noun
            continue
        model_after_brand = start is not None and token_text(token)[:1].isupper() and \
            doc[token.i - 1].text[:1].isupper() and not IDENT.fullmatch(token_text(doc[token.i - 1]))
        if _is_name_token(token) and (model_after_brand or not (start is not None and (
                IDENT.fullmatch(token_text(token)) or IDENT.fullmatch(token_text(doc[token.i - 1]))))):
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
    return _title_spans(doc, [(_designation_start(doc, start, end), end) for start, end in spans])


def _capitalised_word(token) -> bool:
    return token.is_alpha and token.text[:1].isupper() and token_text(token) == token.text


def _title_spans(doc, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Titles keep their small words: a capitalised function word after 'of' belongs to the name after it
    ('Year of No Light'), and 'of' between two capitalised words joins them into one name ('Bank of America',
    'University of Oslo'; the first may open the sentence) unless either is a person's name."""
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if start > 1 and doc[start - 1].is_stop and _capitalised_word(doc[start - 1]) and \
                doc[start - 2].text == "of" and doc[start - 1].lower_ not in ("the", "a", "an") and \
                not IDENT.fullmatch(token_text(doc[start])):
            start -= 1
        left = start - 2  # the word before 'of'
        if left >= 0 and doc[start - 1].text == "of" and _capitalised_word(doc[left]) and \
                _capitalised_word(doc[start]) and "PERSON" not in (doc[left].ent_type_, doc[start].ent_type_):
            if merged and merged[-1][1] == left + 1:
                merged[-1] = (merged[-1][0], end)
                continue
            if left == doc[left].sent.start and not doc[left].is_stop and doc[left].pos_ in ("PROPN", "NOUN") \
                    and not (merged and merged[-1][1] > left):
                start = left  # 'Year of No Light produced ...': the title's first word opens the sentence
        merged.append((start, end))
    return merged


def _designation_start(doc, start: int, end: int) -> int:
    """'(19255) 1994 VK8', '2001 Mars Odyssey': a whole number of three or more digits modifying the name right
    before it is part of the designation, with a catalogue number in parentheses before that; a count ('3 Airbus')
    or a measure ('4.2 AU') is not."""
    first = start
    while first > 0 and doc[first - 1].text.isdigit() and len(doc[first - 1].text) >= 3 and \
            (doc[first - 1].dep_ == "meta" or doc[first - 1].dep_ in ("nummod", "compound") and
             start <= doc[first - 1].head.i < end):
        first -= 1
    if first != start and first >= 3 and doc[first - 1].text == ")" and doc[first - 3].text == "(" and \
            doc[first - 2].like_num:
        first -= 3
    return first


def _word_classes(lexicon: ClassLexicon, token) -> set[str]:
    return lexicon.classes_for_word(token.lower_) | lexicon.classes_for_word(token.lemma_.lower())


def _context_classes(doc, start: int, end: int, lexicon: ClassLexicon) -> tuple[set[str], set[int]]:
    """Class words right before ('the server X', 'team X') or after ('X database', 'X service') a name, in a
    parenthesis after it ('X (MySQL database)') or as the copula's attribute ('X is a database'); with the
    indices of the class words next to the name (they stand for the name in the parse)."""
    found: set[str] = set()
    owned: set[int] = set()
    before = start - 1
    while before >= 0 and doc[before].lower_ in _FILLER:
        before -= 1
    if before >= 0 and doc[before].pos_ in ("NOUN", "PROPN") and before >= doc[start].sent.start:
        classes = _word_classes(lexicon, doc[before])
        if classes:
            found |= classes
            owned.add(before)
    if end < len(doc) and doc[end].pos_ in ("NOUN", "PROPN") and not _is_name_token(doc[end]) \
            and doc[end].dep_ not in ("compound", "amod"):  # 'the PostgreSQL database cluster' is a cluster
        classes = _word_classes(lexicon, doc[end])
        if classes:
            found |= classes
            owned.add(end)
    # a class word that names what follows: "an album called Nord", "a service named ledger", "a band known as X"
    naming = start - 2 if start >= 2 and doc[start - 1].lower_ == "as" and doc[start - 2].lower_ == "known" \
        else start - 1
    if naming >= 1 and doc[naming].lower_ in _NAMING_WORDS and doc[naming - 1].pos_ in ("NOUN", "PROPN") \
            and naming - 1 >= doc[start].sent.start:
        found |= _word_classes(lexicon, doc[naming - 1])
    if end < len(doc) and doc[end].text == "(":
        close = next((t.i for t in doc[end:min(len(doc), end + 12)] if t.text == ")"), None)
        if close is not None:
            for token in doc[end + 1:close]:
                found |= _word_classes(lexicon, token)
    head = doc[end - 1]
    # apposition / copula: "X, a PostgreSQL database", "X is a database"
    for token in head.children:
        if token.dep_ == "appos":
            found |= _word_classes(lexicon, token)
    if head.dep_ in ("nsubj", "nsubjpass") and head.head.lemma_ == "be":
        for token in head.head.children:
            if token.dep_ == "attr" and not _is_name_token(token):
                found |= _word_classes(lexicon, token)
    if head.dep_ == "appos" and not _is_name_token(head.head):
        found |= _word_classes(lexicon, head.head)
    return found, owned


def find_mentions(doc, chunk_id: str, lexicon: ClassLexicon) -> list[Mention]:
    """Candidate names of one chunk with the typing evidence the text itself gives."""
    ner = {}
    for ent in doc.ents:
        for i in range(ent.start, ent.end):
            ner[i] = ent.label_
    mentions = []
    for start, end in _name_spans(doc):
        surface = original_text(doc, start, end).strip()
        if not surface or surface.lower() in _NOT_NAMES or not re.search(r"[A-Za-z0-9\uac00-\ud7a3]", surface):
            continue
        if start > 1 and doc[start - 1].text == "(" and token_text(doc[start]) == doc[start].text and \
                _is_name_token(doc[start - 2]) and normalize_name(surface) not in lexicon.known:
            continue  # 'catalog-db (MySQL, on pg-node-2)': what the name is, not another thing
        if surface.islower() and not IDENT.fullmatch(surface) and not re.search(r"\d", surface) and \
                normalize_name(surface) not in lexicon.known:
            continue  # 'mina', 'joon': lower-case words are names only when they are identifiers
        mention = Mention(surface=surface, chunk_id=chunk_id, start=start, end=end)
        name, inner = lexicon.strip_class_words(surface)
        known = lexicon.known.get(normalize_name(surface)) or lexicon.known.get(normalize_name(name))
        if known:
            mention.evidence.append((known[0], "known"))
        pattern = lexicon.pattern_class(surface)
        if pattern:
            mention.evidence.append((pattern, "pattern"))
        head_word = surface.split()[-1].lower()
        plural_head = head_word.endswith("s") and head_word[:-1] in lexicon.keyword_classes
        for cls in inner:
            # "Platform Team", "billing database"; a plural head ("Regional Airports") names an organisation of
            # them, not one of them: weak evidence
            mention.evidence.append((cls, "ner" if plural_head and len(surface.split()) > 1 else "keyword"))
        context, mention.class_words = _context_classes(doc, start, end, lexicon)
        for cls in context:
            mention.evidence.append((cls, "keyword"))
        for cls in lexicon.classes_in_identifier(surface):
            mention.evidence.append((cls, "inner"))
        labels = Counter(ner[i] for i in range(start, end) if i in ner and token_text(doc[i]) == doc[i].text)
        if labels:
            for cls in lexicon.ner_classes.get(labels.most_common(1)[0][0], []):
                mention.evidence.append((cls, "ner"))
        mentions.append(mention)
    taken = {i for m in mentions for i in range(m.start, m.end)}
    for token in doc:
        # 'the checkout service', 'the payments team': a class word with a noun before it names one thing
        if token.tag_ != "NN" or token.i in taken or not token.text.islower():
            continue
        classes = lexicon.classes_for_word(token.lower_)
        modifiers = [c for c in token.lefts if c.dep_ == "compound" and c.pos_ in ("NOUN", "PROPN") and c.i not in taken]
        if not classes or not modifiers or any(c.dep_ == "appos" for c in token.children) or any(
                c.lower_ in ("a", "an", "any", "every", "each", "some") for c in token.lefts):
            continue
        start = min(c.i for c in modifiers)
        if any(doc[i].pos_ not in ("NOUN", "PROPN") for i in range(start, token.i)):
            continue
        mention = Mention(surface=original_text(doc, start, token.i + 1), chunk_id=chunk_id, start=start, end=token.i + 1)
        mention.evidence.extend((cls, "keyword") for cls in classes)
        mentions.append(mention)
    mentions.sort(key=lambda m: m.start)
    return mentions


class Gazetteer:
    """The names a document typed anywhere, found bare, lower-case or differently cased in every chunk: one
    compiled pattern per document (whole words, longest name first), matched on the original text."""

    def __init__(self, names: dict[str, str]):
        surfaces = sorted(set(names.values()), key=lambda n: (-len(n), n))
        self.pattern = re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(n) for n in surfaces) + r")(?![\w-])",
                                  re.IGNORECASE) if surfaces else None

    def mentions(self, doc, chunk_id: str, taken: list[Mention]) -> list[Mention]:
        if self.pattern is None:
            return []
        text = doc_original(doc)
        occupied = {i for m in taken for i in range(m.start, m.end)}
        found = []
        for match in self.pattern.finditer(text):
            span = doc.char_span(match.start(), match.end(), alignment_mode="expand")
            if span is None or any(i in occupied for i in range(span.start, span.end)):
                continue
            found.append(Mention(surface=match.group(0), chunk_id=chunk_id, start=span.start, end=span.end))
            occupied.update(range(span.start, span.end))
        return found


def repeated_terms(docs, lexicon: "ClassLexicon", min_count: int = 2) -> dict[str, str]:
    """Lower-case names a document keeps using ('the bed board', 'the order router'): a definite noun phrase of a
    compound and its head noun, said at least min_count times, whose head is no class word. key -> surface."""
    counts: Counter = Counter()
    surfaces: dict[str, str] = {}
    for doc in docs:
        for chunk in doc.noun_chunks:
            tokens = [t for t in chunk if t.dep_ != "det" and not t.is_punct]
            if not chunk or chunk[0].lower_ not in ("the", "this", "our") or not 2 <= len(tokens) <= 4:
                continue
            head = tokens[-1]
            if (head.pos_ != "NOUN" or any(t.dep_ != "compound" for t in tokens[:-1])
                    or any(not t.is_lower or not t.is_alpha for t in tokens) or lexicon.classes_for_word(head.lower_)):
                continue
            key = " ".join(t.lower_ for t in tokens)
            counts[key] += 1
            surfaces.setdefault(key, " ".join(t.text for t in tokens))
    return {key: surfaces[key] for key, n in counts.items() if n >= min_count}


# ---------------------------------------------------------------------------------------------- typing

class TypeVotes:
    """Document-level class votes per name key; the decided class is the best-supported one, refined to the
    most specific compatible class that has support, and never an abstract root."""

    def __init__(self, ontology: Ontology, lexicon: ClassLexicon):
        self.ontology = ontology
        self.lexicon = lexicon
        self.votes: dict[str, Counter] = defaultdict(Counter)
        self.roots = lexicon.abstract_roots()
        self._intrinsic: set[tuple[str, str, str]] = set()
        self._kinds: dict[str, set[str]] = defaultdict(set)  # name key -> kinds of evidence it has

    def add(self, key: str, cls: str, kind: str, weight: float = 1.0) -> None:
        """One piece of evidence; what a name says by itself (known, pattern, a class word inside it) counts once
        per name, what its context says counts per occurrence."""
        if not key or cls not in self.ontology.classes or cls in self.roots:
            return
        if kind in INTRINSIC_EVIDENCE:
            if (key, cls, kind) in self._intrinsic:
                return
            self._intrinsic.add((key, cls, kind))
        self.votes[key][cls] += EVIDENCE_WEIGHT[kind] * weight
        self._kinds[key].add(kind)

    def guessed(self, key: str) -> bool:
        """Whether the name's class rests only on guesses: NER, or a relation read in an earlier pass. Two such
        ends joined by a loose predicate are how text outside the ontology's domain ('SDK for Python') turns into
        facts."""
        return bool(self._kinds.get(key)) and self._kinds[key] <= GUESS_EVIDENCE

    def add_mention(self, mention: Mention) -> None:
        ner = [cls for cls, kind in mention.evidence if kind == "ner"]
        common = self.common_ancestor(ner)
        for cls, kind in mention.evidence:
            if kind != "ner":
                self.add(mention.key, cls, kind)
        if common:
            # one NER label may stand for several classes (ORG: airline, alliance, manufacturer): one vote for
            # what they have in common (Organization), never a guess among them
            self.add(mention.key, common, "ner")

    def common_ancestor(self, classes: list[str]) -> str | None:
        if not classes:
            return None
        shared = [c for c in self.ontology.classes[classes[0]].ancestors
                  if all(self.ontology.is_a(other, c) for other in classes)]
        shared = [c for c in shared if c not in self.roots]
        return shared[0] if shared else None

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
        """A class with subclasses, reached without evidence for any of them (only a relation's domain said
        'Software'): when the ontology marks all but one subclass by name patterns (databases end in -db), a name
        that matches none of them belongs to the unmarked one; otherwise the class stays as it is."""
        children = [c for c in self.ontology.classes.values() if c.name != cls and cls in c.ancestors
                    and len(c.ancestors) == len(self.ontology.classes[cls].ancestors) + 1]
        if len(children) < 2:
            return cls
        unmarked = [c.name for c in children if not c.name_patterns]
        return unmarked[0] if len(unmarked) == 1 else cls
