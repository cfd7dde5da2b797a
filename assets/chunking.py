"""Chunking one document's parsed elements: text runs by title, tables by row groups, every chunk inside the
embedder's token window, junk left out; deterministic chunk ids and the chunker's fingerprint on each row."""

import hashlib
import json
import os
from functools import lru_cache

import pandas as pd
from dagster import Config
from pydantic import Field

from assets import _offline  # noqa: F401
from resources.embedder import Embedder


# Bump when ingestion code changes what is stored: part of every document's stage fingerprint.
# 4: plain-text records keep their lines (parsing.keep_record_lines); 3: tables chunked by row groups, new formats,
# OCR; BM25 reads bm25_text (Korean morphemes)
INGEST_CODE_VERSION = "4"
_CHUNKING_DEFAULTS = json.loads(os.environ.get("DOCPLATFORM_CHUNKING", "{}") or "{}")


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


def chunking_fingerprint(chunking: ChunkingConfig) -> str:
    payload = {"code": INGEST_CODE_VERSION, "chunking": chunking.model_dump()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
