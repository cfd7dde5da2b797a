"""Ask benchmark: retrieval recall@5, graph-path hits, answer token F1 / exact match and latency per question.

    python -m bench.ask [--set sample|mixed|all] [--top-k 5] [--json]
                        [--url http://127.0.0.1:8000] [--base-model base]
                        [--adapter-url URL] [--adapter-model docplatform] [--no-llm]
                        [--adapter ADAPTER_FOLDER] [--base-model-path HF_FOLDER]

Question set: bench/ask_data/questions.json (single- and multi-hop, English and Korean; set 'mixed' adds the Korean
documents of bench/ask_data/ko_docs to the sample corpus). Each set is ingested once with the real pipeline
(`python -m pipelines.run_main` in a subprocess) into $DOCPLATFORM_DATA_DIR/bench-ask/<set> and re-used while its
documents are unchanged. Without a reachable server only retrieval figures are printed. With one, every question is
answered by the base model and, when served (same server or --adapter-url), by the `docplatform` adapter.

--adapter FOLDER (a LoRA adapter folder, e.g. a registry version `$DOCPLATFORM_ADAPTER_DIR/docplatform/v0001`) answers
every question twice in this process when no server answers them: base model (adapter disabled) and adapter, greedy
Hugging Face generation over exactly the prompt the ask path builds (labels `base-hf` and `adapter-hf`). Each answer
is scored on token F1, exact match, citation accuracy (it cites exactly the relevant chunks that were in its context;
nothing when none was) and citation precision, with its generation latency.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUESTIONS = REPO / "bench" / "ask_data" / "questions.json"


def load_questions(path: Path = QUESTIONS) -> dict:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    for question in data["questions"]:
        if question["set"] not in data["sets"]:
            raise ValueError(f"question {question['id']}: unknown set {question['set']!r}")
    return data


def prepare_set(name: str, folders: list[str], root: Path) -> dict:
    """The set's documents gathered in one folder and ingested by the real pipeline (change-only, so re-runs are cheap)."""
    base = root / name
    docs = base / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    wanted = {}
    for folder in folders:
        for item in sorted((REPO / folder).iterdir()):
            if item.is_file():
                wanted[item.name] = item
    for stale in docs.iterdir():
        if stale.name not in wanted:
            stale.unlink()
    for key, source in wanted.items():
        target = docs / key
        if not target.exists() or target.read_bytes() != source.read_bytes():
            shutil.copy2(source, target)
    env = dict(os.environ, DOCPLATFORM_DATA_DIR=str(base / "data"), DAGSTER_HOME=str(base / "dagster"),
               DOCPLATFORM_DOCUMENTS_DIR=str(docs), HF_HUB_OFFLINE="1")
    env.pop("DOCPLATFORM_MILVUS_URI", None)
    env.pop("DOCPLATFORM_GRAPH_PATH", None)
    (base / "dagster").mkdir(exist_ok=True)
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pipelines.run_main", "--documents", str(docs), "--ask", ""],
                         cwd=REPO, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"ingesting set {name!r} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    from resources.documents import DocumentSource
    from resources.graph_store import GraphStore
    from resources.milvus import MilvusStore

    return {"milvus": MilvusStore(uri=str(base / "data" / "milvus.db")),
            "graph_store": GraphStore(path=str(base / "data" / "graph.lbug")),
            "documents": DocumentSource(root=str(docs)), "ingest_s": time.perf_counter() - started}


def relevant_chunk_ids(question: dict, milvus) -> list[str]:
    """The labelled relevant chunks as ids: the chunk of the document that contains the phrase."""
    ids = []
    with milvus.client() as client:
        for item in question["relevant"]:
            rows = milvus.rows(client, item["doc"], ["chunk_id", "text"])
            phrase = " ".join(item["contains"].split())
            found = [r["chunk_id"] for r in rows if phrase in " ".join(r["text"].split())]
            if not found:
                raise ValueError(f"question {question['id']}: no chunk of {item['doc']!r} contains {item['contains']!r}")
            ids.append(found[0])
    return list(dict.fromkeys(ids))


