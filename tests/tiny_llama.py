"""Builds a tiny Llama (transformers LlamaConfig, random weights) and a byte-level BPE tokenizer trained with the
`tokenizers` library on local text, saved with save_pretrained. No download: everything is made here.

The builder itself lives in resources/tiny_llama.py because the fine-tune job also uses it as its clearly
labelled demo base model when no DOCPLATFORM_BASE_MODEL is configured.
"""

from pathlib import Path

from resources.tiny_llama import TINY_SIZES, build_tiny_llama, build_tokenizer, is_tiny_demo_model

__all__ = ["TINY_SIZES", "build_tiny_llama", "build_tokenizer", "is_tiny_demo_model", "tiny_llama"]


def tiny_llama(target: Path) -> Path:
    """Build the tiny model + tokenizer into target (idempotent) and return the folder."""
    return build_tiny_llama(target)
