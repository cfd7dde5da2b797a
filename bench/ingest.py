"""Ingestion benchmark: end-to-end chunks/s vs the raw encoder, and a no-change re-run vs the full run.

    python -m bench.ingest [--docs 40] [--paragraphs 12]

Builds a synthetic markdown corpus in a temporary folder, runs ingest_job for every document partition
in-process (real unstructured, MiniLM, milvus-lite, a temporary Dagster instance), then encodes the
very same chunk texts with the bare encoder, then re-runs every partition with nothing changed.
"""

import argparse
import random
import tempfile
import time
from pathlib import Path

from assets import _offline  # noqa: F401

WORDS = ("server application database team platform deploy backup incident network policy cluster "
         "service latency release owner storage access audit runbook monitoring capacity").split()


def build_corpus(folder: Path, docs: int, paragraphs: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    for d in range(docs):
        lines = [f"# Document {d}"]
        for p in range(paragraphs):
            if p % 4 == 0:
                lines.append(f"## Section {p // 4}")
            lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 90))).capitalize() + ".")
        (folder / f"doc-{d:04d}.md").write_text("\n\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=40)
    parser.add_argument("--paragraphs", type=int, default=12)
    args = parser.parse_args(argv)

    from dagster import instance_for_test

    from pipelines.partitions import DOCUMENTS_PARTITIONS_NAME
    from pipelines.definitions import build_defs
    from resources import DocumentSource, Embedder, MilvusStore

    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "docs").mkdir()
        build_corpus(tmp / "docs", args.docs, args.paragraphs)
        embedder = Embedder()
        embedder.encode(["warm-up"])  # model load is not part of either rate
        from resources.graph_store import GraphStore

        defs = build_defs(documents=DocumentSource(root=str(tmp / "docs")), milvus=MilvusStore(uri=str(tmp / "m.db")),
                          embedder=embedder, graph_store=GraphStore(path=str(tmp / "graph.lbug")))
        job = defs.resolve_job_def("ingest_job")
        keys = sorted(DocumentSource(root=str(tmp / "docs")).scan())
        (tmp / "dagster").mkdir()
        with instance_for_test(temp_dir=str(tmp / "dagster")) as instance:
            instance.add_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME, keys)

            def run_all():
                start, texts, embedded = time.perf_counter(), [], 0
                for key in keys:
                    result = job.execute_in_process(partition_key=key, instance=instance, run_config=quiet)
                    texts += [c["text"] for c in result.output_for_node("document_chunks")]
                    embedded += result.output_for_node("chunk_vectors")["embedded"]
                return time.perf_counter() - start, texts, embedded

            full_s, texts, embedded_full = run_all()
            start = time.perf_counter()
            embedder.encode(texts)
            encoder_s = time.perf_counter() - start
            rerun_s, _, embedded_rerun = run_all()

    n = len(texts)
    e2e_rate, enc_rate = n / full_s, n / encoder_s
    print(f"corpus: {len(keys)} documents, {n} chunks")
    print(f"full run:       {full_s:8.2f} s  {e2e_rate:8.1f} chunks/s end to end ({embedded_full} embedded)")
    print(f"raw encoder:    {encoder_s:8.2f} s  {enc_rate:8.1f} chunks/s on the same chunks")
    print(f"no-change rerun:{rerun_s:8.2f} s  ({embedded_rerun} re-embedded)")
    print(f"ratio end-to-end / raw encoder chunks/s: {e2e_rate / enc_rate:.3f}")
    print(f"ratio no-change rerun / full run time:   {rerun_s / full_s:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
