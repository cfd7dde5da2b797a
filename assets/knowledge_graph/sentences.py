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
from functools import lru_cache

from assets.knowledge_graph.mentions import Mention, english_pipeline, lexicon_for, original_text
from assets.knowledge_graph.schema import extraction_schema, split_local_name, squash_name
from assets.knowledge_graph.scoring import RelationScorer, is_passive_label
from resources.ontology import Ontology

MAX_PATH_WORDS = 4
THRESHOLD_SINGLE = 0.34  # only one relation fits the two classes: is there a relation at all?
THRESHOLD_MULTI = 0.42  # several fit: the best must be clear
UNTYPED_THRESHOLD = 0.55  # one end untyped: its class comes from the relation, so be sure
BOTH_UNTYPED_THRESHOLD = 0.75
RELATION_NOUN_SCORE = 0.9  # "A's club is B": the relation named by its own noun (relation_noun)
GUESS_OVERRIDE = 0.9  # a reading this clear overrides a class that was only guessed (NER)
UNTYPED_ATTRIBUTE_THRESHOLD = 0.6  # an untyped holder takes the property's domain: the words must name it clearly
MARGIN = 0.04
GUESSED_END_THRESHOLD = 0.38  # one end's class is only guessed (NER, an earlier relation): the predicate must say more
GUESSED_ENDS_THRESHOLD = 0.9  # neither end's class is read from the text: only the relation's own words will do
OTHER_RELATION_MARGIN = 0.25  # the predicate names another relation clearly better than any that fits
PAST_CUES = {"previously", "formerly", "until now", "until recently", "until last", "originally", "no longer", "anymore",
             "any more", "no more", "used to", "decommissioned", "retired", "former", "was moved", "were moved",
             "in the past"}
# verbs that put what follows up for discussion: 'consider a standby X on Y', 'we proposed running X on Y'
PROPOSAL_VERBS = {"consider", "propose", "suggest", "discuss", "evaluate", "plan"}
CHANGE_VERBS = {"move", "migrate", "transfer", "switch", "take", "hand", "relocate", "replace", "shift"}
MODALS = {"would", "could", "might", "may", "should", "will", "shall", "wo", "ca"}
_PRONOUNS = {"it", "they", "this", "them"}


@dataclass
class SentenceRelation:
    source: Mention
    target: Mention
    type: str
    score: float
    sentence: str
    predicate: str


def _token_span_map(mentions: list[Mention], doc=None) -> dict[int, Mention]:
    """Token index -> mention, the class word a name modifies included ('the host web-07', 'Platform team')."""
    owner = {}
    for m in mentions:
        for i in range(m.start, m.end):
            owner[i] = m
        for i in m.class_words:
            owner.setdefault(i, m)
        if doc is not None and m.start >= 0:
            root = _root(doc, m)
            if root.i not in range(m.start, m.end):
                owner.setdefault(root.i, m)
    return owner


def _root(doc, mention: Mention):
    """The token that stands for the mention in the parse: its span's root, or the class word it modifies
    ('web-07' in 'the host web-07 runs ...' hangs off 'host'; 'Finance Platform' off 'team')."""
    root = doc[mention.start:mention.end].root
    head = root.head
    if root.dep_ in ("compound", "amod", "appos", "nmod", "nn") and head.i != root.i and head.pos_ == "NOUN" \
            and head.i not in range(mention.start, mention.end) and mention.label is not None \
            and _is_class_word(head, mention):
        return head
    return root


def _is_class_word(token, mention: Mention) -> bool:
    return any(kind == "keyword" for _, kind in mention.evidence) and token.text.islower()


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
    """(negated, hypothetical, passive-with-agent) of the verbs on a path."""
    negated = hypothetical = passive = False
    for token in tokens:
        if token.tag_ == "VBG" and token.dep_ in ("ROOT", "csubj", "pcomp", "dep") and not any(
                c.dep_ in ("nsubj", "nsubjpass", "aux", "auxpass") for c in token.children):
            hypothetical = True  # '- Running ledger-db on srv-ml-04. Rejected: ...' names an option, states nothing
        for child in token.children:
            if child.dep_ == "neg" or child.lower_ in ("never", "no"):
                negated = True
            if child.dep_ == "aux" and child.lower_ in MODALS:
                hypothetical = True
            if child.dep_ == "agent" and child in tokens:
                passive = True  # only a 'by' agent turns the reading round; 'is deployed on' reads forward
            if child.dep_ == "mark" and child.lower_ in ("if", "unless", "whether"):
                hypothetical = True
        if token.dep_ == "agent":
            passive = True
    if tokens:
        top = min(tokens, key=lambda t: len(list(t.ancestors)))
        if any(t.lemma_.lower() in PROPOSAL_VERBS and t.pos_ == "VERB" for t in [*tokens, *top.ancestors]):
            hypothetical = True  # 'consider a standby X on Y': an option, not a fact
    if tokens and tokens[0].sent.text.rstrip().endswith("?"):
        hypothetical = True  # 'could we run a second X on Y?' asks, states nothing
    return negated, hypothetical, passive


