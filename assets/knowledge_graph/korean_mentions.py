"""Names in Korean (and mixed Korean/English) text: Latin identifiers and Hangul noun chains with particles stripped,
typed by a class word next to them or by the ontology's known names; copula typing and "Hangul(latin)" appositions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from assets.knowledge_graph.korean_index import _HANGUL, _index, _OntologyIndex, _squash
from assets.knowledge_graph.korean_models import kiwi
from assets.knowledge_graph.korean_particles import _role_after
from resources.ontology import Ontology


_LETTER = re.compile(r"[^\W\d_]")
_LATIN_TAGS = {"SL", "SN", "SH", "W_URL", "W_EMAIL", "W_SERIAL", "W_HASHTAG", "W_MENTION"}
_NAME_JOINERS = {"-", "_", ".", "/", ":"}
_NOUN_TAGS = {"NNG", "NNP"}
# Nouns that never start or continue a name chain ("현재 결제팀" is 결제팀 now).
_NOT_NAME_NOUNS = {"현재", "지금", "오늘", "내일", "어제", "이전", "예전", "과거", "이후", "다음", "이번", "지난번",
                   "모든", "각", "전체", "일부", "기존", "신규", "새"}
_LONGEST_CLASS_WORD = 6  # syllables of a class word looked for at the end of a one-token compound ("인천공항")


@dataclass(frozen=True)
class KoreanMention:
    """A name in Korean text: surface without particles, char offsets, class id when the text or ontology says."""

    surface: str
    start: int
    end: int
    label: str | None = None
    canonical: str | None = None  # the known individual's canonical name ("플랫폼팀" -> "Platform Team")


# ------------------------------------------------------------------------------------------------ public helpers

def is_korean(text: str, min_share: float = 0.2) -> bool:
    """True when Hangul is at least min_share of the letters (Korean text with English names glued in counts)."""
    letters = _LETTER.findall(text or "")
    hangul = sum(1 for ch in letters if _HANGUL.match(ch))
    return hangul >= 2 and hangul / max(len(letters), 1) >= min_share


def korean_header_class(header: str, ontology: Ontology) -> str | None:
    """Class a Korean (or mixed) table header names: "실행 서버" -> Server, "담당 팀" -> Team, "서비스명" -> Application.

    The last noun that is a class word wins (Korean puts the head noun last)."""
    index = _index(ontology)
    whole = index.class_of_word(header, cross_lingual=False)
    if whole:
        return whole
    nouns = [t.form for t in kiwi().tokenize(header) if t.tag in _NOUN_TAGS or t.tag == "SL"]
    for noun in reversed(nouns):
        found = index.class_of_word(noun)
        if found:
            return found
    return None


# ------------------------------------------------------------------------------------------------ mentions

@dataclass
class _Unit:
    kind: str  # latin | noun
    first: int  # token indexes [first, last]
    last: int
    start: int
    end: int


def _units(tokens, text: str) -> list[_Unit]:
    """Latin name runs (payments-api, db-01, Platform Team) and Hangul noun chains (주문 서비스, 결제팀)."""
    units: list[_Unit] = []
    i, n = 0, len(tokens)
    while i < n:
        token = tokens[i]
        if token.tag in _LATIN_TAGS:
            j = i
            while j + 1 < n:
                nxt = tokens[j + 1]
                glued = nxt.start == tokens[j].end
                if glued and nxt.tag in _LATIN_TAGS:
                    j += 1
                elif (glued and nxt.form in _NAME_JOINERS and j + 2 < n and tokens[j + 2].tag in _LATIN_TAGS
                      and tokens[j + 2].start == nxt.end):
                    j += 2
                elif (nxt.tag == "SL" and nxt.start == tokens[j].end + 1 and nxt.form[:1].isupper()
                      and text[tokens[i].start:tokens[j].end].replace(" ", "").isalpha()
                      and text[tokens[i].start:tokens[j].end][:1].isupper()):
                    j += 1  # "Platform Team", "Korean Air": title-case words separated by one space
                else:
                    break
            units.append(_Unit("latin", i, j, token.start, tokens[j].end))
            i = j + 1
        elif token.tag in _NOUN_TAGS and token.form not in _NOT_NAME_NOUNS:
            j = i
            while (j + 1 < n and tokens[j + 1].tag in _NOUN_TAGS and tokens[j + 1].form not in _NOT_NAME_NOUNS
                   and tokens[j + 1].start - tokens[j].end <= 1):
                j += 1
            units.append(_Unit("noun", i, j, token.start, tokens[j].end))
            i = j + 1
        else:
            i += 1
    return units


@dataclass
class _Located:
    mention: KoreanMention
    last_token: int  # index of the last token the mention covers (its class word included), for the particle


def _noun_chain_mention(unit: _Unit, tokens, text: str, index: _OntologyIndex) -> tuple[KoreanMention, int] | None:
    """(mention, its last token) for the longest start of a noun chain that is a known name or ends in a class
    word: "결제팀" (결제+팀), "주문 서비스", "결제팀 담당자" -> 결제팀 (then 담당자 is what the sentence is about)."""
    for last in range(unit.last, unit.first - 1, -1):
        end = tokens[last].end
        surface = text[unit.start:end]
        known = index.known.get(_squash(surface))
        if known:
            return KoreanMention(surface, unit.start, end, known[0], known[1]), last
        head = tokens[last].form
        if last > unit.first:
            label = index.class_of_word(head)
            modifiers = [t.form for t in tokens[unit.first:last]]
            if label and not all(index.class_of_word(word, cross_lingual=False) for word in modifiers):  # not "DB 서버"
                return KoreanMention(surface, unit.start, end, label), last
        elif len(head) >= 3 and _HANGUL.search(head) and not index.class_of_word(head):
            # one token: a compound kiwi kept whole ("인천공항"): its tail may be a class word
            for cut in range(max(1, len(head) - _LONGEST_CLASS_WORD), len(head) - 1):
                label = index.class_of_word(head[cut:], cross_lingual=len(head) - cut >= 2)
                if label:
                    return KoreanMention(surface, unit.start, end, label), last
    return None


def _sentence_mentions(tokens, text: str, index: _OntologyIndex,
                       type_of: Callable[[str], str | None] | None = None) -> list[_Located]:
    units = _units(tokens, text)
    located: list[_Located] = []
    used_as_class_word: set[int] = set()
    for position, unit in enumerate(units):
        if unit.kind != "latin":
            continue
        surface = text[unit.start:unit.end]
        if index.class_words.get(_squash(surface)) and not _is_identifier_like(surface):
            continue  # "DB", "API server": a class word, not a name
        label, canonical, last_token = None, None, unit.last
        known = index.known.get(_squash(surface))
        if known:
            label, canonical = known
        after = units[position + 1] if position + 1 < len(units) else None
        before = units[position - 1] if position > 0 else None
        if (after and after.kind == "noun" and after.first == after.last and after.start - unit.end <= 1):
            word_class = index.class_of_word(tokens[after.first].form)
            if word_class:
                label = label or word_class
                last_token = after.last
                used_as_class_word.add(position + 1)
        if (label is None and before and before.kind == "noun" and before.first == before.last
                and unit.start - before.end <= 1 and position - 1 not in used_as_class_word):
            word_class = index.class_of_word(tokens[before.first].form)
            if word_class:
                label = word_class
                used_as_class_word.add(position - 1)
        label = label or index.pattern_class(surface)
        located.append(_Located(KoreanMention(surface, unit.start, unit.end, label, canonical), last_token))
    for position, unit in enumerate(units):
        if unit.kind != "noun" or position in used_as_class_word:
            continue
        found = _noun_chain_mention(unit, tokens, text, index)
        if found is None and type_of is not None:
            surface = text[unit.start:unit.end]
            if type_of(surface) in index.ontology.classes:  # a Hangul name the document already typed ("서울")
                found = KoreanMention(surface, unit.start, unit.end, None), unit.last
        if found:
            located.append(_Located(*found))
    located.sort(key=lambda item: item.mention.start)
    return _merge_appositions(located, text)


def _apposition(first: KoreanMention, second: KoreanMention, text: str) -> bool:
    """"주문 서비스(order-api)": a Hangul name and, in brackets right after it, a Latin name of the same thing."""
    return (bool(_HANGUL.search(first.surface)) and not _HANGUL.search(second.surface)
            and text[first.end:second.start].strip() in {"(", "（"} and text[second.end:second.end + 2].strip()[:1] in {")", "）"})


def _merge_appositions(located: list[_Located], text: str) -> list[_Located]:
    """One mention for "Hangul name(latin-name)": the Latin name, typed by the Hangul name's class word when it has
    no class of its own (korean_appositions gives the pair to the resolver, so the Hangul name alone later in the
    document is the same entity)."""
    merged: list[_Located] = []
    for item in located:
        if merged and _apposition(merged[-1].mention, item.mention, text):
            first = merged.pop().mention
            mention = item.mention
            if mention.label is None and first.label is not None:
                mention = KoreanMention(mention.surface, mention.start, mention.end, first.label, mention.canonical)
            item = _Located(mention, item.last_token)
        merged.append(item)
    return merged


def korean_copula_types(text: str, ontology: Ontology) -> list[tuple[str, str]]:
    """(name, class id) from copula sentences: "payments-gw는 카드 결제를 승인하는 서비스입니다" says payments-gw is an
    Application, "cache-01은 … 서버이며" a Server. The subject is the sentence's first topic/subject mention before
    the class word that carries the copula (이다, VCP)."""
    index = _index(ontology)
    found = []
    for sentence in kiwi().split_into_sents(text or "", return_tokens=True):
        tokens = sentence.tokens
        copulas = [i for i, t in enumerate(tokens) if t.tag == "VCP" and i > 0 and tokens[i - 1].tag in _NOUN_TAGS]
        if not copulas:
            continue
        located = _sentence_mentions(tokens, text, index)
        for i in copulas:
            label = index.class_of_word(tokens[i - 1].form)
            if label is None:
                continue
            for item in located:
                if item.mention.start >= tokens[i - 1].start:
                    break
                role, _, _ = _role_after(tokens, item.last_token, text)
                if role in {"topic", "subject"}:
                    if item.mention.label in (None, label):
                        found.append((item.mention.surface, label))
                    break
    return found


def korean_appositions(text: str, ontology: Ontology) -> list[tuple[str, str, str | None]]:
    """(Hangul name, Latin name, class id or None) of every "주문 서비스(order-api)" in the text: two names of one
    entity, for the resolver."""
    index = _index(ontology)
    pairs = []
    for sentence in kiwi().split_into_sents(text or "", return_tokens=True):
        if "(" not in sentence.text and "（" not in sentence.text:
            continue
        units = _units(sentence.tokens, text)
        located = []
        for unit in units:
            if unit.kind == "noun":
                found = _noun_chain_mention(unit, sentence.tokens, text, index)
                if found:
                    located.append(found[0])
            else:
                located.append(KoreanMention(text[unit.start:unit.end], unit.start, unit.end))
        for first, second in zip(located, located[1:]):
            if _apposition(first, second, text):
                pairs.append((first.surface, second.surface, first.label))
    return pairs


def _is_identifier_like(text: str) -> bool:
    return bool(re.search(r"[-_.0-9/:]", text))


def korean_mentions(text: str, ontology: Ontology,
                    type_of: Callable[[str], str | None] | None = None) -> list[KoreanMention]:
    """Names in Korean text with particles stripped: Latin identifiers, Hangul names ending in a class word,
    known individuals' Hangul aliases; a class word next to a name types it ("app-03 서버" -> Server app-03).

    With type_of, Hangul nouns the caller already typed ("서울" -> City) are mentions too (label None: the caller
    knows their class)."""
    index = _index(ontology)
    mentions: list[KoreanMention] = []
    for sentence in kiwi().split_into_sents(text or "", return_tokens=True):
        mentions.extend(item.mention for item in _sentence_mentions(sentence.tokens, text, index, type_of))
    return mentions
