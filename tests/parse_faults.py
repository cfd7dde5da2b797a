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
