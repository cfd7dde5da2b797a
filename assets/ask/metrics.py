"""Answer and retrieval metrics shared by bench.ask and the fine-tune task gate: plain functions, no models.

Token F1 / exact match follow SQuAD's normalisation (case, punctuation, English articles, whitespace), extended
so that Korean answers compare fairly: Hangul words lose a trailing particle ("결제팀이" -> "결제팀") and
citation markers such as "[2]" never count as answer tokens.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter

_CITATION = re.compile(r"\[\d{1,3}\]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation) - {"-"} | {"·", "“", "”", "‘", "’", "。", "、"}
# the common one-syllable particles and endings glued to Hangul words; stripped only from words of 2+ syllables
_KOREAN_PARTICLES = ("에서는", "에서", "으로", "에게", "까지", "부터", "은", "는", "이", "가", "을", "를", "의", "에", "와",
                     "과", "도", "로", "만")
_HANGUL = re.compile(r"[\uac00-\ud7a3]")


def _strip_particle(word: str) -> str:
    if not _HANGUL.search(word[-1:] or ""):
        return word
    for particle in _KOREAN_PARTICLES:
        if word.endswith(particle) and len(word) - len(particle) >= 2:
            return word[: -len(particle)]
    return word


def normalize_answer(text: str) -> str:
    """Lower-cased, NFKC, citations/punctuation/articles removed, Korean particles stripped, single spaces."""
    text = unicodedata.normalize("NFKC", text or "").casefold()
    text = _CITATION.sub(" ", text)
    text = "".join(" " if ch in _PUNCTUATION else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(_strip_particle(word.strip("-")) for word in text.split() if word.strip("-"))


def answer_tokens(text: str) -> list[str]:
    return normalize_answer(text).split()


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 between a predicted and a reference answer (0..1)."""
    predicted, gold = answer_tokens(prediction), answer_tokens(reference)
    if not predicted or not gold:
        return float(predicted == gold)
    common = Counter(predicted) & Counter(gold)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(gold)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def best_over_references(metric, prediction: str, references: list[str] | str) -> float:
    """The best score over several acceptable references (a question may have more than one phrasing)."""
    if isinstance(references, str):
        references = [references]
    return max((metric(prediction, reference) for reference in references), default=0.0)


def recall_at_k(retrieved: list[str], relevant: list[str] | set[str], k: int = 5) -> float:
    """Share of the relevant items found among the first k retrieved ones (1.0 when nothing is relevant)."""
    relevant = set(relevant)
    if not relevant:
        return 1.0
    return len(relevant & set(retrieved[:k])) / len(relevant)


def citation_precision(cited: list[str], relevant: list[str] | set[str]) -> float:
    """Share of the cited items (chunk ids or documents) that are relevant; 0 when nothing is cited."""
    if not cited:
        return 0.0
    relevant = set(relevant)
    return sum(1 for item in cited if item in relevant) / len(cited)
