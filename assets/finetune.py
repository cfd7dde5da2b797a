"""Fine-tune stage: instruction dataset -> LoRA adapter (eval-loss gate) -> vLLM deployment with rollback.

    finetune_dataset    chunks (+ graph facts) -> PII-scrubbed, deduplicated instruction pairs, train/eval split,
                        saved with datasets.save_to_disk; checks: schema, no PII left, no train/eval leakage.
    lora_adapter        peft LoRA on the local base model (unsloth when CUDA and unsloth are present),
                        hyperparameters as Dagster Config, published to the versioned adapter registry with a
                        manifest; blocking check: eval loss with the adapter beats the base model's.
    adapter_deployment  loads the adapter into a running vLLM server by POST /v1/load_lora_adapter, runs a greedy
                        smoke completion against the reference recorded at training time, then swaps the served
                        alias in place; any failure unloads the candidate and keeps (or restores) the previous one.
"""

import hashlib
import json
import math
import random
import re
import shutil
import tempfile
import time
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    Config,
    Failure,
    MetadataValue,
    Output,
    asset,
)
from pydantic import Field

from assets import _offline  # noqa: F401
from resources.llm import AdapterRegistry, BaseModelFolder, VLLMError, VLLMServer, folder_fingerprint
from resources.milvus import default_data_dir

GROUP = "finetune"
COLUMNS = ["id", "instruction", "input", "output", "source", "doc_id", "chunk_id"]
CHUNK_ID_SEP = ","  # chunk_id of a graph_relation example quoting several chunks: "id1,id2" (ids are hex digests)
PROMPT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
PROMPT_TEMPLATE_NO_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n"

# ---------------------------------------------------------------------------------------------------------------
# PII scrubbing
# ---------------------------------------------------------------------------------------------------------------

# Boundaries are ASCII-only on purpose: Korean text glues particles and labels to numbers and addresses
# ("전화010-1234-5678로", "메일은alice@example.com으로"), and Hangul counts as \w for Python's re.
EMAIL_RE = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
                      r"(?![A-Za-z0-9-])", re.ASCII)
# Korean resident registration number: YYMMDD-GNNNNNN (G = 1..8), with or without the hyphen.
KOREAN_RRN_RE = re.compile(r"(?<![A-Za-z0-9])\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\s?-?\s?[1-8]\d{6}"
                           r"(?![A-Za-z0-9])",
                           re.ASCII)
# Phone numbers, three shapes (anything else - dates, versions, IPs, runs of ordinary numbers - is left alone):
#   international  +country code, then 2-6 digit groups: +82 10-1234-5678, +821012345678, +49 30 12345678,
#                  +33 1 23 45 67 89, +1 (555) 123-4567, +82 (0)2 123 4567 (at least 8 digits in all)
#   Korean         0 + area/carrier code, then 3-4 and 4 digits: 010-1234-5678, 02-123-4567, (02) 123-4567,
#                  031.123.4567, and mobiles without separators: 01012345678
#   North American (555) 123-4567, 555-123-4567, 555.123.4567, 555 123 4567 (area/exchange 2-9 when spaced)
_PHONE_END = r"(?![A-Za-z0-9]|-[A-Za-z0-9]|\.\d)"
PHONE_RE = re.compile(
    r"(?<![A-Za-z0-9+])\+\d{1,3}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,5})){2,6}" + _PHONE_END
    + r"|(?<![A-Za-z0-9.+-])(?:\(0\d{1,3}\)[ .-]?|0\d{1,3}[ .-]|0\d{1,3}\)\s?)\d{3,4}[ .-]\d{4}" + _PHONE_END
    + r"|(?<![A-Za-z0-9.+-])01[016789]\d{7,8}" + _PHONE_END
    + r"|(?<![A-Za-z0-9.+-])(?:\(\d{3}\) ?\d{3}[.-]|\d{3}-\d{3}-|\d{3}\.\d{3}\.|[2-9]\d{2} [2-9]\d{2} )\d{4}"
    + _PHONE_END,
    re.ASCII,
)


def _phone_digits_ok(match: re.Match) -> bool:
    """International matches need at least 8 digits (+1 2 3 is not a phone number)."""
    return not match.group(0).startswith("+") or sum(c.isdigit() for c in match.group(0)) >= 8