def path_hits(gold_paths: list[list[str]], found: list[dict]) -> tuple[int, int]:
    """(gold paths found as a run of names inside some returned path, gold paths)."""
    from resources.ontology import normalize_name

    returned = [[normalize_name(n) for n in p["names"]] for p in found]
    hits = 0
    for gold in gold_paths:
        want = [normalize_name(n) for n in gold]
        if any(any(names[i:i + len(want)] == want for i in range(len(names) - len(want) + 1)) for names in returned):
            hits += 1
    return hits, len(gold_paths)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def server_models(url: str) -> list[str]:
    from assets.ask.llm import AnswerClient, ServerUnavailable

    try:
        return [m["id"] for m in AnswerClient(url).models()]
    except ServerUnavailable:
        return []


def citation_accuracy(cited: list[str], relevant: list[str], context: list[str]) -> float:
    """1.0 when the answer cites exactly the relevant chunks that its context held (none when it held none)."""
    return float(set(cited) == set(relevant) & set(context))


class LocalAnswerer:
    """Greedy Hugging Face generation of base and adapter answers in this process (no vLLM server needed): the base is
    the adapter with its LoRA layers disabled, so both see the same weights, prompt and decoding."""

    def __init__(self, adapter: str, base_model: str | None = None):
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from assets.finetune.train import cpu_threads
        from resources.llm import BaseModelFolder

        torch.set_num_threads(cpu_threads(0))
        base = BaseModelFolder(path=base_model).resolve() if base_model else BaseModelFolder().resolve()
        manifest = Path(adapter) / "manifest.json"
        if not base_model and manifest.is_file():  # the base the adapter was trained on
            recorded = Path(json.loads(manifest.read_text())["base_model"]["path"])
            base = recorded if (recorded / "config.json").is_file() else base
        self.tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32, local_files_only=True)
        self.model = PeftModel.from_pretrained(model, str(adapter))
        self.model.eval()
        self.base, self.adapter = str(base), str(adapter)

    def answer(self, messages: list[dict], use_adapter: bool, max_tokens: int) -> tuple[str, float]:
        import contextlib

        import torch

        from assets.finetune.evaluate import greedy_answers
        from assets.grounded_prompt import render_prompt

        prompt = render_prompt(messages, self.tokenizer)
        started = time.perf_counter()
        with (contextlib.nullcontext() if use_adapter else self.model.disable_adapter()):
            text = greedy_answers(self.model, self.tokenizer, [prompt], max_tokens, torch.device("cpu"))[0]
        return text, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="all", help="sample, mixed or all")
    parser.add_argument("--questions", default=str(QUESTIONS))
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--url", default=os.environ.get("DOCPLATFORM_VLLM_URL", "http://127.0.0.1:8000"),
                        help="vLLM server for the base model (and the adapter unless --adapter-url)")
    parser.add_argument("--base-model", default=None, help="served name of the base model (default: the server's base)")
    parser.add_argument("--adapter-url", default=None, help="server serving the adapter (default --url)")
    parser.add_argument("--adapter-model", default="docplatform", help="served name of the adapter")
    parser.add_argument("--no-llm", action="store_true", help="retrieval figures only")
    parser.add_argument("--adapter", default=None, help="LoRA adapter folder: base vs adapter answers by greedy "
                                                        "HF generation in this process when no server serves them")
    parser.add_argument("--base-model-path", default=None, help="HF folder of the adapter's base (default: the one "
                                                                "its manifest names, else the platform's base)")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--work-dir", default=None, help="where the sets are ingested (default $DOCPLATFORM_DATA_DIR/bench-ask)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)  # pymilvus' per-query client-side-timestamp warnings drown the report
    from assets.ask import ask
    from assets.ask.metrics import best_over_references, citation_precision, exact_match, recall_at_k, token_f1
    from assets.grounded_prompt import cited_numbers
    from resources.embedder import Embedder
    from resources.milvus import default_data_dir

    data = load_questions(Path(args.questions))
    sets = list(data["sets"]) if args.set == "all" else [args.set]
    unknown = [s for s in sets if s not in data["sets"]]
    if unknown:
        parser.error(f"unknown set(s) {unknown}; choose from {', '.join(data['sets'])} or all")
    root = Path(args.work_dir) if args.work_dir else default_data_dir() / "bench-ask"

    # which answerers: base (the server's base model) and the adapter, where served
    answerers: list[tuple[str, str, str | None]] = []  # (label, url, model)
    if not args.no_llm:
        served = server_models(args.url)
        if served:
            answerers.append(("base", args.url, args.base_model or next((m for m in served if m != args.adapter_model), served[0])))
            adapter_url = args.adapter_url or args.url
            adapter_served = served if adapter_url == args.url else server_models(adapter_url)
            if args.adapter_model in adapter_served:
                answerers.append(("adapter", adapter_url, args.adapter_model))
        elif args.adapter_url and args.adapter_model in server_models(args.adapter_url):
            answerers.append(("adapter", args.adapter_url, args.adapter_model))
    local = None
    if not args.no_llm and args.adapter and not any(label == "adapter" for label, _, _ in answerers):
        local = LocalAnswerer(args.adapter, args.base_model_path)
        answerers = [("base-hf", "local", local.base), ("adapter-hf", "local", local.adapter)]
        print(f"greedy HF generation in this process: base {local.base}, adapter {local.adapter}", file=sys.stderr)
    if not args.no_llm and not answerers:
        print(f"no vLLM server at {args.url}: retrieval figures only (start one: python -m resources.llm --port 8000 "
              "--max-model-len 2048 &, then --url http://127.0.0.1:8000)", file=sys.stderr)

    embedder = Embedder()
    rows = []
    for set_name in sets:
        resources = prepare_set(set_name, data["sets"][set_name], root)
        print(f"[{set_name}] ingested/checked in {resources['ingest_s']:.1f} s", file=sys.stderr)
        for question in [q for q in data["questions"] if q["set"] == set_name]:
            relevant = relevant_chunk_ids(question, resources["milvus"])
            kwargs = dict(top_k=args.top_k, milvus=resources["milvus"], embedder=embedder,
                          graph_store=resources["graph_store"], documents=resources["documents"])
            started = time.perf_counter()
            retrieved = ask(question["question"], use_llm=False, **kwargs)
            seconds = time.perf_counter() - started
            top = [s["chunk_id"] for s in retrieved.sources if s["origin"] == "retrieval"]
            context = [s["chunk_id"] for s in retrieved.sources]
            hit, total = path_hits(question.get("graph_paths", []), retrieved.graph_paths)
            row = {"id": question["id"], "set": set_name, "lang": question["lang"], "hops": question["hops"],
                   "question": question["question"], "recall_at_5": recall_at_k(top, relevant, 5),
                   "context_recall": recall_at_k(context, relevant, len(context)),
                   "graph_paths_found": hit, "graph_paths_gold": total, "retrieval_s": round(seconds, 3),
                   "retrieval_mode": retrieved.retrieval_mode, "answers": {}}
            for label, url, model in answerers:
                if local is not None:
                    text, seconds = local.answer(retrieved.messages, label == "adapter-hf", args.max_tokens)
                    by_number = {s["number"]: s for s in retrieved.sources}
                    cited = [by_number[n]["chunk_id"] for n in cited_numbers(text, len(retrieved.sources))]
                    row["answers"][label] = {
                        "model": model, "answer": text, "error": None, "generation": "hf-greedy",
                        "f1": best_over_references(token_f1, text, question["answers"]),
                        "em": best_over_references(exact_match, text, question["answers"]),
                        "cited": len(cited), "citation_accuracy": citation_accuracy(cited, relevant, context),
                        "citation_precision": citation_precision(cited, relevant),
                        "latency_s": round(seconds, 3), "llm_s": round(seconds, 3)}
                    continue
                started = time.perf_counter()
                answer = ask(question["question"], server_url=url, model=model, timeout_s=args.timeout,
                             max_tokens=args.max_tokens, **kwargs)
                seconds = time.perf_counter() - started
                text = answer.answer or ""
                row["answers"][label] = {
                    "model": answer.model, "answer": text, "error": answer.error,
                    "f1": best_over_references(token_f1, text, question["answers"]),
                    "em": best_over_references(exact_match, text, question["answers"]),
                    "cited": len(answer.citations), "generation": "vllm",
                    "citation_accuracy": citation_accuracy(answer.cited_chunk_ids, relevant, context),
                    "citation_precision": citation_precision(answer.cited_chunk_ids, relevant),
                    "latency_s": round(seconds, 3), "llm_s": answer.timings.get("llm_s")}
            rows.append(row)

    summary = summarize(rows, [a[0] for a in answerers])
    if args.json:
        print(json.dumps({"summary": summary, "questions": rows}, indent=2, ensure_ascii=False))
    else:
        print_report(rows, summary, [a[0] for a in answerers], answerers)
    return 0


