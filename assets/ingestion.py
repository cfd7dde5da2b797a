"""Ingestion stage: raw documents -> parsed elements -> chunks -> embeddings in Milvus.

Every asset is partitioned by document (dynamic partitions keyed by the file's relative path) and works
on the run's context.partition_keys: a run covers one document or a batch of them (pipelines.partitions).
In a batch, a bad document is skipped and reported by name (check, run tag, per-partition observation)
while the others proceed; a one-document run fails with the same message. Nothing in Milvus is touched
for a document that failed. Logic lives in plain functions; the assets are thin wrappers.
"""

import hashlib
import json
import os
import time
from functools import lru_cache

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    Config,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
    Output,
    RetryRequested,
    asset,
    op,
)
from pydantic import Field

from assets import _offline  # noqa: F401
from assets.faults import fault_point
from assets.parsing import (  # noqa: F401  (re-exported: tests and other stages import them from here)
    TEXT_SUFFIXES,
    DocumentError,
    check_docx_archive,
    decode_text,
    parse_many,
    partition_document,
    pdf_page_count,
    shutdown_pools,
    suffix_of,
    validate_content,
)
from pipelines.partitions import Batch, documents_backfill_policy, documents_partitions
from resources.documents import DocumentSource
from resources.embedder import Embedder
from resources.milvus import MilvusStore, MilvusUnavailable

GROUP = "ingestion"
# Bump when ingestion code changes what is stored: part of every document's stage fingerprint.
INGEST_CODE_VERSION = "3"  # 3: tables chunked by row groups, new formats, OCR; BM25 reads bm25_text (Korean morphemes)
FAILED_TAG = "docplatform/failed_documents"
# chunk_vectors re-runs its step this often when Milvus fails mid-run, waiting backoff * 2**n seconds between tries
MILVUS_STEP_RETRIES = int(os.environ.get("DOCPLATFORM_MILVUS_STEP_RETRIES", "3"))
MILVUS_STEP_BACKOFF_S = float(os.environ.get("DOCPLATFORM_MILVUS_STEP_BACKOFF_S", "5"))
_CHUNKING_DEFAULTS = json.loads(os.environ.get("DOCPLATFORM_CHUNKING", "{}") or "{}")


# ------------------------------------------------------------------------------------------ batches

def batch_of(context, value) -> dict:
    """{doc_id: value} for an input: a batched run passes a Batch, a one-document run the value itself."""
    if isinstance(value, Batch):
        # the IO manager loads every stored partition of the range: those of documents this run skipped as
        # unchanged are earlier runs' values, not this run's work
        skipped = unchanged_in_run(context)
        return {k: v for k, v in value.items() if k not in skipped}
    if value is None:
        return {}
    return {context.partition_keys[0]: value}


def emit(context, results: dict, failures: dict[str, str]):
    """The asset's value: the document's own value in a one-document run (raising its error), else a Batch."""
    keys = list(context.partition_keys)
    if len(keys) == 1:
        if keys[0] in failures:
            error = failures[keys[0]]
            raise DocumentError(keys[0], error.split(": ", 1)[1] if error.startswith("document ") else error)
        return results[keys[0]]
    batch = Batch(results)
    batch.kept = unchanged_in_run(context)  # their stored values stay: this run skipped them, they did not fail
    return batch


def report_failures(context, failures: dict[str, str]) -> None:
    """Each failed document: an observation on its partition (UI status) and the run's failed-documents tag."""
    if not failures or len(context.partition_keys) == 1:
        return
    for key, error in failures.items():
        context.log.warning(error)
        context.log_event(AssetObservation(asset_key=context.asset_key, partition=key,
                                           metadata={"status": "failed", "error": error[:2000]}))
    run = context.instance.get_run_by_id(context.run_id)
    merged = json.loads((run.tags if run else {}).get(FAILED_TAG, "{}")) | {k: v[:300] for k, v in failures.items()}
    context.instance.add_run_tags(context.run_id, {FAILED_TAG: json.dumps(merged)[:20000]})


UNCHANGED_TAG = "docplatform/unchanged_documents"


def unchanged_in_run(context) -> set[str]:
    """The documents this run found already indexed with the same content and stage fingerprint (skipped)."""
    run = context.instance.get_run_by_id(context.run_id)
    return set(json.loads((run.tags if run else {}).get(UNCHANGED_TAG, "[]")))


def failed_in_run(context) -> dict[str, str]:
    run = context.instance.get_run_by_id(context.run_id)
    return json.loads((run.tags if run else {}).get(FAILED_TAG, "{}"))


class Progress:
    """Documents done/total and rate, logged at most every few seconds and summarised as metadata."""

    def __init__(self, context, stage: str, total: int, unit: str = "documents"):
        self.context, self.stage, self.total, self.unit = context, stage, total, unit
        self.start = self.last = time.perf_counter()

    def __call__(self, done: int, total: int | None = None, chunks: int | None = None) -> None:
        now = time.perf_counter()
        if now - self.last < 5 and done < (total or self.total):
            return
        self.last = now
        rate = f", {chunks / (now - self.start):.1f} chunks/s" if chunks else ""
        self.context.log.info(f"{self.stage}: {done}/{total or self.total} {self.unit}{rate}")

    def metadata(self, done: int, chunks: int | None = None) -> dict:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        out = {"documents_done": done, "documents_total": self.total, "seconds": round(elapsed, 3),
               "documents_per_s": round(done / elapsed, 2)}
        if chunks is not None:
            out["chunks_per_s"] = round(chunks / elapsed, 2)
        return out


