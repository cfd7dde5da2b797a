"""Instruction examples from chunks and graph facts: PII scrubbed, deduplicated, split train/eval by source chunk."""

import hashlib
import json
import math
import re
import shutil
import tempfile
from pathlib import Path

from dagster import AssetCheckResult, Config, Failure, MetadataValue, Output
from pydantic import Field

from assets.finetune.pii import find_pii, scrub_pii
from assets.finetune.raft import CHUNK_ID_SEP, Retriever, raft_examples
from assets.grounded_prompt import NO_ANSWER, context_messages
from resources.milvus import default_data_dir

# instruction = the question, input = the numbered context (grounded_prompt.format_context), output = the cited
# answer (or grounded_prompt.NO_ANSWER), citations = the gold source numbers ("2,4"; "" when the gold is left out)
COLUMNS = ["id", "instruction", "input", "output", "source", "doc_id", "chunk_id", "citations"]

def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", (text or "").strip()).casefold()


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

    keys = (lambda r: [] if r["output"] == NO_ANSWER else ["o:" + _norm(r["output"])],  # the shared refusal links none
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
    if eval_groups and len(eval_groups) == len(ordered):  # train is never empty
        eval_groups = eval_groups[:-1]
    eval_ids = {i for g in eval_groups for i in g}
    train = [rows[i] for i in range(len(rows)) if i not in eval_ids]
    evals = [rows[i] for i in range(len(rows)) if i in eval_ids]
    return train, evals


def build_instruction_examples(chunks: list[dict], facts: list[dict], eval_fraction: float = 0.2, seed: int = 0,
                               min_chunk_chars: int = 40, num_distractors: int = 2, no_gold_share: float = 0.1,
                               retriever: Retriever | None = None, max_multihop: int = 200,
                               sentences_per_chunk: int = 2) -> tuple[list[dict], list[dict], dict]:
    """Pure builder: (train, eval, stats) of RAFT examples from chunk rows and graph-fact documents."""
    chunks, facts, pii = scrub_sources(chunks, facts)
    chunks = [c for c in chunks if len((c.get("text") or "").strip()) >= min_chunk_chars]
    raw = raft_examples(chunks, facts, num_distractors, no_gold_share, seed, retriever, max_multihop,
                        sentences_per_chunk)
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
    t_outputs = {_norm(r["output"]) for r in train if r["output"] != NO_ANSWER}
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


def example_messages(row: dict) -> list[dict]:
    """The chat messages the ask path sends for this example's question and context (grounded_prompt's format)."""
    return context_messages(row["instruction"], row["input"])


def _by_partition(value, is_single) -> dict:
    """Dagster passes one partition's value itself, several as {partition_key: value}, none as None."""
    if value is None:
        return {}
    if is_single(value):
        return {"_": value}
    return dict(value)


class InstructionDatasetConfig(Config):
    eval_fraction: float = Field(default=0.2, gt=0.0, lt=1.0,
                                 description="Share of example groups held out for evaluation (0 < x < 1).")
    seed: int = 0
    min_chunk_chars: int = 40
    num_distractors: int = Field(default=2, ge=0, le=10, description="Retrieved chunks shown beside the gold chunk "
                                 "(2: a third of the tokens of 3 saved, on CPU the training budget).")
    no_gold_share: float = Field(default=0.1, ge=0.0, lt=1.0, description="Share of examples whose context leaves "
                                 "the gold chunk out; their answer is grounded_prompt.NO_ANSWER (at 0.2 SmolLM2 adapters "
                                 "learnt to refuse answerable questions, see README).")
    max_multihop: int = Field(default=200, ge=0, description="At most this many two-hop graph-path questions.")
    sentences_per_chunk: int = Field(default=2, ge=1, le=10, description="Key sentences of a chunk asked about "
                                     "(one question each, all in the chunk's split).")
    distractors: str = Field(default="chunks", description="chunks (the corpus's chunks ranked by word overlap with the "
                             "gold: lexical retrieval), auto (the job's Milvus index when it exists, else chunks) or "
                             "index (Milvus dense search, required). chunks by measurement: on the sample corpus the "
                             "adapter trained with it beat the base on all three task-gate metrics, with dense "
                             "distractors it tied on citation accuracy and was blocked (README).")


def choose_retriever(mode: str, log=None, milvus=None, embedder=None):
    """The distractor retriever: Milvus dense search in the run's index (milvus, embedder: the job's resources; the
    defaults otherwise) when it exists (auto) or is required (index), else None (raft's word-overlap ranking over the
    corpus's chunks)."""
    log = log or (lambda message: None)
    if mode not in ("auto", "index", "chunks"):
        raise Failure(description=f"distractors must be auto, index or chunks, not {mode!r}")
    if mode == "chunks":
        return None
    from assets.finetune.raft import index_retriever
    from resources.embedder import Embedder
    from resources.milvus import MilvusStore

    milvus = milvus or MilvusStore()
    if mode == "auto" and milvus.is_lite and not Path(milvus.uri).exists():  # milvus-lite 3 keeps a folder there
        log(f"no Milvus index at {milvus.uri}: distractors are the corpus's chunks ranked by word overlap")
        return None
    return index_retriever(milvus, embedder or Embedder())


def datasets_root() -> Path:
    return default_data_dir() / "finetune" / "datasets"



def save_splits(train: list[dict], evals: list[dict], columns: list[str], root: Path | None = None) -> tuple[Path, str]:
    """Save train/eval rows (string columns) with datasets under root/<content fingerprint>: the same rows are
    saved once, written through a staging folder renamed into place (concurrent runs never see half a dataset)."""
    from datasets import Dataset, DatasetDict, Features, Value

    root = root or datasets_root()
    features = Features({c: Value("string") for c in columns})
    dataset = DatasetDict({"train": Dataset.from_list(train, features=features),
                           "eval": Dataset.from_list(evals, features=features)})
    fingerprint = hashlib.sha256(json.dumps([train, evals, columns], sort_keys=True).encode()).hexdigest()[:16]
    target = root / fingerprint
    if not (target / "dataset_dict.json").is_file():
        staging = Path(tempfile.mkdtemp(prefix=f".{fingerprint}-", dir=_mkdir(root)))
        dataset.save_to_disk(str(staging))
        try:
            staging.rename(target)
        except OSError:  # the same content was saved meanwhile (same fingerprint): keep that copy
            shutil.rmtree(staging, ignore_errors=True)
            if not (target / "dataset_dict.json").is_file():
                raise
    return target, fingerprint


def _materialize_dataset(context, config: InstructionDatasetConfig, document_chunks, graph_facts, milvus=None,
                         embedder=None):
    chunks_by_doc = _by_partition(document_chunks, lambda v: isinstance(v, list))
    facts_by_doc = _by_partition(graph_facts, lambda v: isinstance(v, dict) and "entities" in v)
    chunks = [row for key in sorted(chunks_by_doc) for row in (chunks_by_doc[key] or [])]
    facts = [facts_by_doc[key] for key in sorted(facts_by_doc) if facts_by_doc[key]]
    log = context.log.info if context is not None else None
    retriever = choose_retriever(config.distractors, log, milvus, embedder)
    distractor_source = "Milvus dense search" if retriever is not None else "word overlap over the corpus's chunks"
    try:
        train, evals, stats = build_instruction_examples(
            chunks, facts, config.eval_fraction, config.seed, config.min_chunk_chars, config.num_distractors,
            config.no_gold_share, retriever, config.max_multihop, config.sentences_per_chunk)
    except Exception as exc:  # the index could not be searched (busy milvus-lite file, server down): fall back
        if retriever is None or config.distractors == "index":
            raise
        if log:
            log(f"index search for distractors failed ({exc}); using the corpus's chunks")
        distractor_source = "word overlap over the corpus's chunks (the index search failed)"
        train, evals, stats = build_instruction_examples(
            chunks, facts, config.eval_fraction, config.seed, config.min_chunk_chars, config.num_distractors,
            config.no_gold_share, None, config.max_multihop, config.sentences_per_chunk)
    if not train or not evals:
        raise Failure(description=f"too few examples for a train/eval split (train={len(train)}, eval={len(evals)}); "
                                  "ingest more documents", metadata={"stats": MetadataValue.json(stats)})
    target, fingerprint = save_splits(train, evals, COLUMNS)
    # what the dataset was built from, per document: the re-fine-tune sensor compares it with the index's state
    source_documents = source_document_states(chunks)
    (target / SOURCE_DOCUMENTS).write_text(json.dumps(source_documents, indent=1, sort_keys=True))
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
                  "distractors": distractor_source,
                  "preview": MetadataValue.md(f"**{train[0]['instruction']}**\n\n{train[0]['output'][:300]}")},
    )
    yield AssetCheckResult(check_name="dataset_schema_valid", passed=not problems,
                           metadata={"problems": MetadataValue.json(problems)})
    yield AssetCheckResult(check_name="no_pii_remaining", passed=not any(pii_left.values()),
                           metadata={"rows_with_pii": MetadataValue.json(pii_left),
                                     "replaced": MetadataValue.json(stats["pii_replaced"])})
    yield AssetCheckResult(check_name="no_train_eval_leakage", passed=not any(leaks.values()),
                           metadata={"leaks": MetadataValue.json(leaks)})


SOURCE_DOCUMENTS = "source_documents.json"


def source_document_states(chunks: list[dict]) -> dict[str, dict]:
    """{doc_id: {"sha256", "chunks"}} of the chunk rows a dataset was built from."""
    out: dict[str, dict] = {}
    for chunk in chunks:
        entry = out.setdefault(chunk["doc_id"], {"sha256": chunk.get("doc_sha256", ""), "chunks": 0})
        entry["chunks"] += 1
    return out


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path

