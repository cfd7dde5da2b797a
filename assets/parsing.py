"""Parsing one document into unstructured elements, and many of them in a process pool.

Plain functions (no Dagster run needed). The pool isolates the parser: a document that crashes the
worker or runs past the per-document timeout is reported by name and skipped; the others proceed.
"""

import hashlib
import io
import logging
import multiprocessing
import os
import re
import signal
import threading
import time
import zipfile
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import PurePosixPath

from assets.document_content import (  # noqa: F401  (re-exported: tests, bench and ingestion import them from here)
    MAX_DOCX_RATIO,
    MAX_DOCX_UNCOMPRESSED,
    TEXT_SUFFIXES,
    DocumentError,
    check_docx_archive,
    decode_text,
    pdf_page_count,
)
from assets.formats import FORMAT_HANDLERS  # office formats, e-mail, OCR for scans and images
from resources.documents import SUPPORTED_SUFFIXES

# address space of a parser pool worker (RLIMIT_AS); a warmed worker maps ~1.2 GB, so ~2.8 GB is left to one document
PARSE_MEMORY_MB = int(os.environ.get("DOCPLATFORM_PARSE_MEMORY_MB", "4096"))


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


# a line of a record in plain text: a key ('owner: Emergency Logistics Squad', 'hosts:'), an item ('  - dsp-host-1')
# or a comment
_KEY_LINE = r"^\s*[^\W\d][\w .\-/&()]{0,39}:(?:\s|$)"
_RECORD_LINE = re.compile(rf"{_KEY_LINE}|^\s*(?:[-*•]\s+\S|#)")


def keep_record_lines(text: str) -> str:
    """unstructured's paragraph grouper, except for paragraphs that are records: lines of 'key: value', bare keys
    and '- item's keep their line breaks, so the knowledge graph's structure layer reads them as a record (joined,
    'service: dispatch API owner: ...' is neither a record nor a sentence). Prose wrapped over lines is joined."""
    from unstructured.cleaners.core import auto_paragraph_grouper, blank_line_grouper

    grouped = auto_paragraph_grouper(text)
    if grouped == text or blank_line_grouper(text) != grouped:
        return grouped  # a text of one line per paragraph: unstructured keeps every line already
    paragraphs = []
    for paragraph in re.split(r"\n[ \t]*\n", text):
        lines = [line for line in paragraph.splitlines() if line.strip()]
        keys = sum(1 for line in lines if re.match(_KEY_LINE, line))
        record = len(lines) >= 2 and keys >= 2 and sum(1 for line in lines if _RECORD_LINE.match(line)) >= 0.8 * len(lines)
        paragraphs.append(paragraph if record else blank_line_grouper(paragraph))
    return "\n\n".join(paragraphs)


def partition_document(doc_id: str, suffix: str, data: bytes) -> list:
    """unstructured elements for one document, strategy fast, no network."""
    filename = PurePosixPath(doc_id).name
    kwargs = {"metadata_filename": filename, "languages": ["eng"]}
    try:
        if suffix in FORMAT_HANDLERS:
            return FORMAT_HANDLERS[suffix](doc_id, data, kwargs)
        if suffix in (".md", ".markdown"):
            from unstructured.partition.md import partition_md

            return partition_md(text=decode_text(doc_id, data), **kwargs)
        if suffix in (".txt", ".text"):
            from unstructured.partition.text import partition_text

            return partition_text(text=decode_text(doc_id, data), paragraph_grouper=keep_record_lines, **kwargs)
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


def parse_records(doc_id: str, suffix: str, data: bytes) -> list[dict]:
    """Element dicts of one document (DocumentError when no text comes out)."""
    if suffix == ".docx":
        check_docx_archive(doc_id, data)
    records = [element.to_dict() for element in partition_document(doc_id, suffix, data)]
    for record in records:  # which strategy produced the text (assets.formats marks OCR and PDF elements)
        record.setdefault("metadata", {}).setdefault("parse_strategy", "fast")
    if not records or not any((r.get("text") or "").strip() for r in records):
        if suffix in (".html", ".htm"):
            return deeply_nested_html_records(doc_id, data)
        raise DocumentError(doc_id, "no text could be extracted (scanned image or empty document?)")
    return records


