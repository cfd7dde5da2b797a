"""Published ontologies (Text2KGBench, DBpedia-WebNLG) scored by the set's own scorer, next to the paper's 13B models.

    python -m bench.kg_text2kg [--data ../shared/text2kg_dev] [--no-examples] [--only 5_athlete]
                               [--main-job] [--markdown docs/benchmarks.md]

For each ontology: the ontology.ttl as published (and, unless --no-examples, its train split as examples.jsonl)
in a throw-away ontology folder, the test sentences as one .txt document, one sentence a paragraph. By default
the document goes through partition -> chunk -> extract_facts in this process (about a minute for five
ontologies); --main-job runs `python -m pipelines.run_main` per ontology instead, through the set's own
score.py (about 35 minutes). Either way the triples are normalised and compared by score.py's own functions,
so the figures are the set's, not ours. Always exits 0: it reports figures, it does not gate.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "text2kg_dev"


def load_scorer(data: Path):
    """The set's own score.py (its normalizer and P/R/F1), imported from the data folder, not rewritten here."""
    spec = importlib.util.spec_from_file_location("text2kg_score", data / "score.py")
    if spec is None or not (data / "score.py").is_file():
        raise SystemExit(f"no Text2KGBench set at {data} (score.py missing): pass --data")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_ontology_folder(source: Path, target: Path, scorer, examples: bool = True) -> Path:
    """The folder a user would hand over, as score.py builds it: the published ontology.ttl untouched and, with
    examples, the train split as examples.jsonl (names with spaces, the property's local name)."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "ontology.ttl", target / "ontology.ttl")
    if examples and (source / "train.jsonl").exists():
        with open(target / "examples.jsonl", "w", encoding="utf-8") as out:
            for row in scorer.jsonl(source / "train.jsonl"):
                triples = [[t["sub"].replace("_", " "), t["rel"], t["obj"].replace("_", " ")] for t in row["triples"]]
                out.write(json.dumps({"text": row["sent"], "triples": triples}, ensure_ascii=False) + "\n")
    return target


def extracted_in_process(onto: Path, rows: list[dict], scorer, examples: bool) -> tuple[set, int]:
    """(normalised triples, chunk count) of the test sentences through the pipeline's extraction path."""
    from bench.kg import extract_document
    from resources.ontology_loading import load_ontology

    tmp = Path(tempfile.mkdtemp(prefix=f"t2k-{onto.name}-"))
    try:
        ontology = load_ontology(str(write_ontology_folder(onto, tmp / "ontology", scorer, examples)))
        document = tmp / "sentences.txt"
        document.write_text("\n\n".join(r["sent"] for r in rows) + "\n", encoding="utf-8")
        result = extract_document(document, ontology)
        if result["error"]:
            print(f"{onto.name}: {result['error']}", file=sys.stderr)
        facts = result["facts"]
        names = {e["id"]: e.get("name", e["id"]) for e in facts.get("entities", [])}
        triples = [(names.get(r["source"], r["source"]), r["type"], names.get(r["target"], r["target"]))
                   for r in facts.get("relations", [])]
        triples += [(names.get(a["entity"], a["entity"]), a["property"], a["value"]) for a in facts.get("attributes", [])]
        return {(scorer.norm(s), scorer.rel_norm(p), scorer.norm(o)) for s, p, o in triples}, len(result["chunks"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def evaluate(data: Path, examples: bool, only: list[str] | None, main_job: bool) -> list[dict]:
    scorer = load_scorer(data)
    results = []
    for onto in sorted(p for p in (data / "ontologies").iterdir() if p.is_dir()):
        if only and onto.name not in only:
            continue
        rows, want = scorer.gold(onto)
        started = time.perf_counter()
        if main_job:
            got, _ = scorer.project(onto, rows, examples)
            chunks = None
        else:
            got, chunks = extracted_in_process(onto, rows, scorer, examples)
        p, r, f = scorer.prf(got, want)
        results.append({"ontology": onto.name, "gold": len(want), "extracted": len(got), "p": p, "r": r, "f1": f,
                        "vicuna13b_f1": scorer.prf(scorer.baseline(onto, "vicuna13b_responses.jsonl"), want)[2],
                        "alpacalora13b_f1": scorer.prf(scorer.baseline(onto, "alpacalora13b_responses.jsonl"), want)[2],
                        "chunks": chunks, "seconds": round(time.perf_counter() - started, 1)})
    return results


def mean(results: list[dict], key: str) -> float:
    return round(sum(r[key] for r in results) / max(len(results), 1), 3)


def markdown_report(results: list[dict], examples: bool, main_job: bool) -> str:
    from bench.report import markdown_table

    rows = [[r["ontology"], r["gold"], r["extracted"], r["p"], r["r"], r["f1"], r["vicuna13b_f1"], r["alpacalora13b_f1"]]
            for r in results]
    rows.append(["**mean**", "", "", "", "", f"**{mean(results, 'f1'):.3f}**", mean(results, "vicuna13b_f1"),
                 mean(results, "alpacalora13b_f1")])
    target = 0.45 if examples else 0.25
    reached = "reached" if mean(results, "f1") >= target else "not reached"
    how = "the main job (`pipelines.run_main`) per ontology" if main_job else "the pipeline's extraction path in one process"
    given = "each ontology's train split as `examples.jsonl` (the examples layer on)" if examples else \
        "no examples (zero-shot, default CPU layers)"
    return (markdown_table(["ontology", "gold triples", "extracted", "P", "R", "F1", "Vicuna-13B F1",
                            "Alpaca-LoRA-13B F1"], rows)
            + f"\n\nWith {given}, through {how}; target {target} {reached}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kg_text2kg", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the Text2KGBench folder (with score.py)")
    parser.add_argument("--no-examples", action="store_true", help="hand over the ontology alone (zero-shot)")
    parser.add_argument("--only", action="append", help="one ontology folder name (repeatable)")
    parser.add_argument("--main-job", action="store_true", help="run pipelines.run_main per ontology (score.py's way)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the table as a block of FILE")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    if not (args.data / "score.py").exists():
        print(f"{args.data}: no Text2KGBench folder here (score.py missing)")
        return 0
    results = evaluate(args.data, not args.no_examples, args.only, args.main_job)
    for r in results:
        print(json.dumps(r), flush=True)
    print(f"f1_mean={mean(results, 'f1')} vicuna13b_f1_mean={mean(results, 'vicuna13b_f1')} "
          f"alpacalora13b_f1_mean={mean(results, 'alpacalora13b_f1')} ontologies={len(results)}")
    if args.markdown and not args.only:
        from bench.report import command_line, write_block

        name = "kg-text2kg" + ("-zero-shot" if args.no_examples else "")
        write_block(args.markdown, name, markdown_report(results, not args.no_examples, args.main_job),
                    command=command_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