def _past(tokens) -> bool:
    """A statement about how things were ('until now', 'used to', 'moved from X'), within the clause that joins
    the pair (the subtree of the path's top token), so 'expect staleness until step 2 is fixed' does not count."""
    top = min(tokens, key=lambda t: len(list(t.ancestors)))
    subtree = list(top.subtree)
    lowered = " " + " ".join(t.lower_ for t in subtree) + " "
    if any(f" {cue} " in lowered for cue in PAST_CUES):
        return True
    if " until " in lowered and any(t.tag_ == "VBD" for t in tokens):
        return True  # 'Until this incident X ran on Y': a state that ended ('until step 2 is fixed' is no past)
    for token in tokens:
        if token.lemma_.lower() in CHANGE_VERBS and any(c.lower_ in ("from", "off") for c in token.children):
            return True  # 'moved from X', 'moved off X'
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
    roots = (_root(doc, a), _root(doc, b))
    for root in roots:
        if root.dep_ in ("compound", "amod") and root.head.pos_ == "NOUN" and root.head.i not in owner:
            return None  # 'hosts the PostgreSQL database cluster': the name only modifies what is related
    path = _path(*roots)
    if path is None or len(path) < 2:
        return None
    interior = path[1:-1]
    words, blocked = [], False
    for token in interior:
        other = owner.get(token.i)
        if other is not None and other is not a and other is not b:
            # passing through another mention: only coordination/apposition keeps the pair related ('X is based in
            # Aldermoor, Valdoria' relates X to Aldermoor only: the second name qualifies the first)
            if qualifies(doc, other, b) or qualifies(doc, other, a):
                return None
            on_path = {t.i for t in path}
            if token.dep_ in ("conj", "appos") or any(c.dep_ in ("conj", "appos") and c.i in on_path
                                                      for c in token.children):
                continue
            blocked = True
            break
        if other is a or other is b:
            continue
        if any(c.dep_ == "appos" and owner.get(c.i) in (a, b) for c in token.children):
            continue  # 'The storefront app, Storefront Web, queries ...': the noun the name stands beside
        if token.pos_ in ("VERB", "AUX"):
            foreign = [c for c in token.children if c.dep_ in ("nsubj", "nsubjpass") and owner.get(c.i) not in (a, b)
                       and c.lower_ not in ("who", "which", "that")
                       and not any(g.dep_ in ("appos", "conj") and owner.get(g.i) in (a, b) for g in c.subtree)
                       and not _owned_by(c, (a, b), owner)]
            if foreign:
                return None  # a clause with a subject of its own: 'T1 owns X, T2 runs the host' joins nothing
        words.append(token)
    if blocked:
        return None
    # 'X runs on Y and depends on Z': X-Z is read from the second verb alone (shared subject); Y-Z, the objects of
    # two coordinated verbs, are not related
    on_words = {t.i for t in words}
    heads = {t.head.i for t in words if t.dep_ == "conj" and t.pos_ in ("VERB", "AUX") and t.head.i in on_words}
    for head in heads:
        subjects = {c.i for c in doc[head].children if c.dep_ in ("nsubj", "nsubjpass")}
        subjects |= {g.i for i in subjects for g in doc[i].children if g.dep_ == "appos"}
        if subjects and not any(owner.get(i) in (a, b) for i in subjects):
            return None
    # two clauses, each with a subject of its own ('X is owned by T1; T2 has offered to take it over'): the names
    # of one are not related to the other's
    for token in words:
        if token.dep_ in ("conj", "parataxis", "ccomp", "advcl") and token.pos_ in ("VERB", "AUX") and token.head.i in on_words \
                and _own_subject(token) and _own_subject(token.head):
            return None
    words = [t for t in words if t.i not in heads or t.pos_ not in ("VERB", "AUX")]
    words = _without_copula_and_class_noun(words)
    # particles and 'by' agents hang off the verbs
    extra = [c for t in words for c in t.children if c.dep_ in ("prt",) and c not in words]
    tokens = sorted(words + extra, key=lambda t: t.i)
    content = [t for t in tokens if t.pos_ not in ("DET", "PUNCT", "PRON") or t.lower_ in ("who", "which", "that")]
    if not content or len([t for t in content if t.pos_ not in ("ADP", "PART", "AUX", "PRON")]) > MAX_PATH_WORDS:
        if not (content and all(t.pos_ in ("ADP", "AUX") for t in content)):
            return None
    phrase = " ".join(t.lower_ for t in content if t.lower_ not in ("who", "which", "that"))
    if not phrase.strip() or all(t.lemma_ == "be" for t in content):
        return None  # 'X is a Java service': a copula alone says what X is, not how it relates to Java
    return phrase, path


