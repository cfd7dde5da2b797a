"""Print the platform's Dagster asset graph as a Mermaid flowchart, or write it into the docs (`--write`).

The picture in README.md and docs/architecture.md is generated from `pipelines.definitions.defs` (assets grouped by
their group name, an edge for every asset dependency), so it cannot drift from the code: tests/test_docs.py
compares the committed diagram with a fresh one.

    python -m tools.asset_graph_mermaid            # print the Mermaid block
    python -m tools.asset_graph_mermaid --write    # replace it between the markers in README.md and docs/
    python -m tools.asset_graph_mermaid --check    # exit 1 when a committed diagram is stale
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC_FILES = ["README.md", "docs/architecture.md"]
BEGIN, END = "<!-- asset-graph -->", "<!-- /asset-graph -->"
MARKED = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)


def load_asset_graph():
    """The resolved asset graph of the platform's one code location (workspace.yaml: pipelines.defs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Dagster's beta warnings (backfill_policy, owners) are not ours to show
        from pipelines.definitions import defs

        return defs.resolve_asset_graph()


def _node_id(key) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", "__".join(key.path))


def _group_id(group: str) -> str:
    return "group_" + re.sub(r"[^A-Za-z0-9_]", "_", group)


def asset_graph_mermaid(asset_graph=None) -> str:
    """A fenced Mermaid flowchart: one subgraph per asset group, assets in dependency order, an edge per dependency."""
    graph = asset_graph if asset_graph is not None else load_asset_graph()
    keys = sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string())
    parents = {key: sorted((p for p in graph.get(key).parent_keys if p in set(keys)), key=lambda k: k.to_user_string())
               for key in keys}
    has_children = {p for ps in parents.values() for p in ps}
    # topological order (Kahn's; ties: assets that feed others first, then by name): upstream groups come first
    order, placed = [], set()
    while len(order) < len(keys):
        ready = sorted((k for k in keys if k not in placed and all(p in placed for p in parents[k])),
                       key=lambda k: (k not in has_children, k.to_user_string()))
        if not ready:  # a cycle cannot be materialized; Dagster refuses it before we get here
            raise ValueError("the asset graph has a cycle")
        order.append(ready[0])
        placed.add(ready[0])
    groups: dict[str, list] = {}
    for key in order:
        groups.setdefault(graph.get(key).group_name or "default", []).append(key)
    lines = ["```mermaid", "flowchart LR"]
    for group, members in groups.items():
        lines.append(f"  subgraph {_group_id(group)}[\"{group}\"]")
        lines += [f"    {_node_id(k)}[\"{k.to_user_string()}\"]" for k in members]
        lines.append("  end")
    for key in order:
        lines += [f"  {_node_id(p)} --> {_node_id(key)}" for p in parents[key]]
    lines.append("```")
    return "\n".join(lines)


def marked_block(diagram: str) -> str:
    return f"{BEGIN}\n{diagram}\n{END}"


def committed_diagram(path: Path) -> str | None:
    """The diagram between the markers in a docs file (None when the file has no markers)."""
    match = MARKED.search(path.read_text(encoding="utf-8"))
    return match.group(0)[len(BEGIN):-len(END)].strip("\n") if match else None


def write(diagram: str, files=DOC_FILES) -> list[Path]:
    """Replace the marked block in each file; a file without the markers is an error (say where they go)."""
    written = []
    for name in files:
        path = REPO / name
        text = path.read_text(encoding="utf-8")
        if not MARKED.search(text):
            raise SystemExit(f"{name}: no {BEGIN} ... {END} markers; add them where the diagram belongs")
        path.write_text(MARKED.sub(lambda _: marked_block(diagram), text, count=1), encoding="utf-8")
        written.append(path)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.asset_graph_mermaid", description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help=f"replace the diagram in {', '.join(DOC_FILES)}")
    action.add_argument("--check", action="store_true", help="exit 1 when a committed diagram differs from the code")
    args = parser.parse_args(argv)
    diagram = asset_graph_mermaid()
    if args.write:
        for path in write(diagram):
            print(f"wrote the asset graph into {path.relative_to(REPO)}")
        return 0
    if args.check:
        stale = [name for name in DOC_FILES if committed_diagram(REPO / name) != diagram]
        for name in stale:
            print(f"{name}: the asset graph diagram is stale; run python -m tools.asset_graph_mermaid --write")
        return 1 if stale else 0
    print(diagram)
    return 0


if __name__ == "__main__":
    sys.exit(main())
