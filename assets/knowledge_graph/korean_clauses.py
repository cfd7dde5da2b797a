"""One Korean sentence as clauses: each clause's arguments with their roles, its predicate in plain declarative
form, and whether it is passive, past, negated or relative (a past or negated clause states no current fact)."""

from __future__ import annotations

from dataclasses import dataclass, field

from assets.knowledge_graph.korean_mentions import _NOUN_TAGS, KoreanMention, _Located
from assets.knowledge_graph.korean_models import kiwi
from assets.knowledge_graph.korean_particles import _role_after


# Past or negated statement markers: a clause carrying one states no current fact.
_PAST_TIME_NOUNS = {"이전", "예전", "과거", "종전", "작년", "지난번", "지난달", "지난주", "한때"}
_PAST_TIME_ADVERBS = {"원래", "예전", "이전", "한때"}
_PRESENT_TIME_WORDS = {"지금", "현재", "이제", "요즘", "오늘날"}
_NEGATION_ADVERBS = {"안", "못"}
_NEGATION_AUXILIARIES = {"않", "못하"}
_NEGATION_PREDICATES = {"없"}
# Verbs of moving (X moved from A to B): the source argument is the old value, the goal the new one.
_MOVE_STEMS = {"옮기", "이전", "이동", "마이그레이션", "이관", "전환", "교체", "변경", "바꾸"}
_PASSIVE_SUFFIXES = {"되", "받", "당하"}


@dataclass
class _Argument:
    mention: KoreanMention
    role: str  # subject, topic, object, location, path, agent, goal, source, conjunct
    particle: str  # the particle as written ("는", "에서", "를 통해서만", "에 의해")
    carried: bool = False  # elided here, taken from the discourse topic


@dataclass
class _Clause:
    arguments: list[_Argument] = field(default_factory=list)
    predicate: str = ""  # plain declarative form ("실행된다", "배포돼 있다")
    predicate_stem: str = ""  # the verb or predicate noun ("실행", "호출", "옮기")
    passive: bool = False
    past: bool = False  # a past-time adverbial (이전에, 예전에, 과거에)
    negated: bool = False  # 않다, 안, 못, 없다, 더 이상
    present: bool = False  # 지금, 현재, 이제: ends a past context
    relative: bool = False  # ends in an adnominal ending: the next mention is its missing argument



def _clauses(tokens, text: str, located: list[_Located]) -> list[_Clause]:
    """Split one sentence into clauses at connective and adnominal endings; collect arguments and the predicate."""
    by_last_token = {item.last_token: item for item in located}
    clauses: list[_Clause] = []
    current = _Clause()
    predicate_start = None
    n = len(tokens)
    i = 0
    skip_until = -1
    while i < n:
        token = tokens[i]
        if i in by_last_token:
            role, particle, last = _role_after(tokens, i, text)
            if role:
                current.arguments.append(_Argument(by_last_token[i].mention, role, particle))
                skip_until = last
                i = last + 1
                continue
        if i <= skip_until:
            i += 1
            continue
        form, tag = token.form, token.tag
        # past and negation markers
        if tag in _NOUN_TAGS and form in _PAST_TIME_NOUNS and not (i + 1 < n and tokens[i + 1].tag == "XSV"):
            current.past = True
        if tag in {"MAG", "NNG"} and form in _PRESENT_TIME_WORDS:
            current.present = True
        if tag == "MAG" and form in _PAST_TIME_ADVERBS:
            current.past = True
        if tag == "MAG" and form in _NEGATION_ADVERBS:
            current.negated = True
        if tag == "MAG" and form == "더" and i + 1 < n and tokens[i + 1].form == "이상":
            current.negated = True
        if tag == "VX" and form in _NEGATION_AUXILIARIES:
            current.negated = True
        if tag == "VA" and form in _NEGATION_PREDICATES:
            current.negated = True
        # predicates: noun + 하다/되다/받다, or a verb
        if tag in _NOUN_TAGS and i + 1 < n and tokens[i + 1].tag in {"XSV", "XSA"}:
            first = i
            while (first - 1 > skip_until and tokens[first - 1].tag in _NOUN_TAGS
                   and tokens[first - 1].end == tokens[first].start and first - 1 not in by_last_token):
                first -= 1  # "유지보수하다": the whole glued noun is the predicate
            current.predicate_stem = "".join(t.form for t in tokens[first:i + 1])
            current.passive = tokens[i + 1].form in _PASSIVE_SUFFIXES
            predicate_start = first
        elif tag in {"VV", "VA"} and form not in {"통하", "의하"} and form not in _NEGATION_PREDICATES:
            current.predicate_stem = form
            current.passive = False
            predicate_start = i
        elif tag == "VV" and form == "의하":
            current.passive = True
        ends_clause = tag in {"EF", "ETM"} or (
            tag == "EC" and not (i + 1 < n and tokens[i + 1].tag == "VX")
            and not (i > 0 and tokens[i - 1].form in {"통하", "의하"}))
        if ends_clause and current.predicate_stem and predicate_start is not None:
            current.predicate = _declarative(tokens[predicate_start:i + 1])
            current.relative = tag == "ETM"
            clauses.append(current)
            current = _Clause()
            predicate_start = None
        i += 1
    if current.predicate_stem or current.arguments:
        if current.predicate_stem and predicate_start is not None:
            current.predicate = _declarative([t for t in tokens[predicate_start:] if not t.tag.startswith("S")])
        clauses.append(current)
    # a past-time adverbial covers the clauses after it ("예전에 X는 A에서 실행되었고 B팀이 관리했다") until a
    # present marker (지금은) or a move ("... 지금은 B로 옮겼다" states the current value)
    past = False
    for clause in clauses:
        if clause.present or clause.predicate_stem in _MOVE_STEMS:
            past = False
        past = past or clause.past
        clause.past = past and clause.predicate_stem not in _MOVE_STEMS
    return clauses


def _declarative(morphemes) -> str:
    """The predicate in plain declarative form, so "실행되고", "관리하는" and "실행된다" read alike to the scorer."""
    parts = [(t.form, t.tag) for t in morphemes]
    while parts and parts[-1][1].startswith(("E", "J", "S")) and parts[-1][1] != "EP":
        parts.pop()
    if not parts:
        return ""
    if any(tag == "EP" for _, tag in parts) or parts[-1][1] in {"VA", "XSA", "VCP"}:
        parts.append(("다", "EF"))
    else:
        last = parts[-1][0][-1]
        vowel_final = "\uac00" <= last <= "\ud7a3" and (ord(last) - 0xAC00) % 28 == 0
        parts.append(("ᆫ다" if vowel_final else "는다", "EF"))
    try:
        return kiwi().join(parts)
    except Exception:  # noqa: BLE001 - a morpheme kiwi cannot join: fall back to the bare forms
        return "".join(form for form, _ in parts)
