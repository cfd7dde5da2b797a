"""A TINY DEMO Llama (random weights) and its byte-level BPE tokenizer, built locally without any download.

It is NOT a useful language model: it exists so that the fine-tune/deploy path (peft LoRA training, the
eval-loss gate, vLLM serving with dynamic LoRA loading) runs end to end on an air-gapped machine where no
base model was configured ($DOCPLATFORM_BASE_MODEL), and in the tests. Everything is deterministic: the
tokenizer is trained on the fixed text below and the weights come from a fixed seed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DEMO_MODEL_LABEL = "docplatform tiny demo Llama (random weights, NOT a real language model)"
MARKER_FILE = "TINY_DEMO_MODEL.txt"

# Sizes that vLLM's CPU attention supports (head_dim 64) while staying at ~0.5M parameters.
TINY_SIZES = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    head_dim=64,
    max_position_embeddings=1024,
)
VOCAB_SIZE = 640

_TOKENIZER_TEXT = """\
The billing database runs on the primary PostgreSQL cluster and is managed by the payments team.
The search service depends on Milvus for vector retrieval and on Neo4j for the knowledge graph.
On-call engineers follow the deployment runbook: drain traffic, roll out, verify health checks, then restore traffic.
The security policy forbids storing credentials in documents; report incidents to the security team within one hour.
Instruction: answer the question using the document context. Input: context. Response: the answer.
### Instruction:
### Input:
### Response:
Which team manages the service? What does the service run on? What does it depend on? Who owns the runbook?
Kubernetes, PostgreSQL, Milvus, Neo4j, Dagster, vLLM, LoRA, adapters, datasets, evaluation, deployment, rollback.
Platform engineering maintains the cluster. Data engineering maintains the pipelines. Documents are chunked.
0 1 2 3 4 5 6 7 8 9 10 100 2024 2025 2026 a b c d e f g h i j k l m n o p q r s t u v w x y z.
"""


def _training_lines() -> list[str]:
    lines = [line for line in _TOKENIZER_TEXT.splitlines() if line.strip()]
    return lines * 4


def build_tokenizer(vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE tokenizer (GPT-2 style, so any text encodes) trained on fixed local text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_lines(), trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=TINY_SIZES["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )


def build_tiny_llama(target: str | os.PathLike, seed: int = 0, overwrite: bool = False) -> Path:
    """Build (once) the tiny demo Llama + tokenizer into target; returns the folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    target = Path(target)
    if (target / MARKER_FILE).is_file() and (target / "config.json").is_file() and not overwrite:
        return target
    target.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        torch_dtype="float32",
        **TINY_SIZES,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Larger-than-default init so that logits are well separated (robust greedy decoding across runtimes).
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.08)
    model = model.to(torch.float32)
    model.generation_config.do_sample = False
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    (target / MARKER_FILE).write_text(DEMO_MODEL_LABEL + "\n")
    with (target / "config.json").open() as handle:
        json.load(handle)  # sanity: config written
    return target


def is_tiny_demo_model(path: str | os.PathLike) -> bool:
    return (Path(path) / MARKER_FILE).is_file()


if __name__ == "__main__":
    import sys

    out = build_tiny_llama(sys.argv[1] if len(sys.argv) > 1 else "tiny-llama")
    print(out)
