"""LoRA training on TRL's SFTTrainer with peft (unsloth on CUDA): plain functions, no Dagster asset here.

Examples are prompt/completion pairs: the prompt is exactly what the ask path sends (grounded_prompt.render_prompt of
the example's messages, through the base model's chat template), the completion the cited answer + EOS; the loss is
on completion tokens only. Eval loss is logged during training, early stopping keeps the best checkpoint.
"""

import base64
import io
import shutil
import tempfile
import time
from pathlib import Path

from dagster import Config
from pydantic import Field

from assets.finetune.dataset import example_messages
from assets.finetune.evaluate import compare_on_questions
from assets.grounded_prompt import render_prompt

DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LOSS_PLOT = "loss_curves.png"


class LoraTrainingConfig(Config):
    backend: str = Field(default="auto", description="auto (unsloth if CUDA and unsloth are present, else peft), "
                                                     "peft or unsloth.")
    r: int = Field(default=16, ge=1, description="LoRA rank (the vLLM server's --max-lora-rank must be >= r).")
    lora_alpha: int = Field(default=32, ge=1)
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGETS))
    learning_rate: float = Field(default=1e-3, ge=0.0)
    num_epochs: int = Field(default=2, ge=1)
    max_steps: int = Field(default=0, ge=0, description="Stop after this many optimizer steps (0 = all epochs).")
    batch_size: int = Field(default=1, ge=1, description="Examples per forward pass (1: no padding on CPU).")
    gradient_accumulation_steps: int = Field(default=4, ge=1, description="Forward passes per optimizer step "
                                             "(effective batch = batch_size x this).")
    max_seq_len: int = Field(default=1024, ge=16, description="Longer examples (prompt + answer tokens) are "
                                                              "left out, never truncated.")
    torch_threads: int = Field(default=0, ge=0, description="CPU threads for training and the gate's generation; "
                               "0 = half the visible cores (at least 1): on 2 shared cores 2 threads were slower "
                               "than 1, greedy decoding 10x slower.")
    weight_decay: float = 0.0
    seed: int = 0
    eval_steps: int = Field(default=0, ge=0, description="Evaluate (and checkpoint) every this many steps; "
                                                         "0 = about five times per run.")
    early_stopping_patience: int = Field(default=3, ge=1,
                                         description="Stop after this many evaluations without a lower eval loss.")
    min_eval_loss_improvement: float = Field(
        default=0.0, description="Blocking gate: adapter eval loss must be below base eval loss minus this.")
    task_gate_questions: int = Field(default=24, ge=1, description="Held-out grounded questions (eval split) "
                                                                  "answered greedily by base and adapter.")
    task_gate_max_tokens: int = Field(default=64, ge=1)
    task_gate_min_margin: float = Field(
        default=0.0, description="Blocking task gate: adapter token-F1 and citation accuracy must beat the base's "
                                 "by more than this (and exact match must not drop); negative values loosen it.")
    smoke_max_tokens: int = Field(default=16, ge=1,
                                  description="Greedy tokens recorded as the deployment smoke reference.")


def cpu_threads(requested: int) -> int:
    """torch_threads: the requested count, or half the cores this process may use (at least 1) for 0."""
    import os

    if requested:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // 2)


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


def prompt_completion_rows(rows, tokenizer, max_len: int, messages_of=example_messages) -> tuple[list[dict], int]:
    """{"prompt", "completion"} strings in the served prompt format; rows longer than max_len tokens are left out."""
    out, too_long = [], 0
    for row in rows:
        prompt = render_prompt(messages_of(row), tokenizer)
        completion = " " + row["output"] if not tokenizer.chat_template else row["output"]
        length = len(tokenizer(prompt + completion).input_ids) + 1
        if length > max_len:
            too_long += 1
            continue
        out.append({"prompt": prompt, "completion": completion})
    return out, too_long


def loss_curves(log_history: list[dict]) -> dict:
    """{"train": [(step, loss)], "eval": [(step, eval_loss)]} from the trainer's log history."""
    return {"train": [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e],
            "eval": [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]}


