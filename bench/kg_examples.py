"""The examples layer alone on Text2KGBench: trained on each ontology's train split (as examples.jsonl), reading its
test sentences, scored with the set's own normalizer and micro P/R/F1.

    python -m bench.kg_examples [--data ../shared/text2kg_dev] [--only 5_athlete ...] [--markdown FILE]

Where the main job's figure (`python ../shared/text2kg_dev/score.py`) mixes every layer, entity resolution and the
graph store, this one isolates what the examples layer learns (assets/knowledge_graph/examples.py), in one process,
so a change to it is measured in minutes. It also prints training and prediction seconds and the threshold the
cross-validation chose.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

from bench.kg_text2kg import load_scorer, write_ontology_folder

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "text2kg_dev"


def evaluate(source: Path, score) -> dict:
    from assets.knowledge_graph.examples import extract_with_examples, model_for
    from assets.knowledge_graph.mentions import parse_english
    from resources.ontology_loading import load_ontology

    ontology = load_ontology(write_ontology_folder(
        source, Path(tempfile.mkdtemp(prefix=f"kg-examples-{source.name}-")), score))
    started = time.perf_counter()
    model = model_for(ontology)
    trained = time.perf_counter() - started
    rows, gold = score.gold(source)
    started = time.perf_counter()
    found = set()
    for doc in parse_english([row["sent"] for row in rows]):
        relations, attributes = extract_with_examples(model, doc, "c")
        for r in relations:
            found.add((score.norm(r["source"]), score.rel_norm(ontology.relations[r["type"]].local_name),
                       score.norm(r["target"])))
        for a in attributes:
            found.add((score.norm(a["entity"]), score.rel_norm(ontology.attributes[a["property"]].local_name),
                       score.norm(a["value"])))
    predicted = time.perf_counter() - started
    precision, recall, f1 = score.prf(found, gold)
    return {"ontology": source.name, "precision": precision, "recall": recall, "f1": f1, "found": len(found),
            "gold": len(gold), "train_s": round(trained, 1), "predict_s": round(predicted, 1),
            "sentences": len(rows), "calibration": model.calibration.as_metadata()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kg_examples", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--only", action="append", help="ontology folder name (repeatable)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the block kg-examples-layer of FILE")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    score = load_scorer(args.data)
    folders = sorted(p for p in (args.data / "ontologies").iterdir() if (p / "train.jsonl").is_file())
    results = [evaluate(folder, score) for folder in folders if not args.only or folder.name in args.only]
    for result in results:
        print(json.dumps(result), flush=True)
    mean = round(sum(r["f1"] for r in results) / len(results), 3) if results else 0.0
    print(json.dumps({"mean_f1": mean}))
    if args.markdown:
        from bench.report import command_line, markdown_table, write_block

        table = markdown_table(["ontology", "P", "R", "F1", "found / gold", "CV threshold", "train s", "predict s"],
                               [[r["ontology"], r["precision"], r["recall"], r["f1"], f"{r['found']} / {r['gold']}",
                                 r["calibration"]["threshold"], r["train_s"], r["predict_s"]] for r in results])
        write_block(args.markdown, "kg-examples-layer", f"{table}\n\nMean F1 {mean}.", command=command_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
