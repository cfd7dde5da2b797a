"""Full-text terms for Milvus BM25: Korean text as morphemes, so "서버에서" (server + particle) matches "서버".

milvus-lite 3.2.x offers only the `standard` and `jieba` tokenizers (no lindera/ko-dic, no icu: creating a collection
with them fails with "unknown tokenizer type"), and `standard` keeps a Hangul word with its particles as one term.
So the collection's BM25 function reads a second field that holds the text as content morphemes (kiwipiepy, model
shipped offline in kiwipiepy-model), particles and endings dropped, separated by spaces; queries go through the same
function. Text without Hangul is returned unchanged (English keeps Milvus' standard analysis exactly as before).
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache

# bump when the output changes: recorded on the collection, which refuses a mismatch
BM25_ANALYZER = "kiwi-morphemes-1"

_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
# content morphemes: nouns, numerals, verb/adjective stems, roots, Chinese characters; not particles (J*), endings
# (E*), derivational suffixes (XS*), pronouns, adverbs, punctuation
_KEEP_TAGS = {"NNG", "NNP", "NR", "VV", "VA", "XR", "SH", "XPN"}
_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def kiwi():
    """The process's one kiwipiepy analyser (about 300 MB once it has read a sentence), shared by the BM25 terms
    here and the Korean graph layer (assets.knowledge_graph.korean_models)."""
    from kiwipiepy import Kiwi

    # without the multi-word dictionary (Wikidata names such as "마이크로소프트 애저" as one token): 180 MB and 2 s of
    # loading less; the BM25 terms are the same (such a token holds a space and is analyzed as two words), and the
    # project's Korean documents tokenize identically (13,752 tokens of 18 documents compared)
    return Kiwi(load_multi_dict=False)


def bm25_terms(text: str) -> str:
    """The text the BM25 function analyzes: Korean as space-separated content morphemes, everything else as written
    ("payments-api는 srv-db-01에서 실행된다" -> "payments-api srv-db-01 실행")."""
    if not text or not _HANGUL.search(text):
        return text
    with _LOCK:  # one Kiwi instance; tokenize is not documented as thread-safe
        tokens = kiwi().tokenize(text)
    out: list[str] = []
    previous_end, previous_latin = -1, False
    for token in tokens:
        start, end = token.start, token.start + token.len
        if _HANGUL.search(token.form):
            previous_latin = False
            if token.tag.split("-")[0] in _KEEP_TAGS:
                out.append(token.form)
            continue
        if token.tag.startswith("S") and token.tag not in ("SL", "SN", "SH", "SO", "SW") and not token.tag.startswith("W"):
            previous_latin = False  # punctuation and brackets separate
            continue
        surface = text[start:end]
        if previous_latin and start == previous_end:
            out[-1] += surface  # "srv" "-" "db" written together stay one word, as the standard analyzer sees it
        else:
            out.append(surface)
        previous_end, previous_latin = end, True
    return " ".join(out)


def bm25_terms_many(texts: list[str]) -> list[str]:
    return [bm25_terms(text) for text in texts]
