"""The docs stay honest: links resolve, shown commands run (or say why they cannot here), the asset graph is current.

Every shell command in a ```bash block of README.md or docs/*.md is either run here (it must exit 0) or carries a
comment saying what it needs: `# needs: server|gpu|index|root ...` or `# slow ...`. A marked `python -m MODULE`
command is still checked cheaply: MODULE's `--help` must exit 0 and list every `--flag` the command uses; a marked
`make TARGET` must name a Makefile target, a `dagster job execute -j JOB` a job of the Definitions.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
MARK = re.compile(r"^(needs:\s*(server|gpu|index|root)\b|slow\b)")


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code spans (links there are not links)."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip()).lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return kept.replace(" ", "-")


@functools.cache
def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = github_slug(match.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def relative_links() -> list[tuple[Path, str]]:
    links = []
    for doc in DOC_FILES:
        for target in LINK.findall(prose(doc.read_text(encoding="utf-8"))):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: are not checked here
                links.append((doc, target))
    return links


def test_every_relative_link_resolves_to_a_file_and_heading():
    links = relative_links()
    assert len(links) > 20, "the docs link to each other; finding so few links means the parser is broken"
    broken = []
    for doc, target in links:
        path_part, _, anchor = target.partition("#")
        path = (doc.parent / path_part).resolve() if path_part else doc
        if not path.exists():
            broken.append(f"{_rel(doc)}: {target} (no file {path_part})")
        elif anchor and (path.suffix != ".md" or anchor not in anchors(path)):
            broken.append(f"{_rel(doc)}: {target} (no heading #{anchor} in {path_part or doc.name})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def split_comment(line: str) -> tuple[str, str]:
    """(command, comment) of one shell line: the comment starts at a # outside quotes that follows a space."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].strip(), line[i + 1:].strip()
    return line.strip(), ""


def shown_commands() -> list[tuple[Path, str, str]]:
    """(doc, command, comment) for every command line of every ```bash block (continuations joined)."""
    commands = []
    for doc in DOC_FILES:
        for language, body in FENCE.findall(doc.read_text(encoding="utf-8")):
            if language not in ("bash", "sh", "shell", "console"):
                continue
            body = re.sub(r"\\\n\s*", " ", body)
            for line in body.splitlines():
                command, comment = split_comment(line)
                if command:
                    commands.append((doc, command, comment))
    return commands


def words(command: str) -> list[str]:
    """The command's words without leading VAR=value assignments and a trailing '&'."""
    parts = shlex.split(command)
    while parts and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", parts[0]):
        parts.pop(0)
    return parts[:-1] if parts and parts[-1] == "&" else parts


def _env(tmp_dir: Path) -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), DOCPLATFORM_DATA_DIR=str(tmp_dir), DAGSTER_HOME=str(tmp_dir))


@functools.cache
def module_help(module: str, tmp_dir: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, env=_env(Path(tmp_dir)),
                          capture_output=True, text=True, timeout=120)


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9_.-]+):", (REPO / "Makefile").read_text(), re.MULTILINE))


def check_marked(command: str, tmp_dir: Path) -> str | None:
    """A cheap check of a command that is not run here; a problem as text, or None."""
    parts = words(command)
    if parts[:1] in (["python"], ["python3"]) and len(parts) > 2 and parts[1] == "-m":
        module = parts[2]
        if module == "pytest":
            missing = [p for p in parts[3:] if p.startswith("tests/") and not (REPO / p.split("::")[0]).exists()]
            return f"no such test file {missing}" if missing else None
        done = module_help(module, str(tmp_dir))
        if done.returncode != 0:
            return f"`python -m {module} --help` exited {done.returncode}: {done.stderr[-400:]}"
        flags = {p.split("=")[0] for p in parts[3:] if p.startswith("--")}
        unknown = sorted(f for f in flags if f not in done.stdout)
        return f"`python -m {module} --help` lists no {unknown}" if unknown else None
    if parts[:1] == ["make"]:
        unknown = [t for t in parts[1:] if not t.startswith("-") and "=" not in t and t not in makefile_targets()]
        return f"no Makefile target {unknown}" if unknown else None
    if parts[:3] == ["dagster", "job", "execute"] and "-j" in parts:
        from pipelines.definitions import defs

        job = parts[parts.index("-j") + 1]
        return None if job in {j.name for j in defs.resolve_all_job_defs()} else f"no job {job!r} in the Definitions"
    return None


def test_every_shown_command_is_run_here_or_marked(tmp_path):
    commands = shown_commands()
    assert len(commands) >= 10, "the README and docs show commands; finding so few means the parser is broken"
    problems, ran = [], 0
    for doc, command, comment in commands:
        where = f"{_rel(doc)}: {command}"
        if comment:
            if not MARK.match(comment):
                problems.append(f"{where}\n  comment {comment!r}: start it with 'needs: server|gpu|index|root' or "
                                "'slow' when the command cannot run in the docs test, or drop it and let it run")
                continue
            problem = check_marked(command, tmp_path)
            if problem:
                problems.append(f"{where}\n  {problem}")
            continue
        done = subprocess.run(["bash", "-c", command], cwd=REPO, env=_env(tmp_path), capture_output=True, text=True,
                              timeout=120)
        ran += 1
        if done.returncode != 0:
            problems.append(f"{where}\n  exited {done.returncode} (mark it '# needs: ...' or '# slow' if it cannot run "
                            f"here): {(done.stderr or done.stdout)[-400:]}")
    assert not problems, "commands in the docs:\n" + "\n".join(problems)
    assert ran >= 5, f"only {ran} commands ran; the docs' cheap commands (--help, --check) should run here"


def test_readme_shows_exactly_the_two_set_up_commands():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    blocks = [body for language, body in FENCE.findall(section) if language == "bash"]
    assert len(blocks) == 1
    assert [words(split_comment(line)[0]) for line in blocks[0].splitlines() if line.strip()] == \
        [["make", "run"], ["make", "test"]]
    assert len(readme.splitlines()) < 200


def test_committed_asset_graph_equals_the_generated_one():
    from tools.asset_graph_mermaid import DOC_FILES as DIAGRAM_FILES, asset_graph_mermaid, committed_diagram

    diagram = asset_graph_mermaid()
    assert "raw_documents --> parsed_elements" in diagram and 'subgraph group_ingestion["ingestion"]' in diagram
    for name in DIAGRAM_FILES:
        assert committed_diagram(REPO / name) == diagram, \
            f"{name}: the asset graph is stale; run python -m tools.asset_graph_mermaid --write"


@pytest.mark.parametrize("heading, slug", [("Search (English and Korean)", "search-english-and-korean"),
                                           ("Beyond one machine (`deploy/`)", "beyond-one-machine-deploy"),
                                           ("Fine-tune task gate", "fine-tune-task-gate")])
def test_github_slug(heading, slug):
    assert github_slug(heading) == slug


def test_a_broken_anchor_and_an_unmarked_failing_command_are_caught(tmp_path):
    """The checks themselves can fail: a missing heading is not an anchor, a failing command is not 'run'."""
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## Real heading\n")
    assert "real-heading" in anchors(page) and "missing" not in anchors(page)
    assert split_comment('grep "#x" file  # needs: server') == ('grep "#x" file', "needs: server")
    assert check_marked("python -m pipelines.search --no-such-flag", tmp_path) is not None
    assert check_marked("make no-such-target", tmp_path) is not None