PII_PATTERNS = [("EMAIL", EMAIL_RE), ("KOREAN_RRN", KOREAN_RRN_RE), ("PHONE", PHONE_RE)]


def scrub_pii(text: str) -> tuple[str, dict[str, int]]:
    """Replace emails, Korean resident registration numbers and phone numbers by [EMAIL] etc."""
    counts: dict[str, int] = {}
    for label, pattern in PII_PATTERNS:
        n = 0

        def replace(match, label=label):
            nonlocal n
            if label == "PHONE" and not _phone_digits_ok(match):
                return match.group(0)
            n += 1
            return f"[{label}]"

        text = pattern.sub(replace, text)
        if n:
            counts[label] = counts.get(label, 0) + n
    return text, counts


def find_pii(text: str) -> list[str]:
    return [label for label, pattern in PII_PATTERNS
            if any(label != "PHONE" or _phone_digits_ok(m) for m in pattern.finditer(text or ""))]


# ---------------------------------------------------------------------------------------------------------------
# Instruction examples from chunks and graph facts (pure functions)
# ---------------------------------------------------------------------------------------------------------------

_RELATION_QUESTIONS = {
    "RUNS_ON": ("What does {s} run on?", "{s} runs on {t}."),
    "DEPENDS_ON": ("What does {s} depend on?", "{s} depends on {t}."),
    "MANAGED_BY": ("Who manages {s}?", "{s} is managed by {t}."),
    "OWNED_BY": ("Who owns {s}?", "{s} is owned by {t}."),
    "MAINTAINED_BY": ("Who maintains {s}?", "{s} is maintained by {t}."),
    "PART_OF": ("What is {s} part of?", "{s} is part of {t}."),
    "CONNECTS_TO": ("What does {s} connect to?", "{s} connects to {t}."),
    "STORES_DATA_IN": ("Where does {s} store its data?", "{s} stores its data in {t}."),
}


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", (text or "").strip()).casefold()


def _join(names: list[str]) -> str:
    names = sorted(dict.fromkeys(names))
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _split_passage(text: str) -> tuple[str, str] | None:
    """Split a chunk near its middle at a sentence (else word) boundary: (lead, continuation)."""
    text = re.sub(r"[ \t]+", " ", text.strip())
    middle = len(text) // 2
    cuts = [m.end() for m in re.finditer(r"[.!?:]\s+|\n+", text)]
    cuts = [c for c in cuts if len(text) * 0.2 <= c <= len(text) * 0.8]
    if not cuts:
        cuts = [m.start() for m in re.finditer(r"\s", text) if len(text) * 0.3 <= m.start() <= len(text) * 0.7]
    if not cuts:
        return None
    cut = min(cuts, key=lambda c: abs(c - middle))
    lead, rest = text[:cut].strip(), text[cut:].strip()
    return (lead, rest) if lead and rest else None


def _doc_title(doc_id: str) -> str:
    name = doc_id.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0].replace("-", " ").replace("_", " ")


def chunk_examples(chunks: list[dict], min_chars: int = 40) -> list[dict]:
    rows = []
    for chunk in chunks:
        text = (chunk.get("text") or "").strip()
        if len(text) < min_chars:
            continue
        title = _doc_title(chunk["doc_id"])
        split = _split_passage(text)
        if split:
            lead, rest = split
            rows.append({"instruction": f"Continue this passage from the document '{title}'.", "input": lead,
                         "output": rest, "source": "chunk_continuation", "doc_id": chunk["doc_id"],
                         "chunk_id": chunk["chunk_id"]})
        first_line = text.splitlines()[0].strip()
        if 3 <= len(first_line) <= 120 and len(text) > len(first_line) + min_chars // 2:
            rows.append({"instruction": f"What does the document '{title}' say about \"{first_line}\"?", "input": "",
                         "output": text, "source": "chunk_recall", "doc_id": chunk["doc_id"],
                         "chunk_id": chunk["chunk_id"]})
    return rows


