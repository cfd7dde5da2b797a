"""Sentence vectors for extraction: the packaged MiniLM, memoised per text. Shared by the lexicon (mentions.py),
the zero-shot relation scorer (scoring.py) and the examples layer, so that none of them imports another for it."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=1)
def _embedder():
    from resources.embedder import Embedder

    return Embedder(model="minilm")  # thresholds here are calibrated on MiniLM, whatever the index uses


_CACHE: dict[str, np.ndarray] = {}


def embed(texts: list[str]) -> np.ndarray:
    """L2-normalised MiniLM vectors, memoised per text (predicates repeat across chunks and documents)."""
    missing = [t for t in dict.fromkeys(texts) if t not in _CACHE]
    if missing:
        if len(_CACHE) > 50000:
            _CACHE.clear()
        for text, vector in zip(missing, _embedder().encode(missing)):
            _CACHE[text] = vector
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    return np.asarray([_CACHE[t] for t in texts], dtype=np.float32)