def _own_subject(verb) -> bool:
    """Whether a verb has a subject of its own that is not a pronoun (which may stand for the other clause's)."""
    return any(c.dep_ in ("nsubj", "nsubjpass") and c.pos_ != "PRON" for c in verb.children)


def _without_copula_and_class_noun(words: list) -> list:
    """'X is a low-cost airline based in Y' relates X and Y as 'based in': the noun after the copula is X itself
    once a participle or relative clause on the path describes it ('is an airport located in', 'is a service that
    depends on'); 'is a member of' keeps its noun."""
    on_path = {t.i for t in words}
    for token in words:
        if token.lemma_ != "be":
            continue
        noun = next((c for c in token.children if c.dep_ == "attr" and c.i in on_path and c.pos_ in ("NOUN", "PROPN")),
                    None)
        if noun is not None and any(c.dep_ in ("acl", "relcl") and c.i in on_path for c in noun.children):
            return [t for t in words if t.i not in (token.i, noun.i)]
    return words


QUALIFIER = ","  # the predicate of 'Aldermoor, Valdoria': the second name says where the first is
QUALIFIER_READING = "is part of"  # how it reads: containment


def qualifies(doc, first: Mention, second: Mention) -> bool:
    """'Aldermoor, Valdoria', 'Tirstrup, Denmark': a bare proper name set after another by a comma alone, no
    article, says where the first is; it does not rename it ('Storefront app, Storefront Web,' does, and so does
    'the airline, a SkyCircle member')."""
    if first.start < 0 or second.start < 0 or second.start != first.end + 1 or doc[first.end].text != ",":
        return False
    root, head = _root(doc, second), _root(doc, first)
    return (root.dep_ == "appos" and root.head.i == head.i and root.pos_ == "PROPN"
            and all(t.pos_ == "PROPN" for t in doc[second.start:second.end])
            and not any(c.dep_ == "det" for c in root.children))


def _may_be(ontology: Ontology, label: str, allowed: tuple[str, ...], guessed: bool) -> bool:
    """Whether a mention of class label may stand where allowed is expected; a guessed class (NER's Place for a
    name that may be a city or a country) may also be narrowed to one of its subclasses."""
    return ontology.fits(label, allowed) or (guessed and any(ontology.is_a(a, label) for a in allowed))


def classify(scorer: RelationScorer, ontology: Ontology, phrase: str, passive: bool,
             first_label: str | None, second_label: str | None, weak_first: bool = False, weak_second: bool = False):
    """Best (relation, first_is_source, score) for 'FIRST phrase SECOND', or None; a class that is only a guess
    (NER, an earlier relation) is dropped when the reading fails with it or runs against the voice."""
    chosen = _classify(scorer, ontology, phrase, passive, first_label, second_label, weak_first, weak_second)
    if chosen is None and (weak_first or weak_second):
        retry = _classify(scorer, ontology, phrase, passive, None if weak_first else first_label,
                          None if weak_second else second_label)
        if retry is not None and retry[2] >= GUESS_OVERRIDE:
            chosen = retry  # the predicate is unmistakable ('runs on'): the guessed class was wrong
    return chosen


def _classify(scorer: RelationScorer, ontology: Ontology, phrase: str, passive: bool,
              first_label: str | None, second_label: str | None, weak_first: bool = False, weak_second: bool = False):
    """Best (relation, first_is_source, score) for 'FIRST phrase SECOND', or None.

    Similarity says which relation; voice says which way: a passive predicate against a passive label ('is
    maintained by' / 'managed by') or an active one against an active label keeps the sentence order, a mismatch
    ('maintains' / 'managed by') reverses it, and an inverse hint that fits better than the forward words
    ('serves' for depends on) reverses it again. Where domain/range allow one direction only, they decide."""
    passive = passive or phrase.split()[-1:] == ["by"]
    scored = []
    anywhere = {}  # how well the phrase names each relation, classes aside
    for name, rel in ontology.relations.items():
        forward, inverse = scorer.score(phrase, name)
        similarity = max(forward, inverse)
        anywhere[name] = similarity
        # an inverse description that fits better ('is used by', 'hosts') already says: SECOND is the source
        preferred = False if inverse > forward + 0.05 else passive == is_passive_label(rel.label)
        for first_is_source in (True, False):
            src, tgt = (first_label, second_label) if first_is_source else (second_label, first_label)
            weak_src, weak_tgt = (weak_first, weak_second) if first_is_source else (weak_second, weak_first)
            if src is not None and not _may_be(ontology, src, rel.domains, weak_src):
                continue
            if tgt is not None and not _may_be(ontology, tgt, rel.ranges, weak_tgt):
                continue
            scored.append((similarity, first_is_source == preferred, name, first_is_source))
    if not scored:
        return None
    scored.sort(reverse=True)
    similarity, voice_ok, best, first_is_source = scored[0]
    if not voice_ok and (weak_first or weak_second):
        # the classes force the reading against the voice, but one of them is only a guess (NER): drop the guess
        retry = _classify(scorer, ontology, phrase, passive, None if weak_first else first_label,
                          None if weak_second else second_label)
        if retry is not None and retry[0] == best and retry[1] != first_is_source:
            return retry
    fitting = {name for _, _, name, _ in scored}
    untyped = first_label is None or second_label is None
    threshold = UNTYPED_THRESHOLD if untyped else (THRESHOLD_SINGLE if len(fitting) == 1 else THRESHOLD_MULTI)
    if first_label is None and second_label is None:
        threshold = BOTH_UNTYPED_THRESHOLD
    if similarity < threshold:
        return None
    rival = next((s for s, _, name, _ in scored if name != best), None)
    if rival is not None and similarity - rival < MARGIN:
        return None
    if max(anywhere.values()) > similarity + OTHER_RELATION_MARGIN:
        return None  # 'The Data Team runs on srv-x-01' says RUNS_ON, which the classes rule out: not MANAGED_BY
    return best, first_is_source, similarity


