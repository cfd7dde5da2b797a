"""Retrieval quality per language and embedder: recall@5 / MRR of dense and hybrid search, and encoding speed.

    python -m bench.search [--lang en|ko|all] [--embedders minilm,multilingual-e5] [--modes dense,hybrid,bm25]
                           [--documents sample_corpus] [--speed-chunks 256] [--json]

For each embedder the whole corpus (English and Korean documents together: a mixed corpus) is parsed, chunked to
that embedder's token window and indexed into a temporary milvus-lite file through the ingestion code
(index_documents: passage-side vectors, BM25 over Korean morphemes); then each labeled query set is searched with
query-side vectors. Query sets: en = assets/retrieval_queries.json, ko = assets/retrieval_queries_ko.json.
Speed: chunks/s of encode_passages on the same chunk texts (the MiniLM-window chunks of the corpus, repeated to
--speed-chunks), English and Korean separately, after a warm-up. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from assets import _offline  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
QUERY_SETS = {"en": ROOT / "assets" / "retrieval_queries.json", "ko": ROOT / "assets" / "retrieval_queries_ko.json"}
_HANGUL = re.compile(r"[\uac00-\ud7a3]")


def parse_corpus(folder: Path) -> dict[str, dict]:
    """{doc_id: {"sha256", "elements"}} for every supported document under folder (in this process)."""
    from assets.parsing import parse_records, suffix_of
    from resources.documents import DocumentSource

    out = {}
    for key, info in sorted(DocumentSource(root=str(folder)).scan().items()):
        data = (folder / key).read_bytes()
        out[key] = {"sha256": getattr(info, "sha256", "") or str(len(data)), "elements": parse_records(key, suffix_of(key), data)}
    return out


def chunk_corpus(parsed: dict[str, dict], embedder) -> dict[str, list[dict]]:
    from assets.chunking import ChunkingConfig, chunk_elements

    return {key: chunk_elements(key, doc["sha256"], doc["elements"], ChunkingConfig(), embedder)
            for key, doc in parsed.items()}


def evaluate_embedder(model, parsed: dict[str, dict], langs: list[str], modes: list[str], workdir: Path,
                      name: str = "") -> dict:
    """model: a model name or a configured Embedder (bench/embedder.py compares e5 engines); name labels its files."""
    from assets.parsing import suffix_of
    from assets.vector_index import index_documents, stage_fingerprint
    from assets.retrieval_quality import evaluate, load_queries
    from resources.embedder import Embedder
    from resources.milvus import MilvusStore

    embedder = Embedder(model=model) if isinstance(model, str) else model
    name = name or embedder.resolved_model
    docs = chunk_corpus(parsed, embedder)
    milvus = MilvusStore(uri=str(workdir / f"{name}.db"), collection="bench_" + re.sub(r"\W", "_", name),
                         state_path=str(workdir / f"{name}.state.sqlite"))
    started = time.perf_counter()
    index_documents(milvus, embedder, docs, stage_fingerprint("bench", embedder), {k: suffix_of(k) for k in docs})
    index_s = time.perf_counter() - started
    results = {"embedder": embedder.identity, "chunks": sum(len(v) for v in docs.values()), "index_s": round(index_s, 2),
               "scores": {}}
    with milvus.client() as client:
        def searcher(mode):
            def search(text, k):
                if mode == "bm25":
                    return milvus.bm25_search(client, text, limit=k)
                vector = embedder.encode_queries([text])[0].tolist()
                if mode == "dense":
                    return milvus.search(client, vector, limit=k)
                return milvus.hybrid_search(client, text, vector, limit=k)
            return search

        def answerable(doc_id, phrase):
            return milvus.contains_text(client, doc_id, phrase)

        for lang in langs:
            queries = load_queries(QUERY_SETS[lang])
            for mode in modes:
                score = evaluate(queries, searcher(mode), set(docs), k=5, answerable=answerable)
                score["total_queries"] = len(queries)
                results["scores"][f"{lang}/{mode}"] = score
    return results


def speed(models: list[str], parsed: dict[str, dict], count: int) -> dict:
    """chunks/s of encode_passages per embedder on identical texts (MiniLM-window chunks), English and Korean."""
    from resources.embedder import Embedder

    texts = [r["text"] for rows in chunk_corpus(parsed, Embedder(model="minilm")).values() for r in rows]
    sets = {"en": [t for t in texts if not _HANGUL.search(t)], "ko": [t for t in texts if _HANGUL.search(t)]}
    out = {}
    for model in models:
        embedder = Embedder(model=model)
        embedder.encode_passages(texts[:8])  # load and warm up
        for lang, sample in sets.items():
            if not sample:
                continue
            batch = (sample * (count // len(sample) + 1))[:count]
            started = time.perf_counter()
            embedder.encode_passages(batch)
            elapsed = time.perf_counter() - started
            out[f"{model}/{lang}"] = {"chunks": len(batch), "seconds": round(elapsed, 2),
                                      "chunks_per_s": round(len(batch) / elapsed, 1),
                                      "mean_chars": round(sum(map(len, batch)) / len(batch))}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lang", choices=["en", "ko", "all"], default="all")
    parser.add_argument("--embedders", default="minilm,multilingual-e5")
    parser.add_argument("--modes", default="dense,hybrid")
    parser.add_argument("--documents", default=str(ROOT / "sample_corpus"))
    parser.add_argument("--speed-chunks", type=int, default=256, help="texts per speed measurement; 0 = skip")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    langs = ["en", "ko"] if args.lang == "all" else [args.lang]
    models = [m.strip() for m in args.embedders.split(",") if m.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    parsed = parse_corpus(Path(args.documents))
    report = {"documents": len(parsed), "embedders": {}, "speed": {}}
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        for model in models:
            report["embedders"][model] = evaluate_embedder(model, parsed, langs, modes, Path(tmp))
    if args.speed_chunks:
        report["speed"] = speed(models, parsed, args.speed_chunks)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    print(f"{report['documents']} documents from {args.documents}")
    print(f"{'lang':4} {'embedder':16} {'mode':7} {'queries':>7} {'recall@5':>9} {'MRR':>6}  misses")
    for model, result in report["embedders"].items():
        for key, score in result["scores"].items():
            lang, mode = key.split("/")
            recall = f"{score['recall_at_k']:.3f}" if score["recall_at_k"] is not None else "-"
            mrr = f"{score['mrr']:.3f}" if score["mrr"] is not None else "-"
            print(f"{lang:4} {model:16} {mode:7} {score['queries']:>3}/{score['total_queries']:<3} {recall:>9} {mrr:>6}  "
                  f"{'; '.join(score['misses'])[:200]}")
    for model, result in report["embedders"].items():
        print(f"{model}: {result['chunks']} chunks, indexed in {result['index_s']} s ({result['embedder']})")
    for key, figure in report["speed"].items():
        print(f"speed {key}: {figure['chunks_per_s']} chunks/s ({figure['chunks']} chunks of {figure['mean_chars']} "
              f"chars in {figure['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