def summarize(rows: list[dict], labels: list[str]) -> dict:
    groups = {"all": rows}
    for key in ("set", "lang", "hops"):
        for value in sorted({r[key] for r in rows}, key=str):
            groups[f"{key}={value}"] = [r for r in rows if r[key] == value]
    out = {}
    for name, group in groups.items():
        gold = sum(r["graph_paths_gold"] for r in group)
        entry = {"questions": len(group), "recall_at_5": round(mean([r["recall_at_5"] for r in group]), 3),
                 "context_recall": round(mean([r["context_recall"] for r in group]), 3),
                 "graph_path_hit_rate": round(sum(r["graph_paths_found"] for r in group) / gold, 3) if gold else None,
                 "retrieval_s_median": round(statistics.median([r["retrieval_s"] for r in group]), 3)}
        for label in labels:
            answers = [r["answers"][label] for r in group if label in r["answers"]]
            entry[label] = {"f1": round(mean([a["f1"] for a in answers]), 3), "em": round(mean([a["em"] for a in answers]), 3),
                            "cited_share": round(mean([float(a["cited"] > 0) for a in answers]), 3),
                            "citation_accuracy": round(mean([a["citation_accuracy"] for a in answers]), 3),
                            "citation_precision": round(mean([a["citation_precision"] for a in answers]), 3),
                            "latency_s_median": round(statistics.median([a["latency_s"] for a in answers]), 3)}
        out[name] = entry
    return out


