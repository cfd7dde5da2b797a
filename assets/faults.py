"""Crash points for tests: DOCPLATFORM_FAULT_POINT=<name> makes the process SIGKILL itself when it reaches <name>,
or, with DOCPLATFORM_FAULT_KILL_PGID=<pgid>, SIGKILL that process group instead (a server the run talks to).

Points: after_parse (elements parsed, nothing stored), after_milvus_upsert (new vectors written; stale vectors and
the document state not yet), before_graph_write (Milvus done, graph not touched), after_graph_write (both stores
written, the document's state not yet final), after_adapter_load (deployment: the candidate adapter loaded into vLLM,
not smoke-tested yet), before_alias_swap (deployment: candidate smoke-tested, served alias not swapped yet).
Unset (always, outside tests): nothing happens.
"""

import os
import signal


def fault_point(name: str) -> None:
    if os.environ.get("DOCPLATFORM_FAULT_POINT") != name:
        return
    target = os.environ.get("DOCPLATFORM_FAULT_KILL_PGID")
    if target:
        try:
            os.killpg(int(target), signal.SIGKILL)
        except ProcessLookupError:
            pass
        return
    os.kill(os.getpid(), signal.SIGKILL)