def weak_typed(mention: Mention) -> bool:
    """Typed only by NER or by an earlier relation guess."""
    return bool(mention.label) and all(kind in ("ner", "relation") for _, kind in mention.evidence)


def _role(doc, mention: Mention) -> str:
    """'subject' or 'object' of the predicate that joins it to another mention, or '' when unclear; a name with
    a relative clause takes the relative pronoun's role ('Fleet Map, which it polls' is an object)."""
    root = _root(doc, mention)
    if root.dep_ in ("nsubj", "nsubjpass"):
        return "subject"
    if root.dep_ in ("dobj", "pobj", "attr", "oprd"):
        role = "object"
    else:
        role = ""
    for child in root.children:
        if child.dep_ == "relcl":
            pronoun = next((c for c in child.children if c.lower_ in ("which", "that", "who", "whom")), None)
            if pronoun is not None:
                return "subject" if pronoun.dep_ in ("nsubj", "nsubjpass") else "object"
    return role


def _definite_reference(doc, token, earlier: list[Mention], ontology: Ontology, lexicon) -> Mention | None:
    """'The airline was founded in 1987': a definite, unmodified class word stands for the last name of a
    compatible class."""
    if lexicon is None or token.tag_ not in ("NN", "JJ") or token.dep_ not in ("nsubj", "nsubjpass", "dobj", "pobj"):
        return None
    if not any(c.dep_ == "det" and c.lower_ in ("the", "this", "that") for c in token.children) or any(
            c.dep_ in ("compound", "amod", "appos") for c in token.children):
        return None
    if token.lower_ == "latter":
        return next((m for m in reversed(earlier) if m.label), None)  # 'the latter': the last name before it
    classes = lexicon.classes_for_word(token.lemma_.lower()) | lexicon.classes_for_word(token.lower_)
    for m in reversed(earlier):
        if m.label and any(ontology.is_a(m.label, c) or ontology.is_a(c, m.label) for c in classes):
            return m
    # a short form: 'the runner' after 'the invoice runner', 'the backend' after 'Driver App Backend' (the
    # name's last word, said with a definite article)
    for m in reversed(earlier):
        words = m.surface.split()
        if m.label and len(words) > 1 and words[-1].lower() == token.lower_:
            return m
    return None


def _antecedents(doc, sent, mentions: list[Mention], ontology: Ontology | None = None,
                 lexicon=None) -> dict[int, list[Mention]]:
    """Pronoun (or definite class word) token index -> the mentions it may refer to, most likely first: the
    previous sentence's subject, its other names from the nearest, and the chunk's last subject before that."""
    out = {}
    earlier = sorted((m for m in mentions if m.end <= sent.start), key=lambda m: m.start)
    if not earlier:
        return out
    owned = {i for m in mentions for i in range(m.start, m.end)} | {i for m in mentions for i in m.class_words}
    previous_start = max((s.start for s in doc.sents if s.start <= earlier[-1].start), default=0)
    recent = [m for m in earlier if m.start >= previous_start]
    subjects = [m for m in earlier if _root(doc, m).dep_ in ("nsubj", "nsubjpass")]
    # the previous sentence's subject may itself be a definite class word ('The airline ...')
    for token in doc[previous_start:sent.start]:
        if token.dep_ in ("nsubj", "nsubjpass") and token.i not in owned:
            referent = _definite_reference(doc, token, [m for m in earlier if m.start < token.i], ontology, lexicon)
            if referent is not None:
                subjects.append(referent)
                recent.insert(0, referent)
    candidates = [m for m in recent if m in subjects] + [m for m in reversed(recent) if m not in subjects]
    if subjects and subjects[-1] not in candidates:
        candidates.append(subjects[-1])
    for token in sent:
        if token.lower_ in _PRONOUNS and token.pos_ == "PRON" and token.dep_ in ("nsubj", "nsubjpass"):
            out[token.i] = [m for i, m in enumerate(candidates) if all(m is not o for o in candidates[:i])]
        elif token.i not in owned:
            referent = _definite_reference(doc, token, earlier, ontology, lexicon)
            if referent is not None:
                out[token.i] = [referent]
    return out