def fact_examples(facts: list[dict]) -> list[dict]:
    """Question/answer pairs from graph facts: one per (entity, relation type) with all targets, one per entity."""
    entities: dict[str, dict] = {}
    for doc in facts:
        for entity in doc.get("entities") or []:
            entities.setdefault(entity["id"], entity)
    grouped: dict[tuple[str, str], dict] = {}
    for doc in facts:
        for rel in doc.get("relations") or []:
            source, target = entities.get(rel.get("source")), entities.get(rel.get("target"))
            if not source or not target:
                continue
            group = grouped.setdefault((rel["source"], rel["type"]), {
                "source": source, "type": rel["type"], "targets": [], "sentences": [], "doc_id": doc.get("doc_id", ""),
                "chunk_ids": []})
            group["targets"].append(target["name"])
            if rel.get("chunk_id"):
                group["chunk_ids"].append(rel["chunk_id"])
            if rel.get("sentence"):
                group["sentences"].append(rel["sentence"].strip())
    rows = []
    for (_, rel_type), group in sorted(grouped.items()):
        name = group["source"]["name"]
        question, answer = _RELATION_QUESTIONS.get(
            rel_type, ("Which entities is {s} linked to by the relation " + rel_type.replace("_", " ").lower() + "?",
                       "{s} " + rel_type.replace("_", " ").lower() + " {t}."))
        rows.append({"instruction": question.format(s=name), "input": " ".join(dict.fromkeys(group["sentences"])),
                     "output": answer.format(s=name, t=_join(group["targets"])), "source": "graph_relation",
                     # every chunk the input quotes: the split keeps them together, the leakage check sees them all
                     "doc_id": group["doc_id"], "chunk_id": CHUNK_ID_SEP.join(dict.fromkeys(group["chunk_ids"]))})
    for entity_id, entity in sorted(entities.items()):
        aliases = [a for a in (entity.get("aliases") or []) if a and a != entity["name"]]
        label = entity.get("label", "entity").replace("_", " ").lower()
        answer = f"{entity['name']} is {'an' if label[:1] in 'aeiou' else 'a'} {label}."
        if aliases:
            answer += f" It is also known as {_join(aliases)}."
        chunk_ids = entity.get("chunk_ids") or [""]
        rows.append({"instruction": f"What is {entity['name']}?", "input": "", "output": answer,
                     "source": "graph_entity", "doc_id": "", "chunk_id": chunk_ids[0]})
    return rows


def _add_counts(totals: dict[str, int], counts: dict[str, int]) -> None:
    for label, n in counts.items():
        totals[label] = totals.get(label, 0) + n


def scrub_sources(chunks: list[dict], facts: list[dict]) -> tuple[list[dict], list[dict], dict[str, int]]:
    """Scrub PII from the raw chunk texts, document ids and graph facts BEFORE examples are cut from them: a
    passage split between "call 010" and "1234 5678" would otherwise leave no recognisable number in either half,
    and document ids / entity names end up in columns and prompts of their own."""
    totals: dict[str, int] = {}

    def clean(value):
        if not isinstance(value, str):
            return value
        value, counts = scrub_pii(value)
        _add_counts(totals, counts)
        return value

    out_chunks = [dict(c, text=clean(c.get("text") or ""), doc_id=clean(c.get("doc_id") or ""),
                       chunk_id=clean(c.get("chunk_id") or "")) for c in chunks]
    out_facts = []
    for doc in facts:
        doc = dict(doc, doc_id=clean(doc.get("doc_id") or ""))
        doc["entities"] = [dict(e, name=clean(e.get("name") or ""), aliases=[clean(a) for a in e.get("aliases") or []])
                           for e in doc.get("entities") or []]
        doc["relations"] = [dict(r, sentence=clean(r.get("sentence") or ""), chunk_id=clean(r.get("chunk_id") or ""))
                            for r in doc.get("relations") or []]
        out_facts.append(doc)
    return out_chunks, out_facts, totals


def scrub_examples(rows: list[dict]) -> tuple[list[dict], dict[str, int]]:
    """Scrub every text column of the examples (ids and metadata included, not only the prompt/response)."""
    totals: dict[str, int] = {}
    out = []
    for row in rows:
        row = dict(row)
        for field in ("instruction", "input", "output", "doc_id", "chunk_id"):
            row[field], counts = scrub_pii(row.get(field) or "")
            _add_counts(totals, counts)
        out.append(row)
    return out, totals


def example_key(row: dict) -> str:
    return hashlib.sha256("\x00".join(_norm(row[f]) for f in ("instruction", "input", "output")).encode()).hexdigest()


def deduplicate(rows: list[dict]) -> tuple[list[dict], int]:
    seen, out = set(), []
    for row in rows:
        key = example_key(row)
        if key in seen:
            continue
        seen.add(key)
        out.append(dict(row, id=key[:16]))
    return out, len(rows) - len(out)


