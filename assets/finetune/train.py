"""LoRA training with peft (unsloth on CUDA): plain functions, no Dagster asset here."""

import math
import random
import time
from pathlib import Path

from dagster import Config
from pydantic import Field

from assets.finetune.dataset import format_prompt

DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoraTrainingConfig(Config):
    backend: str = Field(default="auto", description="auto (unsloth if CUDA and unsloth are present, else peft), "
                                                     "peft or unsloth.")
    r: int = Field(default=8, ge=1, description="LoRA rank (the vLLM server's --max-lora-rank must be >= r).")
    lora_alpha: int = Field(default=16, ge=1)
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGETS))
    learning_rate: float = Field(default=5e-3, ge=0.0)
    num_epochs: int = Field(default=3, ge=1)
    max_steps: int = Field(default=0, ge=0, description="Stop after this many optimizer steps (0 = all epochs).")
    batch_size: int = Field(default=8, ge=1)
    max_seq_len: int = Field(default=256, ge=16)
    weight_decay: float = 0.0
    seed: int = 0
    min_eval_loss_improvement: float = Field(
        default=0.0, description="Blocking gate: adapter eval loss must be below base eval loss minus this.")
    smoke_max_tokens: int = Field(default=16, ge=1,
                                  description="Greedy tokens recorded as the deployment smoke reference.")


def choose_backend(requested: str) -> str:
    import importlib.util

    import torch

    if requested not in ("auto", "peft", "unsloth"):
        raise ValueError(f"backend must be auto, peft or unsloth, not {requested!r}")
    cuda = torch.cuda.is_available()
    has_unsloth = importlib.util.find_spec("unsloth") is not None
    if requested == "unsloth" and not (cuda and has_unsloth):
        raise ValueError("backend 'unsloth' needs CUDA and the unsloth package")
    if requested == "auto":
        return "unsloth" if (cuda and has_unsloth) else "peft"
    return requested