def _classify_pair(doc, scorer, ontology, first, second, a, b, owner):
    """[(relation, source, target, score, phrase)] for one pair of mentions (a, b stand for first, second): the
    relation the predicate names and the relation named after one end's class, where the ontology has one."""
    if qualifies(doc, first, second):
        chosen = classify(scorer, ontology, QUALIFIER_READING, False, a.label, b.label, weak_typed(a), weak_typed(b))
        if chosen is None or not chosen[1] or a.label is None or b.label is None:
            return []  # where a name is, is said by the comma: no predicate to doubt, but both classes must be known
        return [(chosen[0], a, b, chosen[2], QUALIFIER)]
    result = predicate_of(doc, first, second, owner)
    if result is None:
        return []
    phrase, path = result
    if _role(doc, second) == "subject" and _role(doc, first) != "subject":
        a, b = b, a  # read 'SUBJECT predicate OBJECT' whatever the word order
    negated, hypothetical, passive = _clause_flags(path)
    if negated or hypothetical or _past(path) or _from_of_change(path):
        return []
    named_noun = relation_noun(doc, path, ontology, first, second, owner)
    if named_noun == "past":
        return []  # "the conductor of A was B": who held it before, not who holds it
    if named_noun is not None:
        return [(named_noun[0], named_noun[1], named_noun[2], RELATION_NOUN_SCORE, phrase)]
    chosen = classify(scorer, ontology, phrase, passive, a.label, b.label, weak_typed(a), weak_typed(b))
    found = []
    if chosen is not None and chosen[2] < guessed_threshold(a, b):
        chosen = None
    if chosen is not None:
        rel, first_is_source, score = chosen
        source, target = (a, b) if first_is_source else (b, a)
        found.append((rel, source, target, score, phrase))
        # a relation named after the target's class, between the same two classes, is stated by the same clause
        named = class_named_relation(ontology, source.label, target.label)
        if named and named != rel and _typed_by_itself(target):
            found.append((named, source, target, score, phrase))
    return found


def guessed_threshold(a: Mention, b: Mention) -> float:
    """The similarity a predicate needs when the classes of its ends are only guessed (calibrated on the development
    sets and on package READMEs, text outside the infrastructure ontology: bench/kg.py prints the figures)."""
    guessed = [m.label is not None and m.guessed for m in (a, b)]
    unsure = [m.label is None or m.guessed for m in (a, b)]
    if not any(guessed):
        return 0.0
    return GUESSED_ENDS_THRESHOLD if all(unsure) else GUESSED_END_THRESHOLD


def _owned_by(noun, mentions, owner) -> bool:
    """Whether one of the mentions owns the noun: "A's club", "the manager of A" (the subject of "A's club is B" is
    A's)."""
    for child in noun.children:
        if child.dep_ == "poss" and owner.get(child.i) in mentions:
            return True
        if child.dep_ == "prep" and child.lower_ == "of" and any(
                g.dep_ == "pobj" and owner.get(g.i) in mentions for g in child.children):
            return True
    return False


def _without_relation_nouns(doc, mentions: list[Mention], ontology: Ontology) -> list[Mention]:
    """The mentions less those that are a relation's noun owned by another mention ('youth club' in "A's youth
    club is B"): a class word there says which relation, it names nothing."""
    names = relation_nouns(ontology)
    if not names:
        return mentions
    owner = _token_span_map(mentions, doc)
    kept = []
    for m in mentions:
        words = doc[m.start:m.end] if m.start >= 0 else []
        if (len(words) and squash_name(m.surface) in names and all(t.pos_ == "NOUN" for t in words)
                and _owned_by(_root(doc, m), [o for o in mentions if o is not m], owner)):
            continue
        kept.append(m)
    return kept


_RELATION_NOUNS: dict[tuple[str, str], dict[str, str]] = {}


def relation_nouns(ontology: Ontology) -> dict[str, str]:
    """A relation's name squashed to letters and digits ('youthclub', 'birthplace') -> the relation, for names that
    are nouns ('club', 'manager', 'birth place'; not 'runs on', 'managed by', 'operates aircraft'); a name two
    relations share is left out. Built once per ontology."""
    key = (str(ontology.directory), ontology.fingerprint)
    if key not in _RELATION_NOUNS:
        nlp = english_pipeline()
        found: dict[str, set[str]] = {}
        for rel_id, info in ontology.relations.items():
            for name in {info.label, split_local_name(info.local_name or rel_id)}:
                words = split_local_name(name).split()
                if not words or len(words) > 3 or not all(w.isascii() and w.isalpha() for w in words):
                    continue
                tagged = nlp(f"the {' '.join(words)} of it")
                if all(t.pos_ in ("NOUN", "PROPN", "ADJ") for t in tagged[1:len(words)]) and \
                        tagged[len(words)].pos_ == "NOUN":
                    found.setdefault(squash_name(name), set()).add(rel_id)
        _RELATION_NOUNS[key] = {name: next(iter(ids)) for name, ids in found.items() if len(ids) == 1}
    return _RELATION_NOUNS[key]