def source_chunks(row: dict) -> list[str]:
    """The chunk ids an example was made from (a graph relation's input may quote sentences of several chunks)."""
    return [c for c in (row.get("chunk_id") or "").split(CHUNK_ID_SEP) if c]


def split_train_eval(rows: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Deterministic split by group: examples sharing an output, a prompt or a source chunk land in the same split."""
    # union-find over examples linked by identical normalised output or identical prompt
    parent = list(range(len(rows)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    keys = (lambda r: "o:" + _norm(r["output"]),
            lambda r: "p:" + _norm(r["instruction"]) + "\x00" + _norm(r["input"]),
            lambda r: ["c:" + c for c in source_chunks(r)])
    for field_key in keys:
        first: dict[str, int] = {}
        for i, row in enumerate(rows):
            found = field_key(row)
            for k in ([found] if isinstance(found, str) else found):
                if k in first:
                    parent[find(i)] = find(first[k])
                else:
                    first[k] = i
    groups: dict[int, list[int]] = {}
    for i in range(len(rows)):
        groups.setdefault(find(i), []).append(i)

    def score(members):
        token = f"{seed}\x00" + min(rows[i]["id"] for i in members)
        return int(hashlib.sha256(token.encode()).hexdigest()[:12], 16) / float(1 << 48)

    # groups in a seeded pseudo-random order fill the eval split up to its target size, the rest is train
    ordered = sorted(groups.values(), key=score)
    target = math.ceil(eval_fraction * len(rows)) if eval_fraction > 0 else 0
    eval_groups, size = [], 0
    for group in ordered:
        if size + len(group) <= target:
            eval_groups.append(group)
            size += len(group)
    if not eval_groups and target and len(ordered) >= 2:
        eval_groups = [min(ordered, key=len)]
    if len(eval_groups) == len(ordered) and len(ordered) >= 2:
        eval_groups = eval_groups[:-1]
    eval_ids = {i for g in eval_groups for i in g}
    train = [rows[i] for i in range(len(rows)) if i not in eval_ids]
    evals = [rows[i] for i in range(len(rows)) if i in eval_ids]
    return train, evals


def build_instruction_examples(chunks: list[dict], facts: list[dict], eval_fraction: float = 0.2, seed: int = 0,
                               min_chunk_chars: int = 40) -> tuple[list[dict], list[dict], dict]:
    """Pure builder: (train, eval, stats) from chunk rows and graph-fact documents."""
    chunks, facts, pii = scrub_sources(chunks, facts)
    raw = chunk_examples(chunks, min_chunk_chars) + fact_examples(facts)
    scrubbed, more = scrub_examples(raw)  # safety net: text assembled from scrubbed parts
    _add_counts(pii, more)
    scrubbed = [r for r in scrubbed if r["instruction"].strip() and r["output"].strip()]
    unique, duplicates = deduplicate(scrubbed)
    train, evals = split_train_eval(unique, eval_fraction, seed)
    stats = {"candidates": len(raw), "duplicates_removed": duplicates, "pii_replaced": pii,
             "train": len(train), "eval": len(evals),
             "by_source": {s: sum(1 for r in unique if r["source"] == s) for s in sorted({r["source"] for r in unique})}}
    return [{c: r[c] for c in COLUMNS} for r in train], [{c: r[c] for c in COLUMNS} for r in evals], stats


def leakage(train: list[dict], evals: list[dict]) -> dict[str, int]:
    """Counts of eval examples that leak from train: identical example, prompt or output, or the same source chunk."""
    t_keys = {example_key(r) for r in train}
    t_prompts = {(_norm(r["instruction"]), _norm(r["input"])) for r in train}
    t_outputs = {_norm(r["output"]) for r in train}
    t_chunks = {c for r in train for c in source_chunks(r)}
    return {
        "identical_examples": sum(example_key(r) in t_keys for r in evals),
        "shared_source_chunks": sum(any(c in t_chunks for c in source_chunks(r)) for r in evals),
        "identical_prompts": sum((_norm(r["instruction"]), _norm(r["input"])) in t_prompts for r in evals),
        "identical_outputs": sum(_norm(r["output"]) in t_outputs for r in evals),
    }


def schema_problems(dataset_dict) -> list[str]:
    problems = []
    for split in ("train", "eval"):
        if split not in dataset_dict:
            problems.append(f"missing split {split!r}")
            continue
        ds = dataset_dict[split]
        if list(ds.column_names) != COLUMNS:
            problems.append(f"{split}: columns {ds.column_names} != {COLUMNS}")
            continue
        for column in COLUMNS:
            if getattr(ds.features[column], "dtype", None) != "string":
                problems.append(f"{split}.{column}: dtype {ds.features[column]} is not string")
        if ds.num_rows == 0:
            problems.append(f"{split}: no rows")
        for column in ("id", "instruction", "output"):
            empty = sum(1 for v in ds[column] if not (v or "").strip())
            if empty:
                problems.append(f"{split}.{column}: {empty} empty values")
        if len(set(ds["id"])) != ds.num_rows:
            problems.append(f"{split}: duplicate ids")
    return problems


def format_prompt(row: dict) -> str:
    if (row.get("input") or "").strip():
        return PROMPT_TEMPLATE.format(instruction=row["instruction"], input=row["input"])
    return PROMPT_TEMPLATE_NO_INPUT.format(instruction=row["instruction"])


def _by_partition(value, is_single) -> dict:
    """Dagster passes one partition's value itself, several as {partition_key: value}, none as None."""
    if value is None:
        return {}
    if is_single(value):
        return {"_": value}
    return dict(value)


# ---------------------------------------------------------------------------------------------------------------
# Asset: instruction dataset
# ---------------------------------------------------------------------------------------------------------------


class InstructionDatasetConfig(Config):
    eval_fraction: float = Field(default=0.2, gt=0.0, lt=1.0,
                                 description="Share of example groups held out for evaluation (0 < x < 1).")
    seed: int = 0
    min_chunk_chars: int = 40


def datasets_root() -> Path:
    return default_data_dir() / "finetune" / "datasets"


@asset(
    group_name=GROUP,
    ins={
        # every document partition; partitions that failed (or were not extracted yet) are skipped
        "document_chunks": AssetIn(metadata={"allow_missing_partitions": True}),
        "graph_facts": AssetIn(metadata={"allow_missing_partitions": True}),
    },
    description="Instruction/response pairs from every document's chunks and graph facts: PII removed, "
                "deduplicated, split into train/eval, saved with datasets.save_to_disk.",
    check_specs=[
        AssetCheckSpec("dataset_schema_valid", asset="finetune_dataset", blocking=True,
                       description="Both splits present, non-empty, string columns id/instruction/input/output/..."),
        AssetCheckSpec("no_pii_remaining", asset="finetune_dataset", blocking=True,
                       description="No email, phone number or Korean resident registration number left."),
        AssetCheckSpec("no_train_eval_leakage", asset="finetune_dataset", blocking=True,
                       description="No eval example, prompt or response identical to a train one."),
    ],
)
def finetune_dataset(context: AssetExecutionContext, config: InstructionDatasetConfig, document_chunks, graph_facts):
    yield from _materialize_dataset(context, config, document_chunks, graph_facts)


def _materialize_dataset(context, config: InstructionDatasetConfig, document_chunks, graph_facts):
    from datasets import Dataset, DatasetDict, Features, Value

    chunks_by_doc = _by_partition(document_chunks, lambda v: isinstance(v, list))
    facts_by_doc = _by_partition(graph_facts, lambda v: isinstance(v, dict) and "entities" in v)
    chunks = [row for key in sorted(chunks_by_doc) for row in (chunks_by_doc[key] or [])]
    facts = [facts_by_doc[key] for key in sorted(facts_by_doc) if facts_by_doc[key]]
    train, evals, stats = build_instruction_examples(chunks, facts, config.eval_fraction, config.seed,
                                                     config.min_chunk_chars)
    if not train or not evals:
        raise Failure(description=f"too few examples for a train/eval split (train={len(train)}, eval={len(evals)}); "
                                  "ingest more documents", metadata={"stats": MetadataValue.json(stats)})
    features = Features({c: Value("string") for c in COLUMNS})
    dataset = DatasetDict({"train": Dataset.from_list(train, features=features),
                           "eval": Dataset.from_list(evals, features=features)})
    fingerprint = hashlib.sha256(
        json.dumps([train, evals, COLUMNS], sort_keys=True).encode()).hexdigest()[:16]
    target = datasets_root() / fingerprint
    if not (target / "dataset_dict.json").is_file():
        staging = Path(tempfile.mkdtemp(prefix=f".{fingerprint}-", dir=_mkdir(datasets_root())))
        dataset.save_to_disk(str(staging))
        try:
            staging.rename(target)
        except OSError:  # the same content was saved meanwhile (same fingerprint): keep that copy
            shutil.rmtree(staging, ignore_errors=True)
            if not (target / "dataset_dict.json").is_file():
                raise
    from datasets import load_from_disk

    saved = load_from_disk(str(target))
    problems = schema_problems(saved)
    pii_left = {split: sum(1 for row in saved[split] if any(find_pii(row[c]) for c in COLUMNS)) for split in saved}
    leaks = leakage(list(saved["train"]), list(saved["eval"]))
    yield Output(
        {"path": str(target), "fingerprint": fingerprint, "train_rows": saved["train"].num_rows,
         "eval_rows": saved["eval"].num_rows},
        metadata={"path": str(target), "fingerprint": fingerprint, "train_rows": saved["train"].num_rows,
                  "eval_rows": saved["eval"].num_rows, "documents": len(chunks_by_doc),
                  "graph_fact_documents": len(facts), "stats": MetadataValue.json(stats),
                  "preview": MetadataValue.md(f"**{train[0]['instruction']}**\n\n{train[0]['output'][:300]}")},
    )
    yield AssetCheckResult(check_name="dataset_schema_valid", passed=not problems,
                           metadata={"problems": MetadataValue.json(problems)})
    yield AssetCheckResult(check_name="no_pii_remaining", passed=not any(pii_left.values()),
                           metadata={"rows_with_pii": MetadataValue.json(pii_left),
                                     "replaced": MetadataValue.json(stats["pii_replaced"])})
    yield AssetCheckResult(check_name="no_train_eval_leakage", passed=not any(leaks.values()),
                           metadata={"leaks": MetadataValue.json(leaks)})


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------------------------------------------
# LoRA training (peft; unsloth on CUDA)
# ---------------------------------------------------------------------------------------------------------------

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


def eval_gate(base_loss: float, adapter_loss: float, min_improvement: float) -> bool:
    return bool(math.isfinite(adapter_loss) and adapter_loss < base_loss - min_improvement)


@asset(
    group_name=GROUP,
    description="LoRA adapter trained with peft (unsloth on CUDA) on the instruction dataset; published as a new "
                "version in the adapter registry with a manifest (base model, dataset, hyperparameters, losses).",
    check_specs=[AssetCheckSpec("eval_loss_improves_over_base", asset="lora_adapter", blocking=True,
                                description="Eval loss with the adapter must be lower than the base model's; "
                                            "otherwise nothing downstream (deployment) runs.")],
)
def lora_adapter(context: AssetExecutionContext, config: LoraTrainingConfig, finetune_dataset: dict,
                 base_model: BaseModelFolder, adapter_registry: AdapterRegistry):
    base = base_model.resolve()
    demo = base_model.is_demo
    if demo:
        context.log.warning(f"base model is the TINY DEMO Llama (random weights) at {base}: "
                            "set DOCPLATFORM_BASE_MODEL to a real local model folder")
    staging_root = _mkdir(adapter_registry.family_dir)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=staging_root))
    try:
        metrics = train_lora(base, finetune_dataset["path"], config, staging, log=context.log.info)
        passed = eval_gate(metrics["base_eval_loss"], metrics["eval_loss"], config.min_eval_loss_improvement)
        manifest = {
            "base_model": {"path": str(base), "fingerprint": folder_fingerprint(base), "tiny_demo": demo},
            "dataset": {"path": finetune_dataset["path"], "fingerprint": finetune_dataset["fingerprint"],
                        "train_rows": finetune_dataset["train_rows"], "eval_rows": finetune_dataset["eval_rows"]},
            "hyperparameters": config.model_dump(),
            "metrics": {k: v for k, v in metrics.items() if k != "smoke"},
            "smoke": metrics["smoke"],
            "eval_gate": {"passed": passed, "base_eval_loss": metrics["base_eval_loss"],
                          "eval_loss": metrics["eval_loss"], "min_improvement": config.min_eval_loss_improvement},
            "status": "candidate" if passed else "rejected",
            "dagster_run_id": context.run_id,
        }
        path = adapter_registry.publish(staging, manifest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    manifest = json.loads((path / "manifest.json").read_text())
    improvement = metrics["base_eval_loss"] - metrics["eval_loss"]
    yield Output(
        {"version": manifest["version"], "path": str(path), "adapter_name": adapter_registry.name, "manifest": manifest},
        metadata={"version": manifest["version"], "path": str(path), "backend": metrics["backend"],
                  "base_model": str(base), "tiny_demo_base_model": demo,
                  "base_eval_loss": metrics["base_eval_loss"], "eval_loss": metrics["eval_loss"],
                  "steps": metrics["steps"], "train_seconds": metrics["train_seconds"],
                  "hyperparameters": MetadataValue.json(config.model_dump())},
    )
    yield AssetCheckResult(
        check_name="eval_loss_improves_over_base", passed=passed, severity=AssetCheckSeverity.ERROR,
        metadata={"base_eval_loss": metrics["base_eval_loss"], "adapter_eval_loss": metrics["eval_loss"],
                  "improvement": improvement, "min_improvement": config.min_eval_loss_improvement,
                  "version": manifest["version"]},
    )


# ---------------------------------------------------------------------------------------------------------------
# Deployment to vLLM with smoke completion and rollback
# ---------------------------------------------------------------------------------------------------------------


class DeploymentConfig(Config):
    smoke_prompt: str = Field(default="", description="Prompt for the smoke completion; empty = the manifest's.")
    smoke_max_tokens: int = Field(default=0, description="0 = the manifest's.")
    require_reference_match: bool = Field(
        default=True, description="Smoke completion must equal the greedy HF reference recorded at training time "
                                  "(exact for float32 serving; turn off for bf16/quantized servers).")


class DeploymentFailed(Failure):
    pass


def _smoke(vllm: VLLMServer, model_name: str, prompt: str, max_tokens: int, reference: list[int] | None,
           eos_id: int | None) -> tuple[bool, dict]:
    try:
        result = vllm.complete(model_name, prompt, max_tokens=max_tokens)
    except VLLMError as exc:
        return False, {"error": str(exc)}
    ids = list(result["token_ids"] or [])
    if eos_id is not None and ids and ids[-1] == eos_id:
        ids = ids[:-1]
    details = {"model": model_name, "text": result["text"], "token_ids": ids, "finish_reason": result["finish_reason"]}
    if not ids:
        return False, details | {"error": "empty completion"}
    if reference is not None and ids != list(reference):
        return False, details | {"error": "completion differs from the training-time greedy reference",
                                 "reference_token_ids": list(reference)}
    return True, details


def deploy_adapter(vllm: VLLMServer, registry: AdapterRegistry, adapter: dict, config: DeploymentConfig,
                   log=None) -> dict:
    """Load adapter into vLLM as <name>-<version>, smoke it, then swap the alias <name> in place; roll back on failure.

    Returns the deployment record; raises DeploymentFailed (after rolling back) when anything fails.
    """
    log = log or (lambda message: None)
    manifest = adapter["manifest"]
    version, path, alias = adapter["version"], adapter["path"], adapter["adapter_name"]
    candidate = f"{alias}-{version}"
    state = registry.deployments()
    previous = state.get("active")
    previous_path = str(registry.path_for(previous)) if previous else None
    smoke_cfg = manifest.get("smoke", {})
    prompt = config.smoke_prompt or smoke_cfg.get("prompt") or "Hello"
    max_tokens = config.smoke_max_tokens or smoke_cfg.get("max_tokens") or 16
    reference = None
    if config.require_reference_match and not config.smoke_prompt and not config.smoke_max_tokens:
        reference = smoke_cfg.get("reference_token_ids")
    eos_id = _eos_id(manifest)

    def fail(stage: str, reason: str, details: dict | None = None):
        registry.record_deployment(version=version, status="rolled_back", stage=stage, reason=reason,
                                   active_after=previous)
        raise DeploymentFailed(
            description=f"deployment of {candidate} failed at {stage}: {reason}; rolled back, "
                        f"serving {'previous ' + previous if previous else 'no adapter'} under {alias!r}",
            metadata={"stage": stage, "reason": reason, "still_active": previous or "",
                      "details": MetadataValue.json(details or {})},
        )

    if not manifest.get("eval_gate", {}).get("passed"):
        fail("eval_gate", "the adapter did not pass the eval-loss gate")
    unreachable = (f"vLLM server at {vllm.base_url} is not reachable; start one with `python -m resources.llm` or "
                   "set DOCPLATFORM_VLLM_URL; nothing was changed")
    if not vllm.healthy():
        raise DeploymentFailed(description=unreachable, metadata={"still_active": previous or ""})
    try:
        loaded = vllm.model_ids()
    except VLLMError as exc:
        raise DeploymentFailed(description=f"{unreachable} ({exc})", metadata={"still_active": previous or ""}) from exc

    def unload(name: str) -> None:
        # rollback steps must not be cut short by a server that went away mid-deployment
        try:
            vllm.unload_adapter(name)
        except VLLMError as exc:
            log(f"could not unload {name}: {exc}")

    if candidate in loaded:
        unload(candidate)
    # 1. load the candidate under its versioned name
    try:
        vllm.load_adapter(candidate, path)
    except VLLMError as exc:
        fail("load", str(exc))
    log(f"loaded {candidate} from {path}")
    # 2. smoke completion on the candidate; a failure unloads it, the alias is untouched
    ok, details = _smoke(vllm, candidate, prompt, max_tokens, reference, eos_id)
    if not ok:
        unload(candidate)
        reason = details.get("error", "smoke completion failed")
        if "reference_token_ids" in details and smoke_cfg.get("reference_dtype", "float32") != "float32":
            reason += (f" (the reference was recorded in {smoke_cfg['reference_dtype']}: greedy tokens of another "
                       "runtime need not match exactly; set require_reference_match=false to check for a non-empty "
                       "completion only)")
        fail("smoke", reason, details)
    # 3. swap the stable alias in place, smoke it again; restore the previous adapter on failure
    try:
        vllm.load_adapter(alias, path, inplace=alias in loaded)
        ok, alias_details = _smoke(vllm, alias, prompt, max_tokens, reference, eos_id)
    except VLLMError as exc:
        ok, alias_details = False, {"error": str(exc)}
    if not ok:
        unload(candidate)
        reason = alias_details.get("error", "alias smoke completion failed")
        if previous_path:
            try:
                vllm.load_adapter(alias, previous_path, inplace=True)
            except VLLMError as exc:
                log(f"could not restore {previous} under {alias}: {exc}")
                reason += f"; restoring {previous} under {alias!r} failed too: {exc}"
        else:
            unload(alias)
        fail("alias_swap", reason, alias_details)
    # 4. the previous versioned name is no longer needed
    if previous and previous != version and f"{alias}-{previous}" in loaded:
        unload(f"{alias}-{previous}")
    registry.record_deployment(version=version, status="deployed", previous=previous, served_as=[alias, candidate])
    registry.update_manifest(version, status="deployed")
    if previous and previous != version and (registry.path_for(previous) / "manifest.json").is_file():
        registry.update_manifest(previous, status="superseded", superseded_by=version)
    return {"version": version, "served_as": alias, "versioned_name": candidate, "previous": previous,
            "base_url": vllm.base_url, "smoke": details}


def _eos_id(manifest: dict) -> int | None:
    try:
        config = json.loads((Path(manifest["base_model"]["path"]) / "config.json").read_text())
        eos = config.get("eos_token_id")
        return eos[0] if isinstance(eos, list) else eos
    except (KeyError, OSError, ValueError):
        return None


@asset(
    group_name=GROUP,
    description="The adapter served by vLLM: dynamic /v1/load_lora_adapter, greedy smoke completion, in-place swap "
                "of the served alias; rollback to the previous adapter on any failure.",
    check_specs=[AssetCheckSpec("smoke_completion_matches_reference", asset="adapter_deployment")],
)
def adapter_deployment(context: AssetExecutionContext, config: DeploymentConfig, lora_adapter: dict,
                       vllm: VLLMServer, adapter_registry: AdapterRegistry):
    record = deploy_adapter(vllm, adapter_registry, lora_adapter, config, log=context.log.info)
    yield Output(record, metadata={"version": record["version"], "served_as": record["served_as"],
                                   "previous": record["previous"] or "", "base_url": record["base_url"],
                                   "smoke_text": record["smoke"]["text"]})
    yield AssetCheckResult(check_name="smoke_completion_matches_reference", passed=True,
                           metadata={"token_ids": MetadataValue.json(record["smoke"]["token_ids"])})


finetune_assets = [finetune_dataset, lora_adapter, adapter_deployment]