def deeply_nested_html_records(doc_id: str, data: bytes) -> list[dict]:
    """HTML whose text sits below the tree parser's depth limit: its text read by a flat tokenizer, or an error
    that says the document is nested too deeply (not that it is empty)."""
    from unstructured.partition.text import partition_text

    from assets.nested_html import TREE_PARSER_MAX_DEPTH, flat_html_text

    text, depth = flat_html_text(decode_text(doc_id, data))
    if depth <= TREE_PARSER_MAX_DEPTH:
        raise DocumentError(doc_id, "no text could be extracted (scanned image or empty document?)")
    if not text.strip():
        raise DocumentError(doc_id, f"too deeply nested for the parser ({depth:,} levels, limit "
                                    f"{TREE_PARSER_MAX_DEPTH}) and no text found by the flat reader")
    records = [e.to_dict() for e in partition_text(text=text, metadata_filename=PurePosixPath(doc_id).name,
                                                   languages=["eng"])]
    for record in records:
        record.setdefault("metadata", {})["parse_strategy"] = f"flat_html (nested {depth:,} levels deep)"
    return records


def _worker(doc_id: str, suffix: str, data: bytes):
    """Runs in a pool process: ("ok", records) or ("error", message) — never raises across the pipe."""
    try:
        return "ok", parse_records(doc_id, suffix, data)
    except DocumentError as exc:
        return "error", exc.description
    except Exception as exc:  # noqa: BLE001
        return "error", f"document {doc_id!r}: parser failed: {type(exc).__name__}: {exc}"


def _capped(memory_mb: int, worker, doc_id: str, suffix: str, data: bytes):
    """Run worker in a pool process under an address-space cap: a document that needs more gets a MemoryError,
    reported as its own clear error (the run's process is never capped: one- or two-document runs have only the timeout)."""
    import resource

    if memory_mb > 0:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    over = f"document {doc_id!r}: parsing needed more than the {memory_mb:,} MB memory limit; skipped"
    try:
        status, value = worker(doc_id, suffix, data)
    except MemoryError:
        return "error", over
    return ("error", over) if status == "error" and "MemoryError" in value else (status, value)


_POOL: dict = {}
IN_PROCESS_MAX_DOCS = 2


class _ParseTimeout(BaseException):
    pass


def _in_process(doc_id: str, suffix: str, data: bytes, timeout_s: float):
    """Parse in this process under a SIGALRM deadline.

    The alarm repeats every 0.2 s after the deadline: a signal handler's exception that lands in a garbage
    collector callback or a __del__ is swallowed by Python ("Exception ignored in ..."), so one alarm alone
    could let a spinning parser run on."""
    finished = False

    def expire(signum, frame):
        if not finished:
            raise _ParseTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout_s, 0.2)
    try:
        try:
            return _worker(doc_id, suffix, data)
        finally:
            finished = True
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _ParseTimeout:
        return "error", f"document {doc_id!r}: parsing took longer than {timeout_s:g} s; skipped"
    finally:
        signal.signal(signal.SIGALRM, previous)


def _warm() -> int:
    """Import the parsers once per worker, so that a document's timeout never counts the start-up."""
    from unstructured.partition import docx, html, md, text  # noqa: F401

    time.sleep(0.2)  # let the next warm-up task go to another worker
    return os.getpid()


def _pool(workers: int) -> ProcessPoolExecutor:
    """A warmed process pool kept for the life of this process (forkserver: no torch state is forked)."""
    pool = _POOL.get(workers)
    if pool is None:
        ctx = multiprocessing.get_context("forkserver")
        # the fork server imports the parsers once; each (re)started worker is forked from it already warm
        ctx.set_forkserver_preload(["assets.parsing", "unstructured.partition.md", "unstructured.partition.text",
                                    "unstructured.partition.html", "unstructured.partition.docx"])
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        _POOL[workers] = pool
        for future in [pool.submit(_warm) for _ in range(workers)]:
            future.result(timeout=600)
    return pool


def _discard_pool(workers: int) -> None:
    pool = _POOL.pop(workers, None)
    if pool is None:
        return
    for proc in list(getattr(pool, "_processes", {}).values()):
        try:
            proc.kill()
        except Exception:  # noqa: BLE001
            pass
    pool.shutdown(wait=False, cancel_futures=True)


