"""SPARQL engines for the graph's RDF view, side by side: pyoxigraph vs rdflib on the same N-Quads, same queries.

    python -m bench.sparql [--apps 300] [--repeat 3] [--markdown docs/benchmarks.md]

A synthetic infrastructure graph (applications in dependency chains, databases, servers, teams; 1 chunk a fact,
documents under ops/ and finance/) is written through the real graph store (ladybug), read back as the view
(resources/rdf_view.py: asserted + inferred + ontology graphs), then loaded into each engine and queried: a
transitive-dependency lookup, a property path, a subclass count and a provenance join. Both engines get their
best settings: pyoxigraph's bulk_load, rdflib's Dataset with default_union (no per-query union copy) and the
prefixes bound once. Times are the minimum of --repeat runs; ratios are rdflib / pyoxigraph in this process.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

QUERIES = {
    "transitive lookup": "SELECT ?x WHERE { ?a kg:name 'app-0000' ; infra:DEPENDS_ON ?x }",
    "property path +": "SELECT ?x WHERE { GRAPH <urn:docplatform:graph:asserted> { ?a kg:name 'app-0000' . "
                       "?a infra:DEPENDS_ON+ ?x } }",
    "subclass count": "SELECT ?c (COUNT(?s) AS ?n) WHERE { ?s a ?c . ?c rdfs:subClassOf* infra:Software } GROUP BY ?c",
    "provenance join": "SELECT ?x ?chunk WHERE { ?f rdf:subject ?a ; rdf:predicate infra:MANAGED_BY ; rdf:object ?t ; "
                       "kg:mentionedIn ?chunk . ?t kg:name 'team-00' . ?a kg:name ?x }",
}


def synthetic_graph(root: Path, apps: int, seed: int = 7):
    """A GraphStore holding apps applications in chains of 5 DEPENDS_ON hops, each on a server, with a database
    and a managing team; every fifth document under finance/."""
    from resources.graph_store import GraphStore

    rng = random.Random(seed)
    store = GraphStore(path=str(root / "graph.lbug"))
    with store.session() as backend:
        for doc in range(apps // 5):
            prefix = "finance" if doc % 5 == 4 else "ops"
            doc_id, entities, relations = f"{prefix}/doc-{doc:04d}.md", {}, []

            def entity(name: str, label: str, chunk: str) -> str:
                ident = f"{label.lower()}:{name}"
                entities.setdefault(ident, {"id": ident, "label": label, "name": name, "aliases": [], "chunk_ids": []})
                if chunk not in entities[ident]["chunk_ids"]:
                    entities[ident]["chunk_ids"].append(chunk)
                return ident

            def fact(source, rel, target, chunk):
                relations.append({"source": source, "type": rel, "target": target, "chunk_id": chunk, "sentence": ""})

            chain = [f"app-{doc * 5 + i:04d}" for i in range(5)]
            for i, app in enumerate(chain):
                chunk = f"{doc_id}#{i}"
                a = entity(app, "Application", chunk)
                if i + 1 < len(chain):
                    fact(a, "DEPENDS_ON", entity(chain[i + 1], "Application", chunk), chunk)
                fact(a, "RUNS_ON", entity(f"srv-{rng.randrange(apps // 10 + 1):03d}", "Server", chunk), chunk)
                db = entity(f"db-{rng.randrange(apps // 3 + 1):03d}-db", "Database", chunk)
                fact(a, "DEPENDS_ON", db, chunk)
                fact(db, "MANAGED_BY", entity(f"team-{rng.randrange(8):02d}", "Team", chunk), chunk)
            for entity_row in entities.values():
                entity_row["chunk_ids"].sort()
            backend.replace_document(doc_id, {"entities": list(entities.values()), "relations": relations,
                                              "attributes": []})
    return store


def best(seconds: list[float]) -> float:
    return min(seconds)


def run(apps: int, repeat: int) -> tuple[list[list], dict]:
    import pyoxigraph as ox
    from rdflib import Dataset

    from resources.rdf_view import query_prefixes, read_snapshot, view_nquads

    with tempfile.TemporaryDirectory() as tmp:
        store = synthetic_graph(Path(tmp), apps)
        started = time.perf_counter()
        with store.session() as backend:
            snapshot, ontology = read_snapshot(backend), backend.ontology
        read_s = time.perf_counter() - started
        started = time.perf_counter()
        nquads = view_nquads(snapshot, ontology)
        build_s = time.perf_counter() - started
    prefixes = query_prefixes(ontology)
    quads = nquads.count("\n")

    ox_load, rdf_load = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        oxs = ox.Store()
        oxs.bulk_load(nquads.encode("utf-8"), format=ox.RdfFormat.N_QUADS)
        ox_load.append(time.perf_counter() - started)
        started = time.perf_counter()
        ds = Dataset(default_union=True)
        ds.parse(data=nquads, format="nquads")
        rdf_load.append(time.perf_counter() - started)
    for name, ns in prefixes.items():
        ds.bind(name, ns, override=True)

    rows = [["load the view", f"{best(ox_load) * 1000:.1f}", f"{best(rdf_load) * 1000:.1f}",
             f"{best(rdf_load) / best(ox_load):.1f}x", ""]]
    for label, query in QUERIES.items():
        ox_times, rdf_times, counts = [], [], []
        for _ in range(repeat):
            started = time.perf_counter()
            ox_rows = list(oxs.query(query, prefixes=prefixes, use_default_graph_as_union=True))
            ox_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            rdf_rows = list(ds.query(query, initNs=prefixes))
            rdf_times.append(time.perf_counter() - started)
            counts = [len(ox_rows), len(rdf_rows)]
        rows.append([label, f"{best(ox_times) * 1000:.1f}", f"{best(rdf_times) * 1000:.1f}",
                     f"{best(rdf_times) / best(ox_times):.1f}x", f"{counts[0]} / {counts[1]}"])
    info = {"apps": apps, "quads": quads, "entities": len(snapshot.entities), "edges": len(snapshot.edges),
            "read_ms": round(read_s * 1000, 1), "build_ms": round(build_s * 1000, 1)}
    return rows, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sparql", description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=300, help="applications in the synthetic graph (default 300)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--markdown", default=None, help="write the table into this file's bench:sparql block")
    args = parser.parse_args(argv)
    from bench.report import markdown_table, write_block

    rows, info = run(args.apps, args.repeat)
    headers = ["step", "pyoxigraph ms", "rdflib ms", "rdflib / pyoxigraph", "rows (ox / rdflib)"]
    table = markdown_table(headers, rows)
    summary = (f"View of {info['entities']} entities and {info['edges']} fact edges: {info['quads']} quads "
               f"(graph read {info['read_ms']} ms, view built {info['build_ms']} ms, the same for both engines).")
    print(summary)
    print(table)
    if args.markdown:
        write_block(args.markdown, "sparql", summary + "\n\n" + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