# ------------------------------------------------------------------------------------------ raw documents

def read_document(documents: DocumentSource, doc_id: str) -> dict:
    """The document's bytes and hash, validated (size limit, type, emptiness, zip/XML bombs)."""
    try:
        path = documents.path_for(doc_id)
    except ValueError as exc:  # a symlink or key leading out of the folder (the scan skips these; an old partition may not)
        raise DocumentError(doc_id, f"{exc}; skipped") from exc
    attached_to = read_attachment(documents, doc_id) if not path.is_file() else None
    if attached_to:
        path, data = attached_to
        stat = path.stat()
    else:
        if not path.is_file():
            raise DocumentError(doc_id, f"file not found at {path} (deleted? the sensor purges deleted documents)")
        stat = path.stat()
    if stat.st_size > documents.max_bytes:
        raise DocumentError(doc_id, f"too large: {stat.st_size:,} bytes (limit {documents.max_bytes:,}); skipped")
    data = data if attached_to else path.read_bytes()
    suffix = suffix_of(doc_id)
    validate_content(doc_id, suffix, data)
    if suffix == ".docx":
        check_docx_archive(doc_id, data)
    sha256 = hashlib.sha256(data).hexdigest()
    record = {"doc_id": doc_id, "path": str(path), "suffix": suffix, "sha256": sha256, "size": len(data),
              "mtime_ns": stat.st_mtime_ns, "content": data}
    if attached_to:
        record["attached_to"] = doc_id.rsplit("#", 1)[0]  # the mail this attachment came with
    return record


def read_attachment(documents: DocumentSource, doc_id: str) -> tuple | None:
    """(mail path, attachment bytes) for an attachment document '<mail key>#<name>'; None for other keys."""
    found = documents.mail_for(doc_id)
    if not found:
        return None
    try:
        data = documents.attachment_bytes(doc_id)
    except Exception as exc:  # noqa: BLE001
        raise DocumentError(doc_id, f"could not read the attachment from its mail: {type(exc).__name__}: {exc}") from exc
    if data is None:
        raise DocumentError(doc_id, f"the mail {found[0].name!r} no longer has this attachment")
    return found[0], data


class ReadConfig(Config):
    reindex_unchanged: bool = Field(
        default=False, description="Index documents again although the index already holds their current content "
                                   "with this run's stage fingerprint (e.g. after a knowledge-graph extractor change). "
                                   "Default: such documents are skipped, so a run queued behind an equal one (sensor, "
                                   "nightly, manual request for the same change) does no work.")


def run_stage_fingerprint(context, embedder: Embedder) -> str | None:
    """The stage fingerprint this run's chunk_vectors will record: its own chunking config (run config), embedder.
    None for an invalid chunking config (document_chunks reports it)."""
    from pydantic import ValidationError

    ops = ((context.run.run_config if context.run else None) or {}).get("ops") or {}
    try:
        chunking = ChunkingConfig(**(((ops.get("document_chunks") or {}).get("config")) or {}))
    except ValidationError:
        return None
    return stage_fingerprint(chunking_fingerprint(chunking), embedder)


def unchanged_documents(records: dict[str, dict], states: dict[str, dict], fingerprint: str) -> list[str]:
    """Documents whose final index state (vectors and graph written: no pending prefix) has this content hash and
    this stage fingerprint: indexing them again would change nothing."""
    return sorted(k for k, r in records.items()
                  if (s := states.get(k)) and s["sha256"] == r["sha256"] and s["fingerprint"] == fingerprint)


