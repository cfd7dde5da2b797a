"""Bench tables that the docs include: a bench run with `--markdown FILE` replaces its own block in FILE.

A block sits between two markers, `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`, and says which command
printed it, when and on which machine, so a figure in the docs is always the last one a command printed:

    from bench.report import markdown_table, write_block
    write_block("docs/benchmarks.md", "ingest", markdown_table(["figure", "value"], rows))

Updating a figure means re-running the command, never editing prose.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import sys
from pathlib import Path


def machine() -> str:
    """CPU model and core count of this machine, e.g. 'Intel Xeon ... (2 cores)'."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{re.sub(r' +', ' ', model)} ({os.cpu_count()} cores)"


def command_line() -> str:
    """The command that is running, as a user would type it (`python -m bench.x --flag`)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    head = ["python", "-m", spec.name] if spec is not None and spec.name else ["python", sys.argv[0]]
    return " ".join(shlex.quote(a) for a in head + sys.argv[1:])


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        text = f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def block(name: str, body: str, command: str | None = None, when: datetime.date | None = None) -> str:
    """The block text: markers, the provenance line, the body."""
    when = when or datetime.date.today()
    command = command or command_line()
    return (f"<!-- bench:{name} -->\n_Printed by `{command}` on {when.isoformat()}, {machine()}._\n\n"
            f"{body.rstrip()}\n<!-- /bench:{name} -->")


def write_block(path: str | Path, name: str, body: str, command: str | None = None) -> Path:
    """Replace the block NAME in the markdown file (appended at the end when the file has none yet)."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", name):
        raise ValueError(f"bench block name {name!r}: use lower-case letters, digits, '-', '_' or '.'")
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    new = block(name, body, command)
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: new, text, count=1)
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + new + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
