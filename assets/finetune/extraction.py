"""The extraction adapter's dataset: a user's labeled examples plus the graph's own trusted facts, as the exact
prompt -> JSON answer pairs the LLM extraction layer sends and reads (assets/knowledge_graph/llm_prompt.py).

Why: a small served model (SmolLM2-135M) copies the answer format from a few worked examples but rarely the
judgement; a LoRA adapter trained on the user's ontology learns both. The rows are the layer's own chat messages
(ontology instructions, the nearest labeled examples but never the row's own text, the chunk) and the answer in
the layer's compact JSON, so that what the adapter learns is what the layer asks at serving time.

Sources, each row saying which:
- examples.jsonl beside the ontology (resources/ontology_examples.py), answered as llm_prompt.example_answer does;
- graph_facts of every document whose facts conform to the ontology's SHACL shapes, keeping per chunk only
  relations at or above min_score from layers other than the LLM itself (no training on its own guesses).

    from assets.finetune.extraction import extraction_rows
    rows = extraction_rows(ontology, chunks, facts)
"""

from __future__ import annotations

import hashlib
import json

from dagster import Config
from pydantic import Field

from assets.finetune.train import LoraTrainingConfig
from assets.knowledge_graph.llm_prompt import (
    FEW_SHOT,
    answer_from_facts,
    answered_examples,
    compact_json,
    extraction_messages,
)
from assets.knowledge_graph.llm_validation import _folded, validate_extraction
from resources.ontology import Ontology

COLUMNS = ["id", "source", "text", "messages", "output"]


class ExtractionDatasetConfig(Config):
    eval_fraction: float = Field(default=0.2, gt=0.0, lt=1.0, description="Share of texts held out for eval loss.")
    seed: int = 0
    min_score: float = Field(default=0.6, ge=0.0, le=1.0, description="Graph relations below this confidence "
                             "(the layer's score in graph_facts) are left out of the training answers.")
    exclude_layers: list[str] = Field(default_factory=lambda: ["llm"], description="Layers whose graph facts are "
                                      "never training targets (the LLM layer's own answers by default).")
    few_shot: int = Field(default=FEW_SHOT, ge=0, description="Labeled examples in each prompt (as the LLM layer).")
    max_graph_rows: int = Field(default=2000, ge=0, description="At most this many chunks taken from the graph.")


class ExtractionTrainingConfig(LoraTrainingConfig):
    max_seq_len: int = Field(default=2048, ge=16, description="Few-shot prompts are long; longer rows are left out.")


def row_messages(row: dict) -> list[dict]:
    """The chat messages of a dataset row (what the trainer renders through the chat template)."""
    return json.loads(row["messages"])


def _row(ontology: Ontology, text: str, answer: dict, source: str, few_shot: int) -> dict:
    return {"id": hashlib.sha256(f"{source}\0{text}".encode()).hexdigest()[:16], "source": source, "text": text,
            "messages": json.dumps(extraction_messages(ontology, text, few_shot), ensure_ascii=False),
            "output": compact_json(answer)}


def _name_in(text: str, entity: dict) -> str | None:
    """The entity's name or alias as the chunk spells it (answers may only use names the text contains)."""
    folded = _folded(text)
    for name in [entity.get("name", ""), *entity.get("aliases", [])]:
        if name and _folded(name) in folded:
            return name
    return None


def graph_answer(facts: dict, chunk: dict, ontology: Ontology, min_score: float, exclude_layers) -> dict | None:
    """One chunk's trusted facts (one document's graph_facts) as a validated answer; None when none is left."""
    chunk_id = chunk["chunk_id"]
    by_id = {e["id"]: e for e in facts.get("entities", [])}
    answer: dict = {"entities": [], "relations": [], "attributes": []}
    named: dict[str, str] = {}

    def name_of(entity_id: str) -> str | None:
        entity = by_id.get(entity_id)
        name = _name_in(chunk["text"], entity) if entity else None
        if name and name not in named:
            named[name] = entity["label"]
            answer["entities"].append({"name": name, "class": entity["label"]})
        return name

    for rel in facts.get("relations", []):
        if rel.get("chunk_id") != chunk_id or rel.get("layer") in exclude_layers:
            continue
        if float(rel.get("score", 1.0)) < min_score:
            continue
        source, target = name_of(rel["source"]), name_of(rel["target"])
        if source and target:
            answer["relations"].append({"source": source, "relation": rel["type"], "target": target})
    for attr in facts.get("attributes", []):
        if attr.get("chunk_id") != chunk_id or attr.get("layer") in exclude_layers:
            continue
        if float(attr.get("score", 1.0)) < min_score:
            continue
        holder = name_of(attr["entity"])
        if holder:
            answer["attributes"].append({"entity": holder, "property": attr["property"], "value": attr["value"]})
    if not (answer["relations"] or answer["attributes"]):
        return None
    checked = validate_extraction(answer, ontology, chunk)
    return answer_from_facts(checked) if checked["relations"] or checked["attributes"] else None