@asset(
    partitions_def=documents_partitions,
    backfill_policy=documents_backfill_policy,
    group_name=GROUP,
    code_version=INGEST_CODE_VERSION,
    description="The document's bytes and content hash, read from the documents folder. In the ingestion job, a "
                "document already indexed with this content and stage fingerprint is skipped (no output for it: the "
                "run does no work for it), unless reindex_unchanged is set.",
    check_specs=[AssetCheckSpec("content_not_empty", asset="raw_documents", blocking=True)],
    output_required=False,
)
def raw_documents(context: AssetExecutionContext, config: ReadConfig, documents: DocumentSource, milvus: MilvusStore,
                  embedder: Embedder):
    results, failures = {}, {}
    for key in context.partition_keys:
        try:
            results[key] = read_document(documents, key)
        except DocumentError as exc:
            failures[key] = exc.description
    report_failures(context, failures)
    # Deduplication at run start: the sensor, the nightly and a manual request may queue runs for the same change;
    # the queue runs them one after the other, and the later ones find the change indexed (state final) and skip it.
    # Only in a run that ends with documents_indexed (the whole ingestion path), which is what makes a state final.
    full_path = AssetKey("documents_indexed") in context.job_def.asset_layer.selected_asset_keys
    fingerprint = run_stage_fingerprint(context, embedder) if full_path and not config.reindex_unchanged else None
    unchanged = unchanged_documents(results, milvus.document_states(), fingerprint) if fingerprint else []
    if unchanged:
        context.instance.add_run_tags(context.run_id, {UNCHANGED_TAG: json.dumps(unchanged)[:20000]})
        for key in unchanged:
            context.log_event(AssetObservation(asset_key=context.asset_key, partition=key, metadata={
                "status": "unchanged", "sha256": results[key]["sha256"],
                "note": "already indexed with this content and stage fingerprint: skipped (reindex_unchanged=true "
                        "indexes it anyway)"}))
            del results[key]
        context.log.info(f"{len(unchanged)} document(s) already indexed with this content and stage fingerprint, "
                         f"skipped: {', '.join(unchanged[:20])}")
        if not results and not failures:
            # nothing to do in this run: no output, so every later step is skipped
            yield AssetCheckResult(check_name="content_not_empty", passed=True,
                                   metadata={"documents": 0, "unchanged": len(unchanged)})
            return
    value = emit(context, results, failures)
    sizes = [r["size"] for r in results.values()]
    metadata = {"documents": len(results), "failed": len(failures), "size_bytes": int(sum(sizes)),
                "failed_documents": MetadataValue.json(failures), "unchanged": len(unchanged),
                "unchanged_documents": MetadataValue.json(unchanged[:200])}
    run = context.instance.get_run_by_id(context.run_id)
    if run and run.tags.get("docplatform/skipped_files"):  # the scan's non-documents (pipelines/sensors.py)
        metadata["skipped_files"] = MetadataValue.json(json.loads(run.tags["docplatform/skipped_files"]))
    attachments = {k: r["attached_to"] for k, r in results.items() if r.get("attached_to")}
    if attachments:
        metadata["attached_to"] = MetadataValue.json(attachments)
    if len(context.partition_keys) == 1:
        only = next(iter(results.values()))
        metadata |= {"sha256": only["sha256"], "path": only["path"]}
        yield Output(value, data_version=DataVersion(only["sha256"]), metadata=metadata)
    else:
        yield Output(value, metadata=metadata)
    yield AssetCheckResult(check_name="content_not_empty", passed=bool(sizes) and min(sizes) > 0,
                           metadata={"documents": len(sizes), "min_size_bytes": min(sizes) if sizes else 0})


# ------------------------------------------------------------------------------------------ parsing

@asset(
    partitions_def=documents_partitions,
    backfill_policy=documents_backfill_policy,
    group_name=GROUP,
    code_version=INGEST_CODE_VERSION,
    description="Structured elements (titles, paragraphs, tables) parsed by unstructured with strategy='fast', "
                "in a process pool over all cores with a per-document timeout.",
    check_specs=[AssetCheckSpec("has_text", asset="parsed_elements", blocking=True)],
)
def parsed_elements(context: AssetExecutionContext, raw_documents, documents: DocumentSource):
    raws = batch_of(context, raw_documents)
    progress = Progress(context, "parsed", len(raws))
    try:
        parsed, failures = parse_many([(k, r["suffix"], r["content"]) for k, r in raws.items()],
                                      workers=documents.parse_workers, timeout_s=documents.parse_timeout_s,
                                      progress=progress)
    finally:
        shutdown_pools()
    fault_point("after_parse")
    report_failures(context, failures)
    results = {k: {"doc_id": k, "sha256": raws[k]["sha256"], "elements": parsed[k]} for k in raws if k in parsed}
    strategies = {k: parse_strategy(v["elements"]) for k, v in results.items()}
    value = emit(context, results, failures)
    chars = {k: sum(len((e.get("text") or "").strip()) for e in v["elements"]) for k, v in results.items()}
    types = pd.Series([e["type"] for v in results.values() for e in v["elements"]]).value_counts().to_dict()
    yield Output(value, metadata={"element_count": sum(len(v["elements"]) for v in results.values()),
                                  "text_chars": int(sum(chars.values())), "element_types": MetadataValue.json(types),
                                  "failed": len(failures), "failed_documents": MetadataValue.json(failures),
                                  "parse_strategies": MetadataValue.json(dict(list(strategies.items())[:200])),
                                  **progress.metadata(len(results))})
    yield AssetCheckResult(check_name="has_text", passed=bool(chars) and min(chars.values()) > 0,
                           metadata={"text_chars": int(sum(chars.values())), "documents": len(chars)})


def parse_strategy(elements: list[dict]) -> dict:
    """Which strategy produced a document's elements (fast / ocr_only), with the OCR word confidence (0-1)."""
    meta = (elements[0].get("metadata") or {}) if elements else {}
    out = {"strategy": meta.get("parse_strategy", "fast")}
    if meta.get("ocr_confidence") is not None:
        out |= {"ocr_confidence": meta["ocr_confidence"], "ocr_pages": meta.get("ocr_pages")}
    return out


# ------------------------------------------------------------------------------------------ chunking