def relation_noun(doc, path, ontology: Ontology, first: Mention, second: Mention, owner):
    """(relation, source, target) when the path goes through a noun that is a relation's own name and one end
    owns it: "A's club is B", "B is A's youth club", "the manager of A is B" state club(A, B), youthclub(A, B),
    manager(A, B), as ontologies that name relations by nouns (DBpedia's) mean them. The possessor is the source.
    A noun this exact overrides classes that were only guessed (NER); a class from the name's own words must fit.
    'past' when a past copula states it ("the conductor of A was B")."""
    names = relation_nouns(ontology)
    if not names:
        return None
    for token in path[1:-1]:
        if token.pos_ not in ("NOUN", "PROPN") or token.i in owner:
            continue
        compounds = [c for c in token.children if c.dep_ == "compound" and c.i < token.i and c.i not in owner]
        candidates = [" ".join([*(c.lower_ for c in compounds), token.lower_]), token.lower_, token.lemma_.lower()]
        rel = next((names[squash_name(c)] for c in candidates if squash_name(c) in names), None)
        if rel is None:
            continue
        possessor = None
        for mention in (first, second):
            root = _root(doc, mention)
            if (root.dep_ == "poss" and root.head.i == token.i) or (
                    root.dep_ == "pobj" and root.head.lower_ == "of" and root.head.head.i == token.i):
                possessor = mention
        if possessor is None:
            return None
        other = second if possessor is first else first
        copula = token.head if token.dep_ in ("nsubj", "attr") else None
        if copula is not None and copula.lemma_ == "be" and copula.tag_ == "VBD":
            return "past"
        info = ontology.relations[rel]
        for mention, allowed in ((possessor, info.domains), (other, info.ranges)):
            if mention.label and not weak_typed(mention) and not ontology.fits(mention.label, allowed):
                return None
        return rel, possessor, other
    return None


def _typed_by_itself(mention: Mention) -> bool:
    """Whether the mention's class comes from the name or its words, not only from a relation it was read in."""
    return any(label == mention.label and kind != "relation" for label, kind in mention.evidence)


def class_named_relation(ontology: Ontology, source_label: str | None, target_label: str | None) -> str | None:
    """The one relation named after the target's class whose domain takes the source ('country': City -> Country):
    it means 'the source's <class>', so the clause that states a sibling between the two ('is in the United States'
    for isPartOf) states it too. Ontologies derived from infobox keys (DBpedia and its kind) name many so."""
    if not source_label or not target_label:
        return None
    return extraction_schema(ontology).class_named.get((source_label, target_label))


def _candidate_pairs(doc, mentions: list[Mention], ontology: Ontology):
    """(sentence text, first, second, first's readings, second's readings, token owner) for every pair of mentions
    of a sentence; a pronoun ('It runs on srv-02') stands for each of its candidate antecedents."""
    for sent in doc.sents:
        in_sent = [m for m in mentions if m.start >= sent.start and m.end <= sent.end]
        proxies = {}
        for index, candidates in _antecedents(doc, sent, mentions, ontology, lexicon_for(ontology)).items():
            proxy = Mention(surface=candidates[0].surface, chunk_id=candidates[0].chunk_id, start=index, end=index + 1)
            proxies[id(proxy)] = (proxy, candidates)
        pool = in_sent + [p for p, _ in proxies.values()]
        if len(pool) < 2:
            continue
        owner = _token_span_map(pool, doc)
        pool.sort(key=lambda m: m.start)
        text = original_text(doc, sent.start, sent.end).strip()
        for i, first in enumerate(pool):
            for second in pool[i + 1:]:
                options_a = proxies[id(first)][1] if id(first) in proxies else [first]
                options_b = proxies[id(second)][1] if id(second) in proxies else [second]
                yield text, first, second, options_a, options_b, owner


def predicate_phrases(doc, mentions: list[Mention], ontology: Ontology) -> list[str]:
    """Every predicate phrase the relation scorer will be asked about in this Doc: embedded in one batch
    beforehand, one encode call per document instead of one per phrase."""
    phrases = []
    for _, first, second, _, _, owner in _candidate_pairs(doc, mentions, ontology):
        result = predicate_of(doc, first, second, owner)
        if result is not None:
            phrases.append(result[0].lower())
    return phrases


