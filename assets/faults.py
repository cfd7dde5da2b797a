"""Crash points for tests: DOCPLATFORM_FAULT_POINT=<name> makes the process SIGKILL itself when it reaches <name>.

Points: after_parse (elements parsed, nothing stored), after_milvus_upsert (new vectors written; stale vectors and
the document state not yet), before_graph_write (Milvus done, graph not touched), after_graph_write (both stores
written, the document's state not yet final). Unset (always, outside tests): nothing happens.
"""

import os
import signal


def fault_point(name: str) -> None:
    if os.environ.get("DOCPLATFORM_FAULT_POINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