def _encode(tokenizer, row: dict, max_len: int) -> tuple[list[int], list[int]]:
    prompt_ids = tokenizer(format_prompt(row)).input_ids
    answer_ids = tokenizer(row["output"], add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    answer_ids = answer_ids[: max(1, max_len // 2)] if len(prompt_ids) + len(answer_ids) > max_len else answer_ids
    room = max_len - len(answer_ids)
    if len(prompt_ids) > room:  # keep BOS and the end of the prompt (the "### Response:" cue)
        prompt_ids = prompt_ids[:1] + prompt_ids[len(prompt_ids) - room + 1:]
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids


def _batches(encoded: list[tuple[list[int], list[int]]], batch_size: int, pad_id: int, order: list[int] | None = None):
    import torch

    order = order if order is not None else list(range(len(encoded)))
    for start in range(0, len(order), batch_size):
        items = [encoded[i] for i in order[start:start + batch_size]]
        width = max(len(ids) for ids, _ in items)
        ids = torch.full((len(items), width), pad_id, dtype=torch.long)
        labels = torch.full((len(items), width), -100, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, (x, y) in enumerate(items):
            ids[row, : len(x)] = torch.tensor(x)
            labels[row, : len(y)] = torch.tensor(y)
            mask[row, : len(x)] = 1
        yield ids, labels, mask


def eval_loss(model, encoded, batch_size: int, pad_id: int, device) -> float:
    """Token-weighted mean cross-entropy over response tokens."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, labels, mask in _batches(encoded, batch_size, pad_id):
            ids, labels, mask = ids.to(device), labels.to(device), mask.to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            shift_logits, shift_labels = logits[:, :-1, :], labels[:, 1:]
            loss = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)),
                                                     shift_labels.reshape(-1), ignore_index=-100, reduction="sum")
            total += float(loss)
            count += int((shift_labels != -100).sum())
    return total / max(count, 1)


def greedy_reference(model, tokenizer, prompt: str, max_new_tokens: int, device) -> dict:
    import torch

    inputs = tokenizer(prompt, return_tensors="pt").to(device)
    model.eval()
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                             eos_token_id=tokenizer.eos_token_id)
    new = out[0][inputs["input_ids"].shape[1]:].tolist()
    if new and new[-1] == tokenizer.eos_token_id:
        new = new[:-1]
    return {"token_ids": new, "text": tokenizer.decode(new, skip_special_tokens=True)}


def _load_model(base: Path, backend: str, config: LoraTrainingConfig):
    import torch

    if backend == "unsloth":
        from unsloth import FastLanguageModel  # noqa: I001  (unsloth patches transformers on import)

        model, tokenizer = FastLanguageModel.from_pretrained(model_name=str(base), max_seq_length=config.max_seq_len,
                                                             dtype=None, load_in_4bit=False, local_files_only=True)
        return model, tokenizer, torch.device("cuda")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=dtype, local_files_only=True).to(device)
    return model, tokenizer, device


def _wrap_lora(model, backend: str, config: LoraTrainingConfig):
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        return FastLanguageModel.get_peft_model(model, r=config.r, lora_alpha=config.lora_alpha,
                                                lora_dropout=config.lora_dropout, target_modules=config.target_modules,
                                                bias="none", random_state=config.seed)
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def _set_mode(model, backend: str, training: bool) -> None:
    """Unsloth models must be switched explicitly: generate() on a model left in training mode raises "You must call
    FastLanguageModel.for_inference(model) before doing inference", and its fast kernels assume the right mode."""
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        (FastLanguageModel.for_training if training else FastLanguageModel.for_inference)(model)
    if training:
        model.train()
    else:
        model.eval()


def train_lora(base: Path, dataset_path: str, config: LoraTrainingConfig, out_dir: Path, log=None) -> dict:
    """Train a LoRA adapter on dataset_path's train split; save it to out_dir; return metrics + smoke reference."""
    import torch
    from datasets import load_from_disk

    log = log or (lambda message: None)
    backend = choose_backend(config.backend)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    data = load_from_disk(dataset_path)
    model, tokenizer, device = _load_model(base, backend, config)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    pad_id = tokenizer.pad_token_id
    train = [_encode(tokenizer, row, config.max_seq_len) for row in data["train"]]
    evals = [_encode(tokenizer, row, config.max_seq_len) for row in data["eval"]]
    if not train or not evals:  # the training loop would never advance on an empty train split
        raise ValueError(f"dataset {dataset_path} has {len(train)} train and {len(evals)} eval rows; need both")
    base_loss = eval_loss(model, evals, config.batch_size, pad_id, device)
    log(f"base eval loss {base_loss:.4f} on {len(evals)} examples ({backend} backend, {device})")

    model = _wrap_lora(model, backend, config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = config.max_steps or steps_per_epoch * config.num_epochs
    generator = random.Random(config.seed)
    losses, step, started = [], 0, time.perf_counter()
    _set_mode(model, backend, training=True)
    while step < total_steps:
        order = list(range(len(train)))
        generator.shuffle(order)
        model.train()
        for ids, labels, mask in _batches(train, config.batch_size, pad_id, order):
            ids, labels, mask = ids.to(device), labels.to(device), mask.to(device)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            losses.append(loss.item())
            step += 1
            if step >= total_steps:
                break
    train_seconds = time.perf_counter() - started
    # the adapter's eval loss is computed the way the base model's was (plain forward, eval mode), then unsloth
    # switches to its inference kernels for the greedy reference
    adapter_loss = eval_loss(model, evals, config.batch_size, pad_id, device)
    log(f"adapter eval loss {adapter_loss:.4f} after {step} steps in {train_seconds:.1f}s")
    _set_mode(model, backend, training=False)

    smoke_row = dict(data["eval"][0])
    smoke_prompt = format_prompt(smoke_row)
    reference = greedy_reference(model, tokenizer, smoke_prompt, config.smoke_max_tokens, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    return {
        "backend": backend, "device": str(device),
        "base_eval_loss": base_loss, "eval_loss": adapter_loss,
        "train_loss_first": losses[0] if losses else None, "train_loss_last": losses[-1] if losses else None,
        "steps": step, "train_examples": len(train), "eval_examples": len(evals), "train_seconds": train_seconds,
        "smoke": {"prompt": smoke_prompt, "max_tokens": config.smoke_max_tokens, "reference_token_ids":
                  reference["token_ids"], "reference_text": reference["text"],
                  "reference_dtype": str(next(model.parameters()).dtype).removeprefix("torch.")},
    }