def sentence_relations(doc, mentions: list[Mention], ontology: Ontology, scorer: RelationScorer) -> list[SentenceRelation]:
    """Relations between the (typed or untyped) mentions of one chunk's Doc, sentence by sentence. A pronoun
    ('It runs on srv-02') stands for whichever candidate antecedent reads best with the rest of the sentence."""
    found: list[SentenceRelation] = []
    mentions = _without_relation_nouns(doc, mentions, ontology)
    for text, first, second, options_a, options_b, owner in _candidate_pairs(doc, mentions, ontology):
        best = None
        for a in options_a:
            for b in options_b:
                if a.key == b.key:
                    continue
                readings = _classify_pair(doc, scorer, ontology, first, second, a, b, owner)
                if readings and (best is None or readings[0][3] > best[0][3]):
                    best = readings
        for rel, source, target, score, phrase in best or ():
            found.append(SentenceRelation(source, target, rel, score, text, phrase))
    return found


# ---------------------------------------------------------------------------------------------- attributes

_VALUE = re.compile(r"^(?:v?\d+(?:[.,]\d+)*[a-z]*|\d{4})$", re.IGNORECASE)


def normalize_value(text: str, kind: str) -> str | None:
    """A value as its property's kind (AttributeInfo.value_kind) holds it: a number without separators or unit
    ('3,200 m' -> '3200', '2.0' stays '2.0'), a year, a full date in ISO form ('31 December 2006' ->
    '2006-12-31'), other text trimmed. None when the value cannot be what the property holds (a date for a number)."""
    text = text.strip().strip(".,;")
    if kind == "date":
        return iso_date(text) or (text if re.search(r"\b\d{4}\b", text) else None)
    if kind == "year":
        match = re.search(r"\b(1\d{3}|2\d{3})\b", text)
        return match.group(1) if match else None
    if kind != "number":
        return text or None
    if iso_date(text):
        return None  # a date written out is one value, not a number: its day ('31 December 2006') is not one
    match = re.search(r"-?\d[\d,]*(?:\.\d+)?", text)
    return match.group(0).replace(",", "") if match else None


_MONTH = re.compile(r"jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec", re.IGNORECASE)


