"""The SPARQL query process of resources/rdf_view.py, kept light (pyoxigraph and the standard library only) so a
worker killed for running past its time limit is replaced within a fraction of a second.

    python resources/sparql_worker.py     (run as a file: the resources package's imports are heavy)

reads JSON lines on stdin ({"op": "load", "digest", "data": N-Quads} or {"op": "query", "digest", "query",
"prefixes", "max_rows"}) and writes one JSON reply a line on stdout.
"""

from __future__ import annotations

import json
import sys
from collections import OrderedDict

XSD_STRING = "http://www.w3.org/2001/XMLSchema#string"
MAX_ROWS = 10_000


class SparqlError(ValueError):
    """A query refused or failed; status is the HTTP status an endpoint answers with, code a short reason."""
    status, code = 400, "invalid_query"


class SparqlSyntaxError(SparqlError):
    code = "sparql_syntax"


class SparqlReadOnly(SparqlError):
    status, code = 403, "read_only"


class SparqlTimeout(SparqlError):
    status, code = 408, "query_timeout"


def _term(term) -> dict:
    import pyoxigraph as ox

    if isinstance(term, ox.NamedNode):
        return {"type": "uri", "value": term.value}
    if isinstance(term, ox.BlankNode):
        return {"type": "bnode", "value": term.value}
    if isinstance(term, ox.Literal):
        out = {"type": "literal", "value": term.value}
        if term.language:
            out["xml:lang"] = term.language
        elif term.datatype is not None and term.datatype.value != XSD_STRING:
            out["datatype"] = term.datatype.value
        return out
    return {"type": "triple", "value": str(term)}


def run_query(store, query: str, prefixes: dict[str, str], max_rows: int = MAX_ROWS) -> dict:
    """A query on a pyoxigraph store, as SPARQL 1.1 JSON results (SELECT, ASK) or a triple list (CONSTRUCT,
    DESCRIBE); rows past max_rows dropped and `truncated` set."""
    import pyoxigraph as ox

    try:
        result = store.query(query, prefixes=prefixes, use_default_graph_as_union=True)
    except SyntaxError as exc:
        message = " ".join(str(exc).split())
        raise SparqlSyntaxError(f"malformed SPARQL: {message[:400]}") from None
    if isinstance(result, ox.QueryBoolean):
        return {"head": {}, "boolean": bool(result)}
    if isinstance(result, ox.QuerySolutions):
        names = [v.value for v in result.variables]
        rows, truncated = [], False
        for solution in result:
            if len(rows) >= max_rows:
                truncated = True
                break
            rows.append({n: _term(solution[n]) for n in names if solution[n] is not None})
        return {"head": {"vars": names}, "results": {"bindings": rows}, "truncated": truncated}
    triples, truncated = [], False
    for triple in result:
        if len(triples) >= max_rows:
            truncated = True
            break
        triples.append({"subject": _term(triple.subject), "predicate": _term(triple.predicate),
                        "object": _term(triple.object)})
    return {"triples": triples, "truncated": truncated}


def serve_worker() -> None:
    """The query process (JSON lines on stdin/stdout): a few loaded views (by digest), one query at a time; its
    parent kills it when a query runs too long."""
    import os

    import pyoxigraph as ox

    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    sys.stdout = sys.stderr  # nothing but replies on the channel
    stores: OrderedDict[str, object] = OrderedDict()
    for line in sys.stdin:
        message = json.loads(line)
        try:
            if message["op"] == "load":
                store = ox.Store()
                store.bulk_load(message["data"].encode("utf-8"), format=ox.RdfFormat.N_QUADS)
                stores[message["digest"]] = store
                while len(stores) > 8:
                    stores.popitem(last=False)
                reply = {"ok": True}
            else:
                stores.move_to_end(message["digest"])
                reply = {"ok": True, "result": run_query(stores[message["digest"]], message["query"],
                                                         message["prefixes"], message["max_rows"])}
        except SparqlError as exc:
            reply = {"ok": False, "kind": type(exc).__name__, "message": str(exc)}
        except Exception as exc:  # noqa: BLE001  (an evaluation error: the caller gets its text)
            reply = {"ok": False, "kind": "SparqlError", "message": f"query failed: {type(exc).__name__}: {str(exc)[:400]}"}
        channel.write(json.dumps(reply, ensure_ascii=False) + "\n")
        channel.flush()


if __name__ == "__main__":
    serve_worker()
