"""Gates that decide whether an adapter may be deployed: eval loss, and grounded answering on held-out questions
(answer token-F1 / exact match, SQuAD-style normalisation, and citation accuracy) against the base model."""

import math
import re
import string

from assets.grounded_prompt import cited_numbers, render_prompt

_CITATION = re.compile(r"\[\d{1,3}\]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SOURCE_LINE = re.compile(r"^\[(\d{1,3})\] \(", re.MULTILINE)
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def eval_gate(base_loss: float, adapter_loss: float, min_improvement: float) -> bool:
    return bool(math.isfinite(adapter_loss) and adapter_loss < base_loss - min_improvement)


def answer_tokens(text: str) -> list[str]:
    """Lower-cased words without citations, punctuation or articles (SQuAD normalisation)."""
    text = _CITATION.sub(" ", text or "").casefold().translate(_PUNCTUATION)
    return _ARTICLES.sub(" ", text).split()


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = answer_tokens(prediction), answer_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum(min(pred.count(t), ref.count(t)) for t in set(pred) & set(ref))
    if not common:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> float:
    return float(answer_tokens(prediction) == answer_tokens(reference))


def source_count(context: str) -> int:
    """How many numbered sources a formatted context holds."""
    return len(_SOURCE_LINE.findall(context or ""))


def citation_correct(prediction: str, gold: list[int], sources: int | None = None) -> float:
    """1.0 when the answer cites exactly the gold sources (none when the gold passage was left out), else 0.0."""
    return float(set(cited_numbers(prediction, sources)) == set(gold))


def gold_citations(row: dict) -> list[int]:
    return [int(n) for n in (row.get("citations") or "").split(",") if n.strip()]


def score_answers(predictions: list[str], rows: list[dict]) -> dict:
    """Mean token-F1, exact match and citation accuracy of predictions against the rows' outputs and citations."""
    n = max(1, len(rows))
    return {
        "questions": len(rows),
        "f1": sum(token_f1(p, r["output"]) for p, r in zip(predictions, rows)) / n,
        "exact_match": sum(exact_match(p, r["output"]) for p, r in zip(predictions, rows)) / n,
        "citation_accuracy": sum(citation_correct(p, gold_citations(r), source_count(r["input"]))
                                 for p, r in zip(predictions, rows)) / n,
    }


def task_gate(base: dict, adapter: dict, min_margin: float = 0.0) -> tuple[bool, list[str]]:
    """The adapter must beat the base by more than min_margin on token-F1 and on citation accuracy, and not lose
    exact match (by more than -min_margin when the margin is negative). Returns (passed, reasons it failed)."""
    reasons = []
    for metric in ("f1", "citation_accuracy"):
        if not adapter[metric] - base[metric] > min_margin:
            reasons.append(f"{metric} {adapter[metric]:.3f} does not beat the base's {base[metric]:.3f} "
                           f"by more than {min_margin:g}")
    if adapter["exact_match"] - base["exact_match"] < min(min_margin, 0.0):
        reasons.append(f"exact_match {adapter['exact_match']:.3f} is below the base's {base['exact_match']:.3f}")
    return not reasons, reasons


def greedy_answers(model, tokenizer, prompts: list[str], max_new_tokens: int, device) -> list[str]:
    """Greedy completions (HF generate) of the rendered prompts, special tokens dropped."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for prompt in prompts:
            inputs = tokenizer(prompt, return_tensors="pt").to(device)  # as vLLM tokenizes a completion prompt
            ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
            out.append(tokenizer.decode(ids[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return out


def compare_on_questions(model, tokenizer, rows: list[dict], messages_for, max_new_tokens: int, device) -> dict:
    """Base (adapter disabled) vs adapter greedy answers on rows: {"base": scores, "adapter": scores, "examples"}."""
    prompts = [render_prompt(messages_for(row), tokenizer) for row in rows]
    with model.disable_adapter():
        base_answers = greedy_answers(model, tokenizer, prompts, max_new_tokens, device)
    adapter_answers = greedy_answers(model, tokenizer, prompts, max_new_tokens, device)
    return {"base": score_answers(base_answers, rows), "adapter": score_answers(adapter_answers, rows),
            "examples": [{"question": r["instruction"], "reference": r["output"], "base": b, "adapter": a}
                         for r, b, a in list(zip(rows, base_answers, adapter_answers))[:5]]}


def gate_table(base: dict, adapter: dict) -> str:
    """Markdown table of the task-gate figures."""
    lines = ["| metric | base | adapter | delta |", "| --- | --- | --- | --- |"]
    for metric in ("f1", "exact_match", "citation_accuracy"):
        lines.append(f"| {metric} | {base[metric]:.3f} | {adapter[metric]:.3f} | {adapter[metric] - base[metric]:+.3f} |")
    lines.append(f"| questions | {base['questions']} | {adapter['questions']} | |")
    return "\n".join(lines)
