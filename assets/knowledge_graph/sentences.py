"""Relations (and literal attributes) from English sentences: spaCy dependency paths between typed mentions,
classified zero-shot against the ontology's relations, domain/range filtered.

For every pair of mentions in a sentence the words on the dependency path between them form the predicate
('deployed on', 'pulls ... from', 'who maintain', 'is on'); coordinated mentions ('X and Y are maintained by T')
and relative clauses ('X, which sits on host Y') fall out of the path itself. The predicate is scored against
every relation whose domain/range fit (scoring.py). Direction: a forward description reads 'source PRED
target', an inverse one 'target PRED source'; a passive predicate against an active label flips it. Negated,
hypothetical and past statements ('no longer', 'until now', 'moved from', 'used to') yield nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from assets.knowledge_graph.mentions import Mention
from assets.knowledge_graph.scoring import RelationScorer, is_passive_label
from resources.ontology import Ontology

MAX_PATH_WORDS = 4
THRESHOLD_SINGLE = 0.34  # only one relation fits the two classes: is there a relation at all?
THRESHOLD_MULTI = 0.42  # several fit: the best must be clear
UNTYPED_THRESHOLD = 0.55  # one end untyped: its class comes from the relation, so be sure
MARGIN = 0.04
PAST_CUES = {"previously", "formerly", "until", "originally", "no longer", "anymore", "any more", "used to",
             "decommissioned", "retired", "earlier", "former", "legacy", "old", "was moved", "were moved"}
CHANGE_VERBS = {"move", "migrate", "transfer", "switch", "take", "hand", "relocate", "replace", "shift"}
MODALS = {"would", "could", "might", "may", "should", "will", "shall", "wo", "ca"}
_TRANSPARENT_DEPS = {"conj", "appos", "cc", "punct", "det", "compound", "amod", "poss", "nummod", "prep_skip"}
_PRONOUNS = {"it", "they", "this", "them"}


@dataclass
class SentenceRelation:
    source: Mention
    target: Mention
    type: str
    score: float
    sentence: str
    predicate: str


def _token_span_map(mentions: list[Mention]) -> dict[int, Mention]:
    owner = {}
    for m in mentions:
        for i in range(m.start, m.end):
            owner[i] = m
    return owner


def _root(doc, mention: Mention):
    return doc[mention.start:mention.end].root


def _path(a, b):
    """Tokens from a up to the lowest common ancestor and down to b (both included)."""
    up = [a, *a.ancestors]
    down = [b, *b.ancestors]
    down_ids = {t.i for t in down}
    common = next((t for t in up if t.i in down_ids), None)
    if common is None:
        return None
    upward = up[: [t.i for t in up].index(common.i) + 1]
    downward = down[: [t.i for t in down].index(common.i)]
    return upward + list(reversed(downward))


def _clause_flags(tokens) -> tuple[bool, bool, bool]:
    """(negated, hypothetical, passive) of the verbs on a path."""
    negated = hypothetical = passive = False
    for token in tokens:
        for child in token.children:
            if child.dep_ == "neg" or child.lower_ in ("never", "no"):
                negated = True
            if child.dep_ == "aux" and child.lower_ in MODALS:
                hypothetical = True
            if child.dep_ in ("auxpass", "agent"):
                passive = True
            if child.dep_ == "mark" and child.lower_ in ("if", "unless", "whether"):
                hypothetical = True
        if token.dep_ == "agent":
            passive = True
    return negated, hypothetical, passive


def _past(sentence_text: str, tokens) -> bool:
    """A statement about how things were ('until now', 'used to', 'moved from X')."""
    lowered = " " + sentence_text.lower() + " "
    if any(f" {cue} " in lowered for cue in PAST_CUES):
        return True
    for token in tokens:
        if token.lemma_.lower() in CHANGE_VERBS and any(c.lower_ == "from" for c in token.children):
            return True
    return False


def _from_of_change(path_tokens) -> bool:
    """The 'from' side of a change ('moved away from app-node-4', 'takes over from Payments Platform')."""
    for token in path_tokens:
        if token.lower_ in ("from", "away") and token.head.lemma_.lower() in CHANGE_VERBS | {"over"}:
            return True
        if token.lower_ == "from" and token.head.dep_ == "prt":
            return True
    return False


def predicate_of(doc, a: Mention, b: Mention, owner: dict[int, Mention]):
    """(predicate words, path tokens, blocked) for the pair, or None when no usable path joins them."""
    path = _path(_root(doc, a), _root(doc, b))
    if path is None or len(path) < 2:
        return None
    interior = path[1:-1]
    words, blocked = [], False
    for token in interior:
        other = owner.get(token.i)
        if other is not None and other is not a and other is not b:
            # passing through another mention: only coordination/apposition keeps the pair related
            if token.dep_ in ("conj", "appos") or any(c.dep_ in ("conj", "appos") and owner.get(c.i) in (a, b)
                                                      for c in token.children):
                continue
            blocked = True
            break
        if other is a or other is b:
            continue
        if token.dep_ in ("conj", "appos", "cc", "punct", "det") and token.pos_ in ("PROPN", "NOUN", "PUNCT", "CCONJ", "DET"):
            continue
        words.append(token)
    if blocked:
        return None
    # particles and 'by' agents hang off the verbs
    extra = [c for t in words for c in t.children if c.dep_ in ("prt",) and c not in words]
    tokens = sorted(words + extra, key=lambda t: t.i)
    content = [t for t in tokens if t.pos_ not in ("DET", "PUNCT", "PRON") or t.lower_ in ("who", "which", "that")]
    if not content or len([t for t in content if t.pos_ not in ("ADP", "PART", "AUX", "PRON")]) > MAX_PATH_WORDS:
        if not (content and all(t.pos_ in ("ADP", "AUX") for t in content)):
            return None
    phrase = " ".join(t.lower_ for t in content if t.lower_ not in ("who", "which", "that"))
    if not phrase.strip():
        return None
    return phrase, path


def classify(scorer: RelationScorer, ontology: Ontology, phrase: str, passive: bool,
             first_label: str | None, second_label: str | None):
    """Best (relation, first_is_source, score) for 'FIRST phrase SECOND', or None.

    Similarity says which relation; voice says which way: a passive predicate against a passive label ('is
    maintained by' / 'managed by') or an active one against an active label keeps the sentence order, a mismatch
    ('maintains' / 'managed by') reverses it, and an inverse hint that fits better than the forward words
    ('serves' for depends on) reverses it again. Where domain/range allow one direction only, they decide."""
    passive = passive or phrase.split()[-1:] == ["by"]
    scored = []
    for name, rel in ontology.relations.items():
        forward, inverse = scorer.score(phrase, name)
        similarity = max(forward, inverse)
        preferred = passive == is_passive_label(rel.label)
        if inverse > forward + 0.05:
            preferred = not preferred
        for first_is_source in (True, False):
            src, tgt = (first_label, second_label) if first_is_source else (second_label, first_label)
            if src is not None and not ontology.fits(src, rel.domains):
                continue
            if tgt is not None and not ontology.fits(tgt, rel.ranges):
                continue
            scored.append((similarity, first_is_source == preferred, name, first_is_source))
    if not scored:
        return None
    scored.sort(reverse=True)
    similarity, _, best, first_is_source = scored[0]
    fitting = {name for _, _, name, _ in scored}
    untyped = first_label is None or second_label is None
    threshold = UNTYPED_THRESHOLD if untyped else (THRESHOLD_SINGLE if len(fitting) == 1 else THRESHOLD_MULTI)
    if similarity < threshold:
        return None
    rival = next((s for s, _, name, _ in scored if name != best), None)
    if rival is not None and similarity - rival < MARGIN:
        return None
    return best, first_is_source, similarity


def _antecedents(doc, sent, mentions: list[Mention]) -> dict[int, Mention]:
    """Pronoun token index -> the mention it most likely refers to (an earlier subject in the chunk)."""
    out = {}
    earlier = sorted((m for m in mentions if m.end <= sent.start), key=lambda m: m.start)
    if not earlier:
        return out
    subjects = [m for m in earlier if _root(doc, m).dep_ in ("nsubj", "nsubjpass")]
    antecedent = (subjects or earlier)[-1]
    if subjects and earlier[-1].start > subjects[-1].start and earlier[-1].start >= max(
            (s.start for s in doc.sents if s.start <= earlier[-1].start), default=0) and not any(
            m.start > subjects[-1].end for m in subjects):
        antecedent = subjects[-1]
    for token in sent:
        if token.lower_ in _PRONOUNS and token.pos_ == "PRON" and token.dep_ in ("nsubj", "nsubjpass"):
            out[token.i] = antecedent
    return out


def sentence_relations(doc, mentions: list[Mention], ontology: Ontology, scorer: RelationScorer) -> list[SentenceRelation]:
    """Relations between the (typed or untyped) mentions of one chunk's Doc, sentence by sentence."""
    found: list[SentenceRelation] = []
    for sent in doc.sents:
        in_sent = [m for m in mentions if m.start >= sent.start and m.end <= sent.end]
        pronouns = _antecedents(doc, sent, mentions)
        proxies = []
        for index, antecedent in pronouns.items():
            proxy = Mention(surface=antecedent.surface, chunk_id=antecedent.chunk_id, start=index, end=index + 1,
                            label=antecedent.label)
            proxy.evidence = antecedent.evidence
            proxies.append((proxy, antecedent))
        pool = in_sent + [p for p, _ in proxies]
        resolve = {id(p): a for p, a in proxies}
        if len(pool) < 2:
            continue
        owner = _token_span_map(pool)
        pool.sort(key=lambda m: m.start)
        for i, first in enumerate(pool):
            for second in pool[i + 1:]:
                a, b = resolve.get(id(first), first), resolve.get(id(second), second)
                if a.key == b.key or (a.label is None and b.label is None):
                    continue
                result = predicate_of(doc, first, second, owner)
                if result is None:
                    continue
                phrase, path = result
                negated, hypothetical, passive = _clause_flags(path)
                if negated or hypothetical or _past(sent.text, path) or _from_of_change(path):
                    continue
                chosen = classify(scorer, ontology, phrase, passive, a.label, b.label)
                if chosen is None:
                    continue
                rel, first_is_source, score = chosen
                source, target = (a, b) if first_is_source else (b, a)
                found.append(SentenceRelation(source, target, rel, score, sent.text.strip(), phrase))
    return found


# ---------------------------------------------------------------------------------------------- attributes

_VALUE = re.compile(r"^(?:v?\d+(?:[.,]\d+)*[a-z]*|\d{4})$", re.IGNORECASE)


def normalize_value(text: str, numeric: bool) -> str | None:
    """'3,200 m' -> '3200' for numeric properties; other values trimmed. None when a number is wanted but absent."""
    text = text.strip().strip(".,;")
    if not numeric:
        return text or None
    match = re.search(r"-?\d[\d,]*(?:\.\d+)?", text)
    if not match:
        return None
    number = match.group(0).replace(",", "")
    return number[:-2] if number.endswith(".0") else number


def sentence_attributes(doc, mentions: list[Mention], ontology: Ontology, scorer: RelationScorer) -> list[tuple]:
    """(mention, attribute, value, sentence) for values next to words that name a datatype property."""
    if not ontology.attributes:
        return []
    out = []
    owner = _token_span_map(mentions)
    for sent in doc.sents:
        in_sent = [m for m in mentions if m.start >= sent.start and m.end <= sent.end and m.label]
        if not in_sent:
            continue
        for token in sent:
            if token.i in owner or not (token.like_num or _VALUE.match(token.text)):
                continue
            context = [t for t in doc[max(sent.start, token.i - 4):token.i] if not t.is_punct and t.i not in owner]
            context += [t for t in doc[token.i + 1:min(sent.end, token.i + 3)] if t.pos_ in ("NOUN", "ADJ") and t.i not in owner]
            words = " ".join(t.lower_ for t in context if not t.like_num)
            if not words:
                continue
            nearest = min(in_sent, key=lambda m: abs(m.start - token.i))
            attr, score = scorer.best_attribute(words, nearest.label, threshold=0.5)
            if attr is None:
                continue
            value = normalize_value(doc[token.i:token.i + 1].text, ontology.attributes[attr].numeric)
            if value:
                out.append((nearest, attr, value, sent.text.strip()))
    return out