@lru_cache(maxsize=4096)
def iso_date(text: str) -> str | None:
    """A full date (day, month and year) in any common English writing, as YYYY-MM-DD; None when not one.
    Memoised: the same value is read when spans are found, when words are batched and when it is stored."""
    from dateutil import parser as date_parser

    cleaned = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", text.replace("the ", ""))
    if not re.search(r"\b\d{4}\b", cleaned) or not (
            _MONTH.search(cleaned) or re.fullmatch(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[/.]\d{1,2}[/.]\d{4}", cleaned)):
        return None
    defaults = (date_parser.parse("1111-01-01"), date_parser.parse("1112-02-02"))
    try:
        parsed = [date_parser.parse(cleaned, default=d, fuzzy=True) for d in defaults]
    except (ValueError, OverflowError):
        return None
    if parsed[0].day != parsed[1].day or parsed[0].month != parsed[1].month or parsed[0].year != parsed[1].year:
        return None  # the text lacks the day or the month
    return parsed[0].date().isoformat()


def _value_spans(doc, sent, owner) -> list[tuple[int, int, bool]]:
    """(start, end, is_code) of the values in a sentence: a date written out ('31 December 2006') is one value,
    other numbers and short upper-case codes are one token each."""
    spans, taken = [], set()
    for ent in doc.ents:
        if ent.label_ != "DATE" or ent.start < sent.start or ent.end > sent.end:
            continue
        start = ent.start
        if start > sent.start and re.fullmatch(r"\d{1,2}(?:st|nd|rd|th)?", doc[start - 1].text):
            start -= 1  # '3rd March 1998': the day is tagged apart
        if iso_date(doc[start:ent.end].text):
            spans.append((start, ent.end, False))
            taken.update(range(start, ent.end))
    for token in sent:
        if token.i in taken:
            continue
        code = token.text.isupper() and 2 <= len(token.text) <= 6 and token.text.isalnum()
        if not (token.like_num or _VALUE.match(token.text) or code):
            continue
        if token.i in owner and not code:
            continue
        spans.append((token.i, token.i + 1, code))
    return sorted(spans)


def _attribute_candidates(doc, mentions: list[Mention], ontology: Ontology):
    """(holder, value start, value end, is_code, the words scored against the properties, sentence) for every
    value of the Doc; the words lead with the holder's class when it has one."""
    owner = _token_span_map(mentions, doc)
    lexicon = lexicon_for(ontology)
    resolved: dict[int, dict[int, list[Mention]]] = {}

    def referents_in(sent) -> dict[int, list[Mention]]:
        """The sentence's pronoun and definite-reference referents, resolved once per sentence."""
        if sent.start not in resolved:
            resolved[sent.start] = _antecedents(doc, sent, mentions, ontology, lexicon)
        return resolved[sent.start]

    for sent in doc.sents:
        in_sent = [m for m in mentions if m.start >= sent.start and m.end <= sent.end]
        if not in_sent:
            # 'The airline was founded in 1987', 'It was established in 2009': the subject's referent holds it
            referents = [c[0] for i, c in referents_in(sent).items()
                         if c and doc[i].dep_ in ("nsubj", "nsubjpass") and c[0].label]
            if not referents:
                continue
            in_sent = referents[:1]
        for start, end, code in _value_spans(doc, sent, owner):
            context = [t for t in doc[max(sent.start, start - 4):start] if not t.is_punct and t.i not in owner]
            context += [t for t in doc[end:min(sent.end, end + 3)] if t.pos_ in ("NOUN", "ADJ") and t.i not in owner]
            words = " ".join(t.lower_ for t in context if not t.like_num)
            if not words:
                continue
            nearest = _clause_subject(doc, start, sent, owner, referents_in)
            if nearest is None or owner.get(start) is nearest:
                holders = [m for m in in_sent if m.start < start and owner.get(start) is not m] or in_sent
                nearest = min(holders, key=lambda m: abs(m.start - start))
            # the words the value hangs from ('founded in' 2015), beside the words around it
            variants = [words, " ".join(t.lower_ for t in reversed(_governors(doc[start], sent)))]
            if nearest.label:
                # the governing words alone too: 'established in' names founded_year better than 'airline
                # established in' does; the holder's class still filters the properties
                variants = [f"{ontology.classes[nearest.label].label.lower()} {v}" for v in variants if v] + variants[1:]
            elif not _untyped_holder(nearest):
                continue
            yield nearest, start, end, code, tuple(dict.fromkeys(v for v in variants if v)), sent


def _clause_subject(doc, start: int, sent, owner: dict[int, Mention], referents_in) -> Mention | None:
    """The name the value's clause is about: the subject of the verb it hangs from, a pronoun's or definite class
    word's referent ('It was established in 2009 by two former Pelican Air pilots': Bluefinch, not Pelican Air),
    or the noun a participle or relative clause qualifies ('Pelican Air, founded in 1987')."""
    verb = next((t for t in doc[start].ancestors if t.pos_ in ("VERB", "AUX")), None)
    if verb is None or verb.i < sent.start or verb.i >= sent.end:
        return None
    subject = next((c for c in verb.children if c.dep_ in ("nsubj", "nsubjpass")), None)
    if subject is None and verb.dep_ in ("acl", "relcl"):
        subject = verb.head
    elif subject is not None and subject.dep_ == "nsubj" and subject.tag_ == "WDT" and verb.dep_ == "relcl":
        subject = verb.head  # 'the airline, which was founded in 1987'
    if subject is None:
        return None
    if subject.i in owner:
        return owner[subject.i]
    referents = referents_in(sent).get(subject.i)
    return referents[0] if referents and referents[0].label else None


def _governors(token, sent) -> list:
    """The value's preposition and the verb or noun it hangs from ('founded in', 'length of'), nearest first."""
    out, head = [], token.head
    while head.i != token.i and head.i >= sent.start and len(out) < 2:
        out.append(head)
        if head.pos_ in ("VERB", "NOUN"):
            break
        token, head = head, head.head
    return out


def attribute_texts(doc, mentions: list[Mention], ontology: Ontology) -> list[str]:
    """The words sentence_attributes will score, for one batched encode per document."""
    if not ontology.attributes:
        return []
    return [w.lower() for _, _, _, _, variants, _ in _attribute_candidates(doc, mentions, ontology) for w in variants]


def sentence_attributes(doc, mentions: list[Mention], ontology: Ontology, scorer: RelationScorer) -> list[tuple]:
    """(mention, attribute, value, sentence, label) for values next to words that name a datatype property. A
    name nothing else typed is the holder when the words name the property clearly; it takes the property's
    domain ('(19255) 1994 VK8 has a density of 2.0': the thing with a density)."""
    if not ontology.attributes:
        return []
    out = []
    for nearest, start, end, code, variants, sent in _attribute_candidates(doc, mentions, ontology):
        threshold = 0.5 if nearest.label else UNTYPED_ATTRIBUTE_THRESHOLD
        attr, score = max((scorer.best_attribute(w, nearest.label, threshold=threshold) for w in variants),
                          key=lambda found: (found[0] is not None, found[1]))
        if not nearest.label and attr is not None and ontology.attributes[attr].value_kind == "text":
            attr = None  # numbers, years and dates show by their shape that they are its values; text does not
        if attr is None or (code and ontology.attributes[attr].numeric):
            continue
        info = ontology.attributes[attr]
        value = normalize_value(doc[start:end].text, info.value_kind)
        if value:
            out.append((nearest, attr, value, original_text(doc, sent.start, sent.end).strip(),
                        nearest.label or info.domain))
    return out


def _untyped_holder(mention: Mention) -> bool:
    """A name nothing typed may hold a value when it is shaped like a name (capitals or digits, not a value
    itself): 'the epoch date' or '2005-11-26' hold nothing."""
    surface = mention.surface
    return bool(re.search(r"[A-Z]", surface)) and not iso_date(surface) and not re.fullmatch(r"[\d.,\s-]+", surface)