def shutdown_pools() -> None:
    """Stop the parser processes (a run's process must not linger at exit waiting for them), the fork server with
    them: it holds the parsers' imports (~380 MB RSS) and would sit idle through embedding and graph extraction; the
    next run's pool starts a fresh one."""
    stopped = bool(_POOL)
    for workers in list(_POOL):
        pool = _POOL.pop(workers)
        pool.shutdown(wait=True, cancel_futures=True)
    if stopped:
        stop_fork_server()


def stop_fork_server() -> None:
    """End multiprocessing's fork server process if this process started one (CPython has no public call for it)."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    if server is not None and getattr(server, "_forkserver_pid", None) is not None and hasattr(server, "_stop"):
        server._stop()


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def parse_many(docs: list[tuple[str, str, bytes]], workers: int = 0, timeout_s: float = 120.0,
               progress=None, worker=None) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """Parse (doc_id, suffix, bytes) documents in a process pool over all cores.

    Returns ({doc_id: element dicts}, {doc_id: error}). A document running past timeout_s (measured
    from when a worker took it) or crashing its worker is an error for that document only: the pool
    is replaced and the rest are parsed again in a fresh one. worker: an importable replacement of the
    per-document function (tests inject faults with it).
    """
    workers = workers or default_workers()
    parsed: dict[str, list[dict]] = {}
    errors: dict[str, str] = {}
    if worker is None and len(docs) <= IN_PROCESS_MAX_DOCS and threading.current_thread() is threading.main_thread():
        # a document or two (the sensor's usual change): no pool start-up; SIGALRM enforces the timeout
        for doc_id, suffix, data in docs:
            status, value = _in_process(doc_id, suffix, data, timeout_s)
            (parsed if status == "ok" else errors)[doc_id] = value
        return parsed, errors
    worker = worker or _worker

    def run(batch: list, size: int) -> tuple[list, bool]:
        """Parse batch in the pool of this size; returns (documents suspected of a hang or crash, crashed?)."""
        pool = _pool(size)
        futures = {pool.submit(_capped, PARSE_MEMORY_MB, worker, *doc): doc for doc in batch}
        started: dict = {}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            now = time.monotonic()
            crashed = False
            for future in done:
                try:
                    status, value = future.result()
                except BrokenProcessPool:
                    crashed = True
                    continue
                (parsed if status == "ok" else errors)[futures[future][0]] = value
                if progress:
                    progress(len(parsed) + len(errors), len(docs))
            for future in pending:
                if future.running():
                    started.setdefault(future, now)
            hung = [f for f in pending if f in started and now - started[f] > timeout_s]
            if crashed or hung:
                _discard_pool(size)
                unfinished = [doc for f, doc in futures.items() if doc[0] not in parsed and doc[0] not in errors]
                return (unfinished if crashed else [futures[f] for f in hung]), crashed
        return [], False

    todo = list(docs)
    while todo:
        try:
            suspects, _ = run(todo, workers)
        except BrokenProcessPool:  # the pool could not even start (e.g. a __main__ that workers cannot import)
            _discard_pool(workers)
            logging.getLogger(__name__).warning("parser pool failed to start; parsing in this process")
            for doc_id, suffix, data in todo:
                status, value = _in_process(doc_id, suffix, data, timeout_s) if \
                    threading.current_thread() is threading.main_thread() else _worker(doc_id, suffix, data)
                (parsed if status == "ok" else errors)[doc_id] = value
            break
        # a hang or crash: each suspect alone in a one-worker pool, so its clock and its crash are its own
        for doc in suspects:
            if doc[0] in parsed or doc[0] in errors:
                continue
            again, crashed = run([doc], 1)
            if again:
                errors[doc[0]] = (f"document {doc[0]!r}: the parser crashed (worker process died); skipped" if crashed
                                  else f"document {doc[0]!r}: parsing took longer than {timeout_s:g} s; skipped")
        todo = [doc for doc in todo if doc[0] not in parsed and doc[0] not in errors]
    return parsed, errors


def content_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def suffix_of(doc_id: str) -> str:
    return PurePosixPath(doc_id).suffix.lower()
