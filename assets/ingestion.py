"""Ingestion stage: raw documents -> parsed elements -> chunks -> embeddings in Milvus.

Every asset is partitioned by document (dynamic partitions keyed by the file's relative path).
A failure in one document's partition stops only that document, before anything in Milvus is touched.
"""


import hashlib
import io
import zipfile
from pathlib import PurePosixPath

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    DataVersion,
    Failure,
    MetadataValue,
    OpExecutionContext,
    Output,
    asset,
    op,
)
from pydantic import Field

from assets import _offline  # noqa: F401
from pipelines.partitions import documents_partitions
from resources.documents import SUPPORTED_SUFFIXES, DocumentSource
from resources.embedder import Embedder
from resources.milvus import MilvusStore

GROUP = "ingestion"
TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".text", ".html", ".htm"}


class DocumentError(Failure):
    """A problem with one document's content: reported clearly, stops only that document."""

    def __init__(self, doc_id: str, problem: str):
        super().__init__(description=f"document {doc_id!r}: {problem}", metadata={"doc_id": doc_id, "problem": problem})


def decode_text(doc_id: str, data: bytes) -> str:
    """Text of a text-like document, refusing binary junk that merely carries a text suffix."""
    if b"\x00" in data[:65536]:
        raise DocumentError(doc_id, "looks like binary data (NUL bytes), not text")
    for encoding in ("utf-8-sig", "utf-16") if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ("utf-8-sig",):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        text = data.decode("latin-1")
    sample = text[:65536]
    control = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\n\r\t\f") + sample.count("\ufffd")
    if sample and control / len(sample) > 0.05:
        raise DocumentError(doc_id, f"looks like binary data ({control} control characters in {len(sample)}), not text")
    return text


def validate_content(doc_id: str, suffix: str, data: bytes) -> None:
    if suffix not in SUPPORTED_SUFFIXES:
        raise DocumentError(
            doc_id, f"unsupported file type {suffix or '(no extension)'!r}; supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}"
        )
    if not data.strip():
        raise DocumentError(doc_id, "the file is empty")
    if suffix == ".pdf" and not data.lstrip()[:5] == b"%PDF-":
        raise DocumentError(doc_id, "not a PDF file (missing %PDF- header)")
    if suffix == ".docx" and not zipfile.is_zipfile(io.BytesIO(data)):
        raise DocumentError(doc_id, "not a valid .docx file (not a zip archive)")
    if suffix in TEXT_SUFFIXES:
        decode_text(doc_id, data)


@asset(
    partitions_def=documents_partitions,
    group_name=GROUP,
    description="The document's bytes and content hash, read from the documents folder.",
    check_specs=[AssetCheckSpec("content_not_empty", asset="raw_documents", blocking=True)],
)
def raw_documents(context: AssetExecutionContext, documents: DocumentSource):
    doc_id = context.partition_key
    path = documents.path_for(doc_id)
    if not path.is_file():
        raise DocumentError(doc_id, f"file not found at {path} (deleted? the sensor purges deleted documents)")
    data = path.read_bytes()
    suffix = PurePosixPath(doc_id).suffix.lower()
    validate_content(doc_id, suffix, data)
    sha256 = hashlib.sha256(data).hexdigest()
    yield Output(
        {"doc_id": doc_id, "path": str(path), "suffix": suffix, "sha256": sha256, "size": len(data), "content": data},
        data_version=DataVersion(sha256),
        metadata={"sha256": sha256, "size_bytes": len(data), "path": str(path)},
    )
    yield AssetCheckResult(check_name="content_not_empty", passed=len(data) > 0, metadata={"size_bytes": len(data)})


def pdf_page_count(data: bytes) -> int:
    from pdfminer.pdfdocument import PDFDocument
    from pdfminer.pdfpage import PDFPage
    from pdfminer.pdfparser import PDFParser

    document = PDFDocument(PDFParser(io.BytesIO(data)))
    return sum(1 for _ in PDFPage.create_pages(document))