class ChunkingConfig(Config):
    # Milvus stores chunk text in a VARCHAR of at most 65,535 bytes: 16,000 characters fit in any UTF-8.
    max_characters: int = Field(default=_CHUNKING_DEFAULTS.get("max_characters", 1200), ge=50, le=16000)
    new_after_n_chars: int = Field(default=_CHUNKING_DEFAULTS.get("new_after_n_chars", 900), ge=1, le=16000)
    combine_text_under_n_chars: int = Field(default=_CHUNKING_DEFAULTS.get("combine_text_under_n_chars", 200), ge=0, le=16000)
    overlap: int = Field(default=_CHUNKING_DEFAULTS.get("overlap", 0), ge=0, le=4000)
    # token window; 0 = the embedder's own (MiniLM 256 word pieces incl. [CLS]/[SEP], multilingual-e5 512 incl.
    # its "passage: " prefix); a positive value only lowers it. Longer chunks are split between tokens.
    max_tokens: int = Field(default=_CHUNKING_DEFAULTS.get("max_tokens", 0), ge=0, le=8192)


def chunk_id_for(doc_id: str, occurrence: int, text: str) -> str:
    """Deterministic and position-free: (document, text, n-th occurrence of that text in the document).

    An edit near the top of a document changes only the ids of the chunks whose text changed.
    """
    return hashlib.sha256(f"{doc_id}\x00{occurrence}\x00{text}".encode()).hexdigest()[:40]


