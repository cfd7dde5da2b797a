"""Query the knowledge graph with SPARQL (read-only, time-limited): the RDF view of resources/rdf_view.py.

    python -m pipelines.sparql "SELECT ?app WHERE { ?app infra:DEPENDS_ON entity:database%3Abilling-db }"
    python -m pipelines.sparql --prefix ops/ --timeout 5 --json "ASK { ?s a infra:Server }"

Prefixes infra:, kg:, entity:, chunk:, rdf:, rdfs:, owl:, xsd: (and the ontology files' own) need no PREFIX line.
The default graph is asserted + inferred facts + the ontology; see docs/knowledge-graph.md for the vocabulary.
Prints a table (SELECT), true/false (ASK) or N-Triples-like lines (CONSTRUCT, DESCRIBE); --json prints SPARQL 1.1
JSON results. A malformed query, an update or a query past --timeout exits 2 with the reason.
"""

from __future__ import annotations

import argparse
import json
import sys


def term_text(term: dict) -> str:
    if term["type"] == "uri":
        return f"<{term['value']}>"
    if term["type"] == "literal":
        return json.dumps(term["value"], ensure_ascii=False) + (f"@{term['xml:lang']}" if "xml:lang" in term else "")
    return f"_:{term['value']}" if term["type"] == "bnode" else term["value"]


def format_result(result: dict) -> str:
    """A result as text: tab-separated rows under a header, a boolean, or one triple a line."""
    if "boolean" in result:
        return "true" if result["boolean"] else "false"
    if "triples" in result:
        lines = [" ".join(term_text(t[k]) for k in ("subject", "predicate", "object")) + " ." for t in result["triples"]]
    else:
        names = result["head"]["vars"]
        lines = ["\t".join(f"?{n}" for n in names)]
        lines += ["\t".join(term_text(row[n]) if n in row else "" for n in names) for row in result["results"]["bindings"]]
    if result.get("truncated"):
        lines.append("(truncated: more results than the row limit)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("query", help="a SPARQL 1.1 SELECT, ASK, CONSTRUCT or DESCRIBE query")
    parser.add_argument("--prefix", action="append", default=[], help="only facts from documents under this key prefix")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds the query may run (default 10)")
    parser.add_argument("--json", action="store_true", help="print SPARQL 1.1 JSON results")
    args = parser.parse_args(argv)

    from resources.rdf_view import RdfView, SparqlError, SparqlRunner

    view = RdfView(runner=SparqlRunner(timeout_s=args.timeout))
    try:
        result = view.query(args.query, tuple(args.prefix))
    except SparqlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        view.close()
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