def partition_document(doc_id: str, suffix: str, data: bytes) -> list:
    """unstructured elements for one document, strategy fast, no network."""
    filename = PurePosixPath(doc_id).name
    kwargs = {"metadata_filename": filename, "languages": ["eng"]}
    try:
        if suffix in (".md", ".markdown"):
            from unstructured.partition.md import partition_md

            return partition_md(text=decode_text(doc_id, data), **kwargs)
        if suffix in (".txt", ".text"):
            from unstructured.partition.text import partition_text

            return partition_text(text=decode_text(doc_id, data), **kwargs)
        if suffix in (".html", ".htm"):
            from unstructured.partition.html import partition_html

            return partition_html(text=decode_text(doc_id, data), **kwargs)
        if suffix == ".docx":
            from unstructured.partition.docx import partition_docx

            return partition_docx(file=io.BytesIO(data), **kwargs)
        if suffix == ".pdf":
            from unstructured.partition.pdf import partition_pdf

            # unstructured logs and swallows pdfminer errors; check the structure first to say why.
            pages = pdf_page_count(data)
            if pages == 0:
                raise ValueError("the PDF has no readable pages")

            return partition_pdf(file=io.BytesIO(data), strategy="fast", **kwargs)
    except DocumentError:
        raise
    except Exception as exc:  # corrupt files surface as parser errors of many kinds
        raise DocumentError(doc_id, f"could not be parsed as {suffix}: {type(exc).__name__}: {exc}") from exc
    raise DocumentError(doc_id, f"unsupported file type {suffix!r}")


@asset(
    partitions_def=documents_partitions,
    group_name=GROUP,
    description="Structured elements (titles, paragraphs, tables) parsed by unstructured with strategy='fast'.",
    check_specs=[AssetCheckSpec("has_text", asset="parsed_elements", blocking=True)],
)
def parsed_elements(context: AssetExecutionContext, raw_documents: dict):
    doc_id = raw_documents["doc_id"]
    elements = partition_document(doc_id, raw_documents["suffix"], raw_documents["content"])
    records = [element.to_dict() for element in elements]
    text_chars = sum(len((r.get("text") or "").strip()) for r in records)
    if not records or text_chars == 0:
        raise DocumentError(doc_id, "no text could be extracted (scanned image or empty document?)")
    types = pd.Series([r["type"] for r in records]).value_counts().to_dict()
    yield Output(
        {"doc_id": doc_id, "sha256": raw_documents["sha256"], "elements": records},
        metadata={"element_count": len(records), "text_chars": text_chars, "element_types": MetadataValue.json(types)},
    )
    yield AssetCheckResult(check_name="has_text", passed=text_chars > 0, metadata={"text_chars": text_chars})


class ChunkingConfig(Config):
    # Milvus stores chunk text in a VARCHAR of at most 65,535 bytes: 16,000 characters fit in any UTF-8.
    max_characters: int = Field(default=1200, ge=50, le=16000)
    new_after_n_chars: int = Field(default=900, ge=1, le=16000)
    combine_text_under_n_chars: int = Field(default=200, ge=0, le=16000)
    overlap: int = Field(default=0, ge=0, le=4000)


def chunk_id_for(doc_id: str, seq: int, text: str) -> str:
    """Deterministic: the same document content always yields the same ids."""
    return hashlib.sha256(f"{doc_id}\x00{seq}\x00{text}".encode()).hexdigest()[:40]


def chunk_elements(doc_id: str, sha256: str, element_dicts: list[dict], config: ChunkingConfig) -> list[dict]:
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
    rows = []
    for chunk in chunks:
        text = chunk.text.strip()
        if not text:
            continue
        seq = len(rows)
        pages = sorted({e.metadata.page_number for e in (chunk.metadata.orig_elements or []) if e.metadata.page_number})
        rows.append(
            {
                "chunk_id": chunk_id_for(doc_id, seq, text),
                "doc_id": doc_id,
                "doc_sha256": sha256,
                "seq": seq,
                "text": text,
                "page_numbers": pages,
            }
        )
    return rows


def chunk_table_checks(rows: list[dict]) -> tuple[bool, dict]:
    import great_expectations as gx

    from assets.quality import validate_frame

    frame = pd.DataFrame(rows, columns=["chunk_id", "doc_id", "seq", "text"])
    return validate_frame(
        "document_chunks",
        frame,
        [
            gx.expectations.ExpectTableRowCountToBeBetween(min_value=1),
            gx.expectations.ExpectColumnValuesToNotBeNull(column="chunk_id"),
            gx.expectations.ExpectColumnValuesToBeUnique(column="chunk_id"),
            gx.expectations.ExpectColumnValuesToNotBeNull(column="text"),
            gx.expectations.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
            gx.expectations.ExpectColumnValuesToBeUnique(column="seq"),
        ],
    )


