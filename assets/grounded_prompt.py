"""The one prompt format for grounded answers: the ask path sends it, the RAFT fine-tune data teaches it.

Keeping both on this module means the adapter is trained on exactly the prompt it is served with.
A source is a dict with at least `text` and `doc_id` (optionally `chunk_id`, `seq`); a graph path is a
plain string such as "checkout-web -RUNS_ON-> app-server-01 -MANAGED_BY-> Data Team". The answer cites
sources by their number in square brackets: "billing-db is managed by the Data Team [2]."
"""

from __future__ import annotations

import re

SYSTEM_PROMPT = (
    "You answer questions about the company's documents. Use only the numbered sources and graph facts "
    "given. Cite every source you use by its number in square brackets, like [1]. If the sources do not "
    "contain the answer, say that you do not know."
)
NO_ANSWER = "I do not know: the sources do not say."
MAX_SOURCE_CHARS = 1200

_CITATION = re.compile(r"\[(\d{1,3})\]")


def source_label(source: dict) -> str:
    seq = source.get("seq")
    return f"{source.get('doc_id', '?')}#{seq}" if seq is not None else str(source.get("doc_id", "?"))


def format_context(sources: list[dict], graph_paths: list[str] | None = None,
                   max_source_chars: int = MAX_SOURCE_CHARS) -> str:
    """Numbered sources ([1] doc#seq: text) followed by the graph facts, one per line."""
    lines = ["Sources:"]
    for number, source in enumerate(sources, 1):
        text = " ".join(str(source.get("text", "")).split())[:max_source_chars]
        lines.append(f"[{number}] ({source_label(source)}) {text}")
    if graph_paths:
        lines.append("Graph facts:")
        lines.extend(f"- {path}" for path in graph_paths)
    return "\n".join(lines)


def grounded_messages(question: str, sources: list[dict], graph_paths: list[str] | None = None) -> list[dict]:
    """Chat messages (system + user) for a question over numbered sources and graph paths."""
    return context_messages(question, format_context(sources, graph_paths))


def context_messages(question: str, context: str) -> list[dict]:
    """grounded_messages for an already formatted context (format_context's text, as the fine-tune data stores it)."""
    user = f"{context}\n\nQuestion: {question.strip()}\nAnswer with citations:"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def render_prompt(messages: list[dict], tokenizer=None) -> str:
    """The messages as one prompt string: the tokenizer's chat template when it has one, else plain text."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    body = "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in messages)
    return f"{body}\n\nASSISTANT:"


def cited_numbers(answer: str, source_count: int | None = None) -> list[int]:
    """Source numbers cited in an answer, in order, without repeats; out-of-range numbers dropped."""
    seen: list[int] = []
    for match in _CITATION.finditer(answer or ""):
        number = int(match.group(1))
        if number >= 1 and (source_count is None or number <= source_count) and number not in seen:
            seen.append(number)
    return seen
