"""What the examples classifier reads of a mention pair: the words around and between the two mentions (each replaced
by its kind), the dependency path that links them, and the two kinds, as one feature row."""

from __future__ import annotations

import re

import numpy as np

from assets.knowledge_graph.embedding import embed
from assets.knowledge_graph.examples_mentions import NameGazetteer, Span, _link_pronouns, find_spans
from assets.knowledge_graph.mentions import doc_original
from resources.ontology_examples import loose


LEFT_WORDS, RIGHT_WORDS, BETWEEN_HEAD, BETWEEN_TAIL = 3, 2, 3, 5


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