@asset(
    partitions_def=documents_partitions,
    group_name=GROUP,
    description="Title-aware chunks (chunk_by_title) with deterministic ids: the unit that is embedded and graphed.",
    check_specs=[AssetCheckSpec("chunk_table_valid", asset="document_chunks", blocking=True,
                                description="Great Expectations: non-empty text, unique non-null ids.")],
)
def document_chunks(context: AssetExecutionContext, config: ChunkingConfig, parsed_elements: dict):
    doc_id = parsed_elements["doc_id"]
    rows = chunk_elements(doc_id, parsed_elements["sha256"], parsed_elements["elements"], config)
    if not rows:
        raise DocumentError(doc_id, "chunking produced no text")
    passed, details = chunk_table_checks(rows)
    lengths = [len(r["text"]) for r in rows]
    yield Output(
        rows,
        metadata={
            "chunk_count": len(rows),
            "mean_chars": float(np.mean(lengths)),
            "max_chars": max(lengths),
            "preview": MetadataValue.md(rows[0]["text"][:300]),
        },
    )
    yield AssetCheckResult(check_name="chunk_table_valid", passed=passed, metadata={"expectations": MetadataValue.json(details)})


@asset(
    partitions_def=documents_partitions,
    group_name=GROUP,
    description="Chunk embeddings upserted into Milvus; a changed document's stale vectors are deleted.",
    check_specs=[
        AssetCheckSpec("embedding_dimension_and_norm", asset="chunk_vectors", blocking=True),
        AssetCheckSpec("milvus_count_matches_chunks", asset="chunk_vectors", blocking=True),
    ],
)
def chunk_vectors(context: AssetExecutionContext, document_chunks: list[dict], embedder: Embedder, milvus: MilvusStore):
    doc_id = document_chunks[0]["doc_id"]
    current = {row["chunk_id"]: row for row in document_chunks}
    dim = embedder.dimension
    with milvus.client() as client:
        milvus.ensure_collection(client, dim)
        existing = milvus.chunk_ids(client, doc_id)
        todo = [row for cid, row in current.items() if cid not in existing]
        vectors = embedder.encode([row["text"] for row in todo])
        milvus.upsert(
            client,
            [
                {k: row[k] for k in ("chunk_id", "doc_id", "doc_sha256", "seq", "text")} | {"vector": vec.tolist()}
                for row, vec in zip(todo, vectors)
            ],
        )
        removed = milvus.delete_document(client, doc_id, keep=set(current))
        stored = milvus.rows(client, doc_id, ["chunk_id", "vector"])
    stored_ids = {row["chunk_id"] for row in stored}
    matrix = np.asarray([row["vector"] for row in stored], dtype=np.float32).reshape(len(stored), -1)
    norms = np.linalg.norm(matrix, axis=1) if len(stored) else np.zeros(0)
    dims_ok = matrix.shape[1] == dim if len(stored) else False
    norms_ok = bool(len(norms)) and bool(np.all(np.abs(norms - 1.0) < 1e-3))
    count_ok = stored_ids == set(current)
    yield Output(
        {"doc_id": doc_id, "chunk_ids": sorted(current), "embedded": len(todo), "removed": removed, "dimension": dim},
        metadata={"vectors": len(stored), "newly_embedded": len(todo), "reused": len(current) - len(todo),
                  "stale_removed": removed, "dimension": dim, "collection": milvus.collection},
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
        passed=count_ok,
        metadata={"chunks": len(current), "vectors_in_milvus": len(stored),
                  "missing": len(set(current) - stored_ids), "unexpected": len(stored_ids - set(current))},
    )


class PurgeConfig(Config):
    doc_ids: list[str]


@op(description="Remove every trace of deleted documents from the vector index.")
def purge_document_vectors(context: OpExecutionContext, config: PurgeConfig, milvus: MilvusStore) -> list[str]:
    with milvus.client() as client:
        for doc_id in config.doc_ids:
            removed = milvus.delete_document(client, doc_id)
            context.log.info(f"purged {removed} vectors of deleted document {doc_id!r}")
    return config.doc_ids


ingestion_assets = [raw_documents, parsed_elements, document_chunks, chunk_vectors]
