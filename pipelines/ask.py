"""Ask the platform a question: sources from the index, paths from the knowledge graph, an answer from the model.

    python -m pipelines.ask "Which applications run on servers managed by the Platform Team?" [--top-k 5] [--json]
                            [--url http://127.0.0.1:8000] [--model docplatform] [--timeout 120] [--no-llm]

The model server is $DOCPLATFORM_VLLM_URL (default http://127.0.0.1:8000); it answers with the deployed adapter
(`docplatform`) when there is one, else the base model. Without a server the sources and graph paths are still
printed, with the one command that starts a server. Exit status: 0 answered or sources shown, 2 bad question.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap


def render(answer, width: int = 110) -> str:
    """A human-readable answer: the answer, its citations, then the sources and graph paths it rests on."""
    lines = [f"Question: {answer.question}"]
    if answer.answer:
        state = "" if answer.complete else " (incomplete)"
        lines.append(f"Answer ({answer.model}{state}):")
        lines += ["  " + line for line in textwrap.wrap(answer.answer, width - 2)] or ["  (empty)"]
        if answer.citations:
            lines.append("Cited: " + "; ".join(f"[{c['number']}] {c['doc_id']}#{c['seq']} {c['chunk_id'][:12]}"
                                               for c in answer.citations))
        else:
            lines.append("Cited: nothing (the answer names no source number)")
    if answer.error:
        lines.append(f"Note: {answer.error}")
    if answer.notice:
        lines.append(f"  -> {answer.notice}")
    if answer.entities:
        lines.append("Entities in the question: " + ", ".join(f"{e['name']} ({e['label']})" for e in answer.entities))
    lines.append(f"Sources ({answer.retrieval_mode} retrieval + graph evidence):")
    for source in answer.sources:
        preview = " ".join(source["text"].split())[:90]
        lines.append(f"  [{source['number']}] {source['doc_id']}#{source['seq']}  {source['chunk_id'][:12]}  "
                     f"({source['origin']})  {source['path']}")
        lines.append(f"      {preview!r}")
    if answer.graph_paths:
        lines.append("Graph paths:")
        for path in answer.graph_paths:
            evidence = ", ".join(sorted({c[:12] for hop in path["evidence"] for c in hop}))
            lines.append(f"  {path['path']}   (chunks {evidence}; {', '.join(path['doc_ids'])})")
    else:
        lines.append("Graph paths: none (no known entity named in the question)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question")
    parser.add_argument("--top-k", type=int, default=5, help="chunks retrieved by hybrid search (default 5)")
    parser.add_argument("--json", action="store_true", help="print the answer object as JSON")
    parser.add_argument("--url", default=None, help="vLLM server (default $DOCPLATFORM_VLLM_URL or http://127.0.0.1:8000)")
    parser.add_argument("--model", default=None, help="served model to ask (default: docplatform, else the base)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the answer")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--hops", type=int, default=2, help="longest graph path, in edges (default 2)")
    parser.add_argument("--no-llm", action="store_true", help="only retrieve: sources and graph paths")
    parser.add_argument("--show-prompt", action="store_true", help="print the prompt sent to the model")
    args = parser.parse_args(argv)
    if args.top_k < 1 or args.top_k > 50:
        parser.error("--top-k must be between 1 and 50")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from assets.ask import AskError, ask

    try:
        answer = ask(args.question, top_k=args.top_k, server_url=args.url, model=args.model, timeout_s=args.timeout,
                     max_tokens=args.max_tokens, max_hops=args.hops, use_llm=not args.no_llm)
    except AskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(answer.to_dict(with_prompt=args.show_prompt), indent=2, ensure_ascii=False))
    else:
        print(render(answer))
        if args.show_prompt:
            print("Prompt:")
            for message in answer.messages:
                print(f"--- {message['role']}\n{message['content']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