def print_report(rows: list[dict], summary: dict, labels: list[str], answerers) -> None:
    for label, url, model in answerers:
        print(f"{label}: model {model!r} at {url}")
    print("per question:")
    for r in rows:
        line = (f"  {r['id']:6s} {r['lang']} {r['hops']}-hop  recall@5 {r['recall_at_5']:.2f}  context {r['context_recall']:.2f}  "
                f"paths {r['graph_paths_found']}/{r['graph_paths_gold']}  retrieval {r['retrieval_s']:.2f}s")
        for label in labels:
            a = r["answers"][label]
            line += (f"  | {label} F1 {a['f1']:.2f} EM {a['em']:.0f} cites {a['cited']} "
                     f"cit.acc {a['citation_accuracy']:.0f} {a['latency_s']:.1f}s")
        print(line)
    header = "| group | n | recall@5 | context recall | graph-path hits | retrieval s (median) |"
    sep = "| --- | --- | --- | --- | --- | --- |"
    for label in labels:
        header += f" {label} F1 | {label} EM | {label} cited | {label} citation acc. | {label} s (median) |"
        sep += " --- | --- | --- | --- | --- |"
    print(header)
    print(sep)
    for name, s in summary.items():
        hits = "-" if s["graph_path_hit_rate"] is None else f"{s['graph_path_hit_rate']:.2f}"
        line = (f"| {name} | {s['questions']} | {s['recall_at_5']:.2f} | {s['context_recall']:.2f} | {hits} | "
                f"{s['retrieval_s_median']:.2f} |")
        for label in labels:
            a = s[label]
            line += (f" {a['f1']:.2f} | {a['em']:.2f} | {a['cited_share']:.2f} | {a['citation_accuracy']:.2f} | "
                     f"{a['latency_s_median']:.1f} |")
        print(line)


if __name__ == "__main__":
    sys.exit(main())
