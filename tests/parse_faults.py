"""Parser faults for tests, importable by the parser pool's worker processes."""

import os
import time

from assets.parsing import _worker


def faulty_worker(doc_id: str, suffix: str, data: bytes):
    if doc_id.startswith("hang"):
        time.sleep(600)
    if doc_id.startswith("crash"):
        os._exit(139)  # as a segfaulting parser would
    return _worker(doc_id, suffix, data)


def memory_hog_worker(doc_id: str, suffix: str, data: bytes):
    """A parser that wants more memory than the pool's cap (a decompression or entity bomb would)."""
    from assets.parsing import PARSE_MEMORY_MB

    if doc_id.startswith("hog"):
        blob = bytearray((PARSE_MEMORY_MB + 1024) * 1024 * 1024)
        return "ok", [{"type": "NarrativeText", "text": str(len(blob))}]
    return _worker(doc_id, suffix, data)