def plot_loss_curves(curves: dict, path: Path) -> str:
    """Write the train/eval loss curves as a PNG; returns it base64-encoded (for Markdown metadata)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=80)
    for name, points in curves.items():
        if points:
            ax.plot([s for s, _ in points], [v for _, v in points], marker="o" if name == "eval" else None,
                    label=f"{name} loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    path.write_bytes(buffer.getvalue())
    return base64.b64encode(buffer.getvalue()).decode()


def train_lora(base: Path, dataset_path: str, config: LoraTrainingConfig, out_dir: Path, log=None,
               messages_of=example_messages, task_gate: bool = True) -> dict:
    """Train a LoRA adapter with SFTTrainer on dataset_path's train split (eval split for eval loss and early
    stopping), run the task gate's comparison on held-out questions, save the adapter to out_dir; return metrics.
    Runs on config.torch_threads CPU threads (restored afterwards). messages_of(row) gives a row's chat messages
    (the ask path's by default; the extraction adapter's are the LLM extraction layer's); task_gate=False skips
    the grounded-question comparison (it scores cited answers, which an extraction adapter does not write)."""
    import torch

    log = log or (lambda message: None)
    backend = choose_backend(config.backend)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cpu_threads(config.torch_threads))
    try:
        return _train_lora(base, dataset_path, config, out_dir, log, backend, messages_of, task_gate)
    finally:
        torch.set_num_threads(threads_before)


def _train_lora(base: Path, dataset_path: str, config: LoraTrainingConfig, out_dir: Path, log, backend: str,
                messages_of, task_gate: bool) -> dict:
    import torch
    from datasets import Dataset, load_from_disk
    from transformers import EarlyStoppingCallback, set_seed
    from trl import SFTConfig, SFTTrainer

    set_seed(config.seed)
    data = load_from_disk(dataset_path)
    model, tokenizer, device = _load_model(base, backend, config)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_rows, train_long = prompt_completion_rows(data["train"], tokenizer, config.max_seq_len, messages_of)
    eval_rows, eval_long = prompt_completion_rows(data["eval"], tokenizer, config.max_seq_len, messages_of)
    if not train_rows or not eval_rows:  # the trainer would never advance on an empty train split
        raise ValueError(f"dataset {dataset_path} has {len(train_rows)} train and {len(eval_rows)} eval rows within "
                         f"max_seq_len={config.max_seq_len} tokens ({train_long + eval_long} longer); need both")
    peft_config = None
    if backend == "unsloth":
        model = _wrap_lora(model, backend, config)
        _set_mode(model, backend, training=True)
    else:
        from peft import LoraConfig

        peft_config = LoraConfig(r=config.r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                 target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM")
    steps_per_epoch = -(-len(train_rows) // (config.batch_size * config.gradient_accumulation_steps))
    total_steps = config.max_steps or steps_per_epoch * config.num_epochs
    eval_steps = config.eval_steps or max(1, total_steps // 5)
    checkpoints = Path(tempfile.mkdtemp(prefix=".checkpoints-", dir=Path(out_dir).parent))
    try:
        args = SFTConfig(
            output_dir=str(checkpoints), per_device_train_batch_size=config.batch_size,
            per_device_eval_batch_size=config.batch_size, learning_rate=config.learning_rate,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            num_train_epochs=config.num_epochs, max_steps=config.max_steps or -1, weight_decay=config.weight_decay,
            lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, seed=config.seed, data_seed=config.seed,
            logging_steps=1, eval_strategy="steps", eval_steps=eval_steps, save_strategy="steps", save_steps=eval_steps,
            save_total_limit=1, load_best_model_at_end=True, metric_for_best_model="eval_loss",
            greater_is_better=False, completion_only_loss=True, max_length=None, packing=False,
            report_to=[], disable_tqdm=True, use_cpu=device.type == "cpu", bf16=device.type == "cuda",
            dataloader_num_workers=0, save_only_model=True, gradient_checkpointing=False,
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                             eval_dataset=Dataset.from_list(eval_rows), processing_class=tokenizer,
                             peft_config=peft_config,
                             callbacks=[EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience)])
        base_loss = trainer.evaluate()["eval_loss"]  # LoRA B starts at zero: this is the base model
        log(f"base eval loss {base_loss:.4f} on {len(eval_rows)} examples ({backend} backend, {device}, "
            f"{torch.get_num_threads()} CPU threads)")
        started = time.perf_counter()
        result = trainer.train()
        train_seconds = time.perf_counter() - started
        steps = int(result.global_step)
        adapter_loss = trainer.evaluate()["eval_loss"]  # the best checkpoint (load_best_model_at_end)
        log(f"adapter eval loss {adapter_loss:.4f} after {steps} steps in {train_seconds:.1f}s")
        model = trainer.model
        curves = loss_curves(trainer.state.log_history)
    finally:
        shutil.rmtree(checkpoints, ignore_errors=True)
    _set_mode(model, backend, training=False)

    eval_split = list(data["eval"])
    gate_rows = eval_split[: config.task_gate_questions]
    if task_gate:
        gate = compare_on_questions(model, tokenizer, gate_rows, example_messages, config.task_gate_max_tokens, device)
        log(f"task gate on {len(gate_rows)} questions: base {gate['base']}, adapter {gate['adapter']}")
    else:
        gate = {"base": {}, "adapter": {}, "examples": []}

    smoke_prompt = render_prompt(messages_of(eval_split[0]), tokenizer)
    reference = greedy_reference(model, tokenizer, smoke_prompt, config.smoke_max_tokens, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    plot = plot_loss_curves(curves, Path(out_dir) / LOSS_PLOT)
    losses = [v for _, v in curves["train"]]
    return {
        "backend": backend, "device": str(device), "trainer": "trl.SFTTrainer",
        "base_eval_loss": base_loss, "eval_loss": adapter_loss,
        "train_loss_first": losses[0] if losses else None, "train_loss_last": losses[-1] if losses else None,
        "steps": steps, "train_examples": len(train_rows), "eval_examples": len(eval_rows),
        "left_out_too_long": train_long + eval_long, "train_seconds": train_seconds,
        "seconds_per_step": train_seconds / max(1, steps), "torch_threads": torch.get_num_threads(),
        "loss_curves": curves,
        "task_gate": {"base": gate["base"], "adapter": gate["adapter"], "examples": gate["examples"]},
        "loss_plot_png_base64": plot,
        "smoke": {"prompt": smoke_prompt, "max_tokens": config.smoke_max_tokens, "reference_token_ids":
                  reference["token_ids"], "reference_text": reference["text"],
                  "reference_dtype": str(next(model.parameters()).dtype).removeprefix("torch.")},
    }