def extraction_rows(ontology: Ontology, chunks: list[dict], facts: list[dict],
                    config: ExtractionDatasetConfig | None = None) -> tuple[list[dict], dict]:
    """(rows, stats): the labeled examples and the SHACL-conforming documents' trusted facts as training rows."""
    config = config or ExtractionDatasetConfig()
    rows = [_row(ontology, text, answer, "examples.jsonl", config.few_shot)
            for text, answer in answered_examples(ontology)]
    stats = {"example_rows": len(rows), "documents": len(facts), "documents_not_shacl_valid": [],
             "graph_rows": 0, "graph_relations": 0, "graph_attributes": 0}
    chunks_by_doc: dict[str, list[dict]] = {}
    for chunk in chunks:
        chunks_by_doc.setdefault(chunk["doc_id"], []).append(chunk)
    seen = {_folded(row["text"]) for row in rows}  # a labeled text's own answer wins over the graph's
    for doc in facts:
        conforms, _, _ = ontology.validate_shacl(doc)
        if not conforms:
            stats["documents_not_shacl_valid"].append(doc.get("doc_id", "?"))
            continue
        for chunk in chunks_by_doc.get(doc.get("doc_id"), []):
            if stats["graph_rows"] >= config.max_graph_rows or _folded(chunk["text"]) in seen:
                continue
            answer = graph_answer(doc, chunk, ontology, config.min_score, set(config.exclude_layers))
            if answer is None:
                continue
            seen.add(_folded(chunk["text"]))
            rows.append(_row(ontology, chunk["text"], answer, f"graph {doc.get('doc_id')} {chunk['chunk_id']}",
                             config.few_shot))
            stats["graph_rows"] += 1
            stats["graph_relations"] += len(answer["relations"])
            stats["graph_attributes"] += len(answer["attributes"])
    return rows, stats


def split_rows(rows: list[dict], eval_fraction: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Train/eval by a hash of the text (one text never in both); at least one row in each when there are two."""
    def bucket(row: dict) -> float:
        return int(hashlib.sha256(f"{seed}\0{_folded(row['text'])}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    ordered = sorted(rows, key=bucket)
    cut = min(len(ordered) - 1, max(1, round(len(ordered) * eval_fraction))) if len(ordered) > 1 else 0
    return ordered[cut:], ordered[:cut]


def split_leakage(train: list[dict], evals: list[dict]) -> dict[str, int]:
    """Eval rows whose text (folded) or whole prompt also is a train row's."""
    texts, prompts = {_folded(r["text"]) for r in train}, {r["messages"] for r in train}
    return {"shared_texts": sum(_folded(r["text"]) in texts for r in evals),
            "identical_prompts": sum(r["messages"] in prompts for r in evals)}


def row_problems(rows: list[dict], ontology: Ontology) -> list[str]:
    """Rows whose answer the LLM layer's own validation would not keep whole (the format check)."""
    problems = []
    for row in rows:
        messages = row_messages(row)
        if messages[-1] != {"role": "user", "content": f"Text: {row['text'].strip()}"}:
            problems.append(f"{row['source']}: the prompt does not end with the row's text")
        checked = validate_extraction(row["output"], ontology, {"doc_id": row["source"], "chunk_id": row["id"],
                                                                "text": row["text"]})
        if checked["rejected"]:
            problems.append(f"{row['source']}: {checked['rejected'][0]}")
        elif answer_from_facts(checked) != json.loads(row["output"]):
            problems.append(f"{row['source']}: the answer is not in the layer's answer format")
    return problems