def text_sha(text: str) -> str:
    """Key of the embedding cache: the same text anywhere has the same vector."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@lru_cache(maxsize=4)
def _tokenizer(model_path: str):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.path.join(model_path, "tokenizer.json"))
    tokenizer.no_truncation()  # the packaged tokenizer.json truncates at 128: lengths would never exceed the window
    return tokenizer


def default_tokenizer():
    from resources.embedder import packaged_minilm_path

    return _tokenizer(packaged_minilm_path())


def _segments(element_dicts: list[dict]) -> list[tuple[str, list[dict]]]:
    """("text", runs of ordinary elements) and ("table", [one table element with its HTML]), in document order."""
    out: list[tuple[str, list[dict]]] = []
    for element in element_dicts:
        if element.get("type") == "Table" and (element.get("metadata") or {}).get("text_as_html"):
            out.append(("table", [element]))
        elif out and out[-1][0] == "text":
            out[-1][1].append(element)
        else:
            out.append(("text", [element]))
    return out


def _text_chunks(element_dicts: list[dict], config: ChunkingConfig) -> list[tuple[str, list[int], None]]:
    from unstructured.chunking.title import chunk_by_title
    from unstructured.staging.base import elements_from_dicts

    chunks = chunk_by_title(
        elements_from_dicts(element_dicts),
        max_characters=config.max_characters,
        # the soft limits can't exceed the hard one: lowering max_characters alone just works
        new_after_n_chars=min(config.new_after_n_chars, config.max_characters),
        combine_text_under_n_chars=min(config.combine_text_under_n_chars, config.max_characters),
        overlap=min(config.overlap, config.max_characters // 2),
    )
    out = []
    for chunk in chunks:
        text = chunk.text.strip()
        if text:
            out.append((text, sorted({e.metadata.page_number for e in (chunk.metadata.orig_elements or [])
                                      if e.metadata.page_number}), None))
    return out


def chunk_elements(doc_id: str, sha256: str, element_dicts: list[dict], config: ChunkingConfig,
                   embedder: Embedder | None = None, junk: list | None = None) -> list[dict]:
    """Chunk rows of one document; chunks without words (assets.junk) are left out, appended to junk as
    (characters, reason) when a list is given."""
    from assets.junk import junk_reason
    from assets.tables import table_chunks

    embedder = embedder or Embedder()
    window = min(config.max_tokens, embedder.max_tokens) if config.max_tokens else embedder.max_tokens
    pieces_in: list[tuple[str, list[int], str | None]] = []  # (text, page numbers, table HTML of a table chunk)
    for kind, group in _segments(element_dicts):
        if kind == "text":
            pieces_in += _text_chunks(group, config)
            continue
        element = group[0]
        page = (element.get("metadata") or {}).get("page_number")
        tables = table_chunks(element["metadata"]["text_as_html"], config.max_characters, window, default_tokenizer())
        if not tables:  # markup without rows: the element's text like any other
            pieces_in += _text_chunks(group, config)
        pieces_in += [(t["text"], [page] if page else [], t["table_html"]) for t in tables]
    junk = [] if junk is None else junk
    kept_in = []
    for piece in pieces_in:  # whole junk pieces first: a megabyte blob is never tokenized
        reason = junk_reason(piece[0])
        if reason:
            junk.append((len(piece[0]), reason))
        else:
            kept_in.append(piece)
    rows, seen, chunker = [], {}, chunking_fingerprint(config)
    windows = embedder.split_to_window([t for t, _, _ in kept_in], config.max_tokens)
    for pieces, (_, page_numbers, markup) in zip(windows, kept_in):
        for text in pieces:
            reason = junk_reason(text)
            if reason:
                junk.append((len(text), reason))
                continue
            occurrence = seen[text] = seen.get(text, -1) + 1
            row = {"chunk_id": chunk_id_for(doc_id, occurrence, text), "doc_id": doc_id, "doc_sha256": sha256,
                   "seq": len(rows), "text": text, "page_numbers": page_numbers, "chunker": chunker}
            if markup and len(pieces) == 1:
                row["table_html"] = markup  # whole rows with the header: the graph stage reads it as a table
            rows.append(row)
    return rows


def chunk_table_checks(rows: list[dict]) -> tuple[bool, dict]:
    import great_expectations as gx

    from assets.quality import validate_frame

    frame = pd.DataFrame(rows, columns=["chunk_id", "doc_id", "seq", "text"])
    frame["doc_seq"] = frame["doc_id"].astype(str) + "\x00" + frame["seq"].astype(str)  # seq is per document
    return validate_frame(
        "document_chunks",
        frame,
        [
            gx.expectations.ExpectTableRowCountToBeBetween(min_value=1),
            gx.expectations.ExpectColumnValuesToNotBeNull(column="chunk_id"),
            gx.expectations.ExpectColumnValuesToBeUnique(column="chunk_id"),
            gx.expectations.ExpectColumnValuesToNotBeNull(column="text"),
            gx.expectations.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
            gx.expectations.ExpectColumnValuesToBeUnique(column="doc_seq"),
        ],
    )


@asset(
    partitions_def=documents_partitions,
    backfill_policy=documents_backfill_policy,
    group_name=GROUP,
    code_version=INGEST_CODE_VERSION,
    description="Title-aware chunks (chunk_by_title, split to the embedder's token window) with deterministic, "
                "position-free ids: the unit that is embedded and graphed.",
    check_specs=[AssetCheckSpec("chunk_table_valid", asset="document_chunks", blocking=True,
                                description="Great Expectations: non-empty text, unique non-null ids."),
                 AssetCheckSpec("junk_text_skipped", asset="document_chunks", blocking=False,
                                description="Chunks without words (repeated characters, base64/hex blobs, minified "
                                            "code, punctuation runs) were left out; warns naming each document.")],
)
def document_chunks(context: AssetExecutionContext, config: ChunkingConfig, parsed_elements, embedder: Embedder):
    from assets.junk import MOSTLY_JUNK_SHARE

    parsed = batch_of(context, parsed_elements)
    results, failures, junk_by_doc = {}, {}, {}
    started = time.perf_counter()
    for key, doc in parsed.items():
        junk: list[tuple[int, str]] = []
        rows = chunk_elements(key, doc["sha256"], doc["elements"], config, embedder, junk=junk)
        junk_chars = sum(n for n, _ in junk)
        share = junk_chars / (junk_chars + sum(len(r["text"]) for r in rows)) if junk else 0.0
        if junk:
            junk_by_doc[key] = {"skipped_share": round(share, 4), "skipped_chunks": len(junk),
                                "reason": max(junk)[1]}
        if rows and share <= MOSTLY_JUNK_SHARE:
            results[key] = rows
        elif junk:
            failures[key] = (f"document {key!r}: {share:.0%} of its text has no words: {max(junk)[1]}; "
                             f"skipped, nothing of it indexed")
        else:
            failures[key] = f"document {key!r}: chunking produced no text"
    report_failures(context, failures)
    value = emit(context, results, failures)
    all_rows = [r for rows in results.values() for r in rows]
    chunking_s, started = time.perf_counter() - started, time.perf_counter()
    passed, details = chunk_table_checks(all_rows) if all_rows else (False, {"rows": 0})
    checks_s = time.perf_counter() - started
    lengths = [len(r["text"]) for r in all_rows] or [0]
    yield Output(value, metadata={"chunk_count": len(all_rows), "documents": len(results), "failed": len(failures),
                                  "mean_chars": float(np.mean(lengths)), "max_chars": max(lengths),
                                  "chunking": MetadataValue.json(config.model_dump()),
                                  "preview": MetadataValue.md(all_rows[0]["text"][:300] if all_rows else ""),
                                  "junk_skipped": MetadataValue.json(junk_by_doc),
                                  "seconds": round(chunking_s, 3), "checks_seconds": round(checks_s, 3)})
    yield AssetCheckResult(check_name="chunk_table_valid", passed=passed, metadata={"expectations": MetadataValue.json(details)})
    yield AssetCheckResult(check_name="junk_text_skipped", passed=not junk_by_doc, severity=AssetCheckSeverity.WARN,
                           description=("junk left out of: " + ", ".join(
                               f"{k} ({v['skipped_share']:.0%})" for k, v in sorted(junk_by_doc.items())))
                           if junk_by_doc else "no junk chunks",
                           metadata={"documents": MetadataValue.json(junk_by_doc)})


# ------------------------------------------------------------------------------------------ vectors

def chunking_fingerprint(chunking: ChunkingConfig) -> str:
    payload = {"code": INGEST_CODE_VERSION, "chunking": chunking.model_dump()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def stage_fingerprint(chunker: str, embedder: Embedder) -> str:
    """What, besides a document's bytes, decides its chunks and vectors: code version, chunking config
    (chunker = chunking_fingerprint, carried on each chunk row), embedder model."""
    return hashlib.sha256(f"{chunker}|{embedder.fingerprint()}".encode()).hexdigest()[:16]


def expected_fingerprint(embedder: Embedder) -> str:
    """The fingerprint a document gets from a run with the configured defaults (what sensor and nightly expect)."""
    return stage_fingerprint(chunking_fingerprint(ChunkingConfig()), embedder)


def index_documents(milvus: MilvusStore, embedder: Embedder, docs: dict[str, list[dict]], fingerprint: str,
                    suffixes: dict[str, str] | None = None, progress=None) -> dict:
    """Write a batch of documents' chunks to Milvus: only new chunk ids are written, vectors come from the
    text-hash cache (any document's stored vector for the same text) or one batched encode across documents;
    moved chunks keep their vectors, stale chunks of these documents are deleted, then each document's state
    (sha256, stage fingerprint) is recorded. Returns counts and the stored rows of these documents."""
    from resources.text_analysis import bm25_terms

    suffixes = suffixes or {}
    loading = time.perf_counter()
    dim = embedder.dimension  # loads the model in a fresh process
    model_load_s = time.perf_counter() - loading
    with milvus.client() as client:
        lookup_started = time.perf_counter()
        milvus.ensure_collection(client, dim, embedder.identity)
        existing = milvus.chunk_index(client, list(docs))  # {chunk_id: seq}
        current = {r["chunk_id"]: r for rows in docs.values() for r in rows}
        new = [r for cid, r in current.items() if cid not in existing]
        moved = [r for cid, r in current.items() if cid in existing and existing[cid] != r["seq"]]
        shas = {r["chunk_id"]: text_sha(r["text"]) for r in new}
        cache = milvus.vectors_by_text_sha(client, set(shas.values()))
        todo = {}
        for r in new:
            if shas[r["chunk_id"]] not in cache:
                todo.setdefault(shas[r["chunk_id"]], r["text"])
        texts, started = list(todo.values()), time.perf_counter()
        timings = {"model_load_s": model_load_s, "lookup_s": started - lookup_started}
        for start in range(0, len(texts), 1024):  # slices: progress for long runs
            vectors = embedder.encode_passages(texts[start : start + 1024])
            cache |= {sha: vec for sha, vec in zip(list(todo)[start : start + 1024], vectors)}
            if progress:
                done = min(start + 1024, len(texts))
                progress(f"embedded {done}/{len(texts)} new chunk texts, "
                         f"{done / max(time.perf_counter() - started, 1e-9):.1f} chunks/s")
        timings["encode_s"] = time.perf_counter() - started
        moved_vectors = milvus.vectors_by_id(client, [r["chunk_id"] for r in moved])
        rows = []
        for r in new + moved:
            vector = cache[shas[r["chunk_id"]]] if r["chunk_id"] in shas else moved_vectors[r["chunk_id"]]
            rows.append({"chunk_id": r["chunk_id"], "doc_id": r["doc_id"], "doc_sha256": r["doc_sha256"], "seq": r["seq"],
                         "text": r["text"], "text_sha": text_sha(r["text"]), "doc_type": suffixes.get(r["doc_id"], "")[:16],
                         "vector": np.asarray(vector, dtype=np.float32).tolist()})
        started = time.perf_counter()
        for row in rows:  # BM25 terms (kiwipiepy morphemes for Korean) here, so that their time is seen apart
            row["bm25_text"] = bm25_terms(row["text"])
        timings["bm25_analysis_s"] = time.perf_counter() - started
        milvus.upsert(client, rows)
        fault_point("after_milvus_upsert")
        stale = [cid for cid in existing if cid not in current]
        milvus.delete_ids(client, stale)
        milvus.set_document_states(client, [{"doc_id": k, "sha256": rows_[0]["doc_sha256"], "fingerprint": fingerprint,
                                             "chunks": len(rows_)} for k, rows_ in docs.items()])
        stored = milvus.rows_for_documents(client, list(docs), ["chunk_id", "doc_id", "vector"])
        timings["milvus_write_s"] = time.perf_counter() - started - timings["bm25_analysis_s"]
    return {"written": len(rows), "embedded": len(todo), "cache_hits": len(new) - len([r for r in new if shas[r["chunk_id"]] in todo]),
            "timings": {k: round(v, 3) for k, v in timings.items()}, "moved": len(moved), "removed": len(stale), "stored": stored, "dimension": dim}


class RetrievalGateConfig(Config):
    """The retrieval quality floor checked after each index change (labeled queries: assets/retrieval_queries.json)."""
    min_recall_at_5: float = Field(default=0.8, ge=0.0, le=1.0)
    min_mrr: float = Field(default=0.6, ge=0.0, le=1.0)
    queries_path: str = Field(default="", description="JSON query set; empty = the bundled sample-corpus set.")


def retrieval_gate(milvus: MilvusStore, embedder: Embedder, config: RetrievalGateConfig) -> dict:
    """recall@5 and MRR of hybrid search over the labeled queries whose documents are indexed; passed vs the floor."""
    from assets.retrieval_quality import DEFAULT_QUERIES, evaluate, load_queries

    queries = load_queries(config.queries_path or DEFAULT_QUERIES)
    indexed = set(milvus.document_states())
    with milvus.client() as client:
        milvus.check_embedder(client, embedder.identity)

        def search(text, k):
            return milvus.hybrid_search(client, text, embedder.encode_queries([text])[0].tolist(), limit=k)

        def answerable(doc_id, phrase):
            return milvus.contains_text(client, doc_id, phrase)

        result = evaluate(queries, search, indexed, k=5, answerable=answerable)
    result["passed"] = result["queries"] == 0 or (result["recall_at_k"] >= config.min_recall_at_5
                                                  and result["mrr"] >= config.min_mrr)
    return result


@asset(
    partitions_def=documents_partitions,
    backfill_policy=documents_backfill_policy,
    group_name=GROUP,
    code_version=INGEST_CODE_VERSION,
    description="Chunk embeddings upserted into Milvus (dense + BM25 sparse); only new chunk texts are encoded, "
                "batched across documents; a changed document's stale vectors are deleted.",
    check_specs=[
        AssetCheckSpec("embedding_dimension_and_norm", asset="chunk_vectors", blocking=True),
        AssetCheckSpec("milvus_count_matches_chunks", asset="chunk_vectors", blocking=True),
        AssetCheckSpec("batch_documents_ok", asset="chunk_vectors", blocking=False,
                       description="Every document of the run was indexed; failed ones are listed by name."),
        AssetCheckSpec("retrieval_quality", asset="chunk_vectors", blocking=True,
                       description="Hybrid search recall@5 and MRR over the labeled queries whose documents are "
                                   "indexed, against the configured floor (after each index change)."),
    ],
)
def chunk_vectors(context: AssetExecutionContext, config: RetrievalGateConfig, document_chunks, embedder: Embedder,
                  milvus: MilvusStore):
    docs = batch_of(context, document_chunks)
    progress = Progress(context, "indexed", len(docs))
    chunkers = {rows[0].get("chunker", "") for rows in docs.values() if rows}
    fingerprint = stage_fingerprint(next(iter(chunkers)) if len(chunkers) == 1 else "mixed", embedder)
    chunk_count = sum(len(rows) for rows in docs.values())
    # when documents_indexed runs after the graph in this run, the state stays pending until then (crash consistency)
    pending = GRAPH_PENDING if AssetKey("documents_indexed") in context.job_def.asset_layer.selected_asset_keys else ""
    try:
        summary = index_documents(milvus, embedder, docs, pending + fingerprint, {k: suffix_of(k) for k in docs},
                                  progress=context.log.info) if docs else \
            {"written": 0, "embedded": 0, "cache_hits": 0, "moved": 0, "removed": 0, "stored": [], "dimension": embedder.dimension,
             "timings": {}}
    except Exception as exc:
        # Milvus gone or restarting (each connection already retried with backoff): the step again, later; nothing was
        # deleted (stale vectors go only after the new ones are written) and no state recorded
        from pymilvus.exceptions import MilvusException

        if not isinstance(exc, (MilvusUnavailable, MilvusException)):
            raise
        if context.retry_number >= MILVUS_STEP_RETRIES:
            raise Failure(description=f"Milvus at {milvus.uri} failed on all {MILVUS_STEP_RETRIES + 1} tries of this step: "
                                      f"{type(exc).__name__}: {str(exc)[:500]}; nothing indexed was removed and these "
                                      "documents stay stale, so the next run indexes them") from exc
        wait = MILVUS_STEP_BACKOFF_S * 2 ** context.retry_number
        context.log.warning(f"Milvus failed ({type(exc).__name__}: {exc}); retry {context.retry_number + 1}/"
                            f"{MILVUS_STEP_RETRIES} of this step in {wait:g} s")
        raise RetryRequested(max_retries=MILVUS_STEP_RETRIES, seconds_to_wait=wait) from exc
    progress(len(docs), chunks=chunk_count)
    stored, dim, timings = summary.pop("stored"), summary["dimension"], summary.pop("timings")
    stored_by_doc: dict[str, set] = {}
    for row in stored:
        stored_by_doc.setdefault(row["doc_id"], set()).add(row["chunk_id"])
    matrix = np.asarray([row["vector"] for row in stored], dtype=np.float32).reshape(len(stored), -1)
    norms = np.linalg.norm(matrix, axis=1) if len(stored) else np.zeros(0)
    dims_ok = bool(len(stored)) and matrix.shape[1] == dim
    norms_ok = bool(len(norms)) and bool(np.all(np.abs(norms - 1.0) < 1e-3))
    mismatched = sorted(k for k, rows in docs.items() if stored_by_doc.get(k, set()) != {r["chunk_id"] for r in rows})
    failed = {k: v for k, v in failed_in_run(context).items() if k in set(context.partition_keys)}
    unchanged = unchanged_in_run(context)
    failed |= {k: "failed upstream (see raw_documents / parsed_elements)" for k in context.partition_keys
               if k not in docs and k not in failed and k not in unchanged}
    chunk_ids = {k: sorted(r["chunk_id"] for r in rows) for k, rows in docs.items()}
    if len(context.partition_keys) == 1:
        key = context.partition_keys[0]
        value = {"doc_id": key, "chunk_ids": chunk_ids[key], "embedded": summary["embedded"],
                 "removed": summary["removed"], "dimension": dim, "fingerprint": fingerprint}
    else:
        value = Batch({k: {"doc_id": k, "chunk_ids": ids, "fingerprint": fingerprint} for k, ids in chunk_ids.items()})
    yield Output(
        value,
        metadata={"vectors": len(stored), "chunks": chunk_count, "newly_embedded": summary["embedded"],
                  "cache_hits": summary["cache_hits"], "written": summary["written"], "moved": summary["moved"],
                  "reused": chunk_count - summary["written"] + summary["moved"], "stale_removed": summary["removed"],
                  "dimension": dim, "collection": milvus.collection, "fingerprint": fingerprint,
                  "embedder_precision": embedder.resolved_precision(),
                  "failed": len(failed), "failed_documents": MetadataValue.json(failed),
                  "stage_seconds": MetadataValue.json(timings),  # lookup, encode, BM25 analysis, Milvus writes
                  **progress.metadata(len(docs), chunk_count)},
    )
    yield AssetCheckResult(
        check_name="embedding_dimension_and_norm",
        passed=bool(dims_ok and norms_ok),
        severity=AssetCheckSeverity.ERROR,
        metadata={"expected_dimension": dim, "dimension": int(matrix.shape[1]) if len(stored) else 0,
                  "min_norm": float(norms.min()) if len(norms) else 0.0, "max_norm": float(norms.max()) if len(norms) else 0.0},
    )
    yield AssetCheckResult(
        check_name="milvus_count_matches_chunks",
        passed=bool(docs) and not mismatched,
        metadata={"chunks": chunk_count, "vectors_in_milvus": len(stored), "documents": len(docs),
                  "mismatched_documents": MetadataValue.json(mismatched[:50])},
    )
    changed = summary["written"] or summary["removed"]
    started = time.perf_counter()
    gate = retrieval_gate(milvus, embedder, config) if changed else {"queries": 0, "passed": True, "skipped": "index unchanged"}
    yield AssetCheckResult(
        check_name="retrieval_quality", passed=bool(gate["passed"]),
        metadata={"seconds": round(time.perf_counter() - started, 3),
                  "queries": gate["queries"], "recall_at_5": gate.get("recall_at_k") if gate.get("recall_at_k") is not None else -1.0,
                  "mrr": gate.get("mrr") if gate.get("mrr") is not None else -1.0,
                  "floor": MetadataValue.json({"recall_at_5": config.min_recall_at_5, "mrr": config.min_mrr}),
                  "misses": MetadataValue.json(gate.get("misses", [])), "note": gate.get("skipped", "")},
    )
    yield AssetCheckResult(
        check_name="batch_documents_ok", passed=not failed, severity=AssetCheckSeverity.WARN,
        metadata={"documents": len(context.partition_keys), "indexed": len(docs), "failed": len(failed),
                  "failed_documents": MetadataValue.json(failed)},
    )


class PurgeConfig(Config):
    doc_ids: list[str]


@op(description="Remove every trace of deleted documents from the vector index.")
def purge_document_vectors(context: OpExecutionContext, config: PurgeConfig, milvus: MilvusStore) -> list[str]:
    with milvus.client() as client:
        removed = milvus.delete_documents(client, config.doc_ids)
    context.log.info(f"purged {removed} vectors of {len(config.doc_ids)} deleted document(s): {config.doc_ids[:20]}")
    return config.doc_ids


# A document's state row (what sensor and nightly compare with) is written with this prefix by chunk_vectors and made
# final by documents_indexed once the knowledge graph holds the document too: a run killed in between leaves the
# document stale (re-indexed by the next run) instead of recorded as done with an outdated graph.
GRAPH_PENDING = "pending:"


@asset(
    partitions_def=documents_partitions,
    backfill_policy=documents_backfill_policy,
    group_name=GROUP,
    deps=[AssetKey("knowledge_graph")],
    code_version=INGEST_CODE_VERSION,
    description="The documents' index state made final, after their vectors and their graph facts are written.",
    check_specs=[AssetCheckSpec("state_final", asset="documents_indexed",
                                description="Every document of the run has a final state row with its fingerprint.")],
)
def documents_indexed(context: AssetExecutionContext, chunk_vectors, milvus: MilvusStore):
    values = batch_of(context, chunk_vectors)
    done = sorted(values)
    fault_point("after_graph_write")
    finalized = milvus.finalize_document_states(done, GRAPH_PENDING)
    states = milvus.document_states()
    wrong = [k for k in done if (states.get(k) or {}).get("fingerprint") != values[k]["fingerprint"]]
    return MaterializeResult(
        metadata={"documents": len(done), "finalized": finalized},
        check_results=[AssetCheckResult(check_name="state_final", passed=not wrong,
                                        metadata={"not_final": MetadataValue.json(wrong[:50])})])


ingestion_assets = [raw_documents, parsed_elements, document_chunks, chunk_vectors, documents_indexed]
