"""An RDF view of the knowledge graph for SPARQL (pyoxigraph), rebuilt whenever the graph changes, per caller.

Why: every ontology here is OWL, and SPARQL is how the OWL/RDF world asks questions ("which software depends,
directly or indirectly, on billing-db, and which chunks say so?"). The graph store (ladybug or Neo4j) stays the
one place facts are written; this view is derived from it on demand:

    read_snapshot(backend)      the graph's facts with their chunk provenance, and a digest of them
    snapshot.visible(prefixes)  only what documents under the prefixes state (an API key's view)
    view_nquads(snapshot, ont)  the facts as N-Quads in four named graphs:
        <urn:docplatform:graph:asserted>   entity types, kg:name, kg:alias, relations, attributes, chunks, and one
                                           rdf:Statement per fact with kg:mentionedIn <chunk> (its provenance)
        <urn:docplatform:graph:inferred>   what the ontology's axioms add (resources.graph_semantics): super-class
                                           types, inverse, symmetric, super-property and transitive facts, each
                                           with a statement naming kg:rule, kg:derivedFrom and kg:mentionedIn
        <urn:docplatform:graph:ontology>   the ontology's own triples (rdfs:subClassOf* paths work in queries)
    SparqlRunner.query(...)     runs a read-only query in a worker process with a time limit

The query's default graph is the union of the four, so `?a infra:DEPENDS_ON ?b` answers with indirect
dependencies; `GRAPH <urn:docplatform:graph:asserted> { ... }` asks for stated facts only. IRIs are the ontology's
(classes, relations, datatype properties) and the platform's (urn:docplatform:entity:ID, urn:docplatform:chunk:ID).
The access filter is applied before inference: a caller never sees a fact, asserted or inferred, that rests on a
document outside its prefixes. pyoxigraph rather than rdflib: bench/sparql.py measures both on the same view.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from rdflib import RDF, RDFS, XSD, Literal, URIRef

from resources.graph_semantics import Edge, infer_edges
from resources.ontology import CHUNK_NS, KG, Ontology, entity_uri
from resources.sparql_worker import MAX_ROWS, SparqlError, SparqlReadOnly, SparqlSyntaxError, SparqlTimeout

GRAPH_ASSERTED = "urn:docplatform:graph:asserted"
GRAPH_INFERRED = "urn:docplatform:graph:inferred"
GRAPH_ONTOLOGY = "urn:docplatform:graph:ontology"
FACT_NS = "urn:docplatform:fact:"
DEFAULT_TIMEOUT_S = 10.0
MAX_QUERY_CHARS = 20_000
_UPDATE_WORDS = ("INSERT", "DELETE", "LOAD", "CLEAR", "CREATE", "DROP", "COPY", "MOVE", "ADD", "WITH")
_STRINGS = re.compile(r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|<[^<>"{}|^`\\\s]*>')
_COMMENT = re.compile(r"#[^\n]*")


def chunk_uri(chunk_id: str) -> URIRef:
    return URIRef(CHUNK_NS + quote(str(chunk_id), safe=""))


# ---------------------------------------------------------------------------------------------- the graph's facts

@dataclass
class Snapshot:
    """The graph's facts as plain rows (what the view is made from); digest changes whenever any of them does."""
    entities: list[dict]  # {id, label, name}
    mentions: list[dict]  # {entity, chunk, doc_id, aliases}
    edges: list[dict]  # {source, type, target, chunk_id, doc_id}
    attributes: list[dict]  # {entity, property, value, chunk_id, doc_id}
    chunks: list[dict]  # {id, doc_id, seq}
    digest: str = ""

    def visible(self, prefixes: tuple[str, ...] | list[str] | None) -> "Snapshot":
        """Only what documents under prefixes state (all of it when prefixes is empty): an entity stays if one of
        those documents mentions it, with the aliases they use; a fact stays with its chunks from them."""
        if not prefixes:
            return self
        prefixes = tuple(prefixes)
        allowed = lambda doc_id: any(str(doc_id).startswith(p) for p in prefixes)  # noqa: E731
        mentions = [m for m in self.mentions if allowed(m["doc_id"])]
        ids = {m["entity"] for m in mentions}
        view = Snapshot(entities=[e for e in self.entities if e["id"] in ids], mentions=mentions,
                        edges=[e for e in self.edges if allowed(e["doc_id"]) and e["source"] in ids and e["target"] in ids],
                        attributes=[a for a in self.attributes if allowed(a["doc_id"]) and a["entity"] in ids],
                        chunks=[c for c in self.chunks if allowed(c["doc_id"])])
        view.digest = hashlib.sha256((self.digest + "\0" + "\0".join(sorted(prefixes))).encode()).hexdigest()
        return view


def read_snapshot(backend) -> Snapshot:
    """Every entity, mention, fact edge, attribute and chunk of the graph (one read per kind and relation type)."""
    entities = backend._read("MATCH (e:Entity) RETURN e.id AS id, e.label AS label, e.name AS name")
    mentions = backend._read("MATCH (e:Entity)-[m:MENTIONED_IN]->(k:Chunk) RETURN e.id AS entity, k.id AS chunk, "
                             "k.doc_id AS doc_id, m.aliases AS aliases")
    edges = [{"source": r["source"], "type": r["type"], "target": r["target"], "chunk_id": r["chunk_id"],
              "doc_id": r["doc_id"]} for r in backend.relation_rows()]
    attributes = backend._read("MATCH (e:Entity)-[a:HAS_ATTRIBUTE]->(k:Chunk) RETURN e.id AS entity, "
                               "a.property AS property, a.value AS value, k.id AS chunk_id, k.doc_id AS doc_id")
    chunks = backend._read("MATCH (k:Chunk) RETURN k.id AS id, k.doc_id AS doc_id, k.seq AS seq")
    for rows, key in ((entities, "id"), (mentions, "chunk"), (edges, "chunk_id"), (attributes, "chunk_id"), (chunks, "id")):
        rows.sort(key=lambda r: json.dumps(r, sort_keys=True, default=str))
    for m in mentions:
        m["aliases"] = sorted(m["aliases"] or [])
    snapshot = Snapshot(entities, mentions, edges, attributes, chunks)
    snapshot.digest = hashlib.sha256(json.dumps([entities, mentions, edges, attributes, chunks], sort_keys=True,
                                                default=str).encode()).hexdigest()
    return snapshot


# ---------------------------------------------------------------------------------------------- as RDF

def _fact_uri(*parts) -> URIRef:
    return URIRef(FACT_NS + hashlib.sha1("\0".join(str(p) for p in parts).encode()).hexdigest()[:20])


def _attribute_literal(ontology: Ontology, name: str, value) -> Literal:
    if name in ontology.attributes:
        literal = ontology.attribute_literal(name, value)
        if literal.ill_typed:  # keep the document's text rather than an invalid typed literal
            return Literal(str(value), datatype=XSD.string)
        return literal
    return Literal(str(value), datatype=XSD.string)


def view_quads(snapshot: Snapshot, ontology: Ontology) -> list[tuple]:
    """(subject, predicate, object, graph IRI) quads of the view (rdflib terms)."""
    asserted, inferred_g, onto_g = URIRef(GRAPH_ASSERTED), URIRef(GRAPH_INFERRED), URIRef(GRAPH_ONTOLOGY)
    quads: list[tuple] = [(s, p, o, onto_g) for s, p, o in ontology.graph]
    for chunk in snapshot.chunks:
        node = chunk_uri(chunk["id"])
        quads += [(node, RDF.type, KG.Chunk, asserted), (node, KG.docId, Literal(chunk["doc_id"]), asserted),
                  (node, KG.seq, Literal(int(chunk["seq"] if chunk["seq"] is not None else -1)), asserted)]
    for entity in snapshot.entities:
        node = entity_uri(entity["id"])
        info = ontology.classes.get(entity["label"])
        if info is not None:
            quads.append((node, RDF.type, info.uri, asserted))
            quads += [(node, RDF.type, ontology.classes[a].uri, inferred_g) for a in info.ancestors[1:]]
        quads += [(node, KG.name, Literal(entity["name"]), asserted), (node, RDFS.label, Literal(entity["name"]), asserted)]
    aliases: dict[str, set[str]] = {}
    names = {e["id"]: e["name"] for e in snapshot.entities}
    for mention in snapshot.mentions:
        quads.append((entity_uri(mention["entity"]), KG.mentionedIn, chunk_uri(mention["chunk"]), asserted))
        aliases.setdefault(mention["entity"], set()).update(mention["aliases"])
    for entity_id, forms in sorted(aliases.items()):
        quads += [(entity_uri(entity_id), KG.alias, Literal(f), asserted) for f in sorted(forms - {names.get(entity_id)})]

    merged: dict[tuple, Edge] = {}
    for row in snapshot.edges:
        if row["type"] not in ontology.relations:
            continue
        edge = merged.setdefault((row["source"], row["type"], row["target"]), Edge(row["source"], row["type"], row["target"]))
        edge.chunks.add(row["chunk_id"])
        edge.docs.add(row["doc_id"])

    def statement(edge: Edge, graph: URIRef) -> URIRef:
        s, p, o = entity_uri(edge.source), ontology.relations[edge.type].uri, entity_uri(edge.target)
        fact = _fact_uri(edge.source, edge.type, edge.target)
        quads.extend([(s, p, o, graph), (fact, RDF.type, RDF.Statement, graph), (fact, RDF.subject, s, graph),
                      (fact, RDF.predicate, p, graph), (fact, RDF.object, o, graph)])
        quads.extend((fact, KG.mentionedIn, chunk_uri(c), graph) for c in sorted(edge.chunks))
        return fact

    for edge in merged.values():
        statement(edge, asserted)
    for edge in infer_edges(list(merged.values()), ontology):
        fact = statement(edge, inferred_g)
        quads.append((fact, KG.rule, Literal(edge.rule), inferred_g))
        quads.extend((fact, KG.derivedFrom, _fact_uri(a.source, a.type, a.target), inferred_g) for a in edge.via)
    for row in snapshot.attributes:
        name = row["property"]
        predicate = ontology.attributes[name].uri if name in ontology.attributes else KG[quote(str(name), safe="")]
        s, o = entity_uri(row["entity"]), _attribute_literal(ontology, name, row["value"])
        fact = _fact_uri(row["entity"], name, row["value"], row["chunk_id"])
        quads += [(s, predicate, o, asserted), (fact, RDF.type, RDF.Statement, asserted), (fact, RDF.subject, s, asserted),
                  (fact, RDF.predicate, predicate, asserted), (fact, RDF.object, o, asserted),
                  (fact, KG.mentionedIn, chunk_uri(row["chunk_id"]), asserted)]
    return quads


def view_nquads(snapshot: Snapshot, ontology: Ontology) -> str:
    """The view as N-Quads text (what both pyoxigraph and rdflib load); blank nodes of the ontology kept as such."""
    return "".join(f"{s.n3()} {p.n3()} {o.n3()} {g.n3()} .\n" for s, p, o, g in view_quads(snapshot, ontology))


def query_prefixes(ontology: Ontology) -> dict[str, str]:
    """PREFIX declarations a query may omit: the ontology files' own, and the platform's."""
    prefixes = {prefix: str(ns) for prefix, ns in ontology.graph.namespaces() if prefix}
    prefixes |= {"kg": str(KG), "entity": "urn:docplatform:entity:", "chunk": CHUNK_NS,
                 "rdf": str(RDF), "rdfs": str(RDFS), "xsd": str(XSD), "owl": "http://www.w3.org/2002/07/owl#"}
    return prefixes


# ---------------------------------------------------------------------------------------------- the query

def check_query(text) -> str:
    """The query text if it may run: a string, not too long, no update, no SERVICE (the platform is air-gapped)."""
    if not isinstance(text, str) or not text.strip():
        raise SparqlError(f"empty SPARQL query {text!r}: send e.g. 'SELECT ?s WHERE {{ ?s a infra:Server }}'")
    if len(text) > MAX_QUERY_CHARS:
        raise SparqlError(f"SPARQL query of {len(text)} characters is over the limit of {MAX_QUERY_CHARS}")
    bare = _COMMENT.sub(" ", _STRINGS.sub(" ", text))
    body = re.sub(r"(?is)^\s*((PREFIX\s+[^\s:]*:|BASE)\s*)*", "", bare).lstrip()
    first = re.match(r"[A-Za-z]+", body)
    if first and first.group(0).upper() in _UPDATE_WORDS:
        raise SparqlReadOnly(f"SPARQL {first.group(0).upper()} refused: the knowledge graph's SPARQL view is read-only "
                             "(facts change by re-ingesting documents); send SELECT, ASK, CONSTRUCT or DESCRIBE")
    if re.search(r"(?i)\bSERVICE\b", bare):
        raise SparqlError("SERVICE (federated query) refused: the platform answers from its own graph only")
    return text


@dataclass
class SparqlRunner:
    """Runs queries in a child process so a query past its time limit can be stopped (pyoxigraph cannot cancel
    one in-process): the child is killed and the next query starts a fresh one. Safe to share between threads."""
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_rows: int = MAX_ROWS
    load_timeout_s: float = 120.0
    _process: object = field(default=None, repr=False)
    _loaded: set = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _start(self) -> None:
        import subprocess

        worker = str(Path(__file__).resolve().parent / "sparql_worker.py")
        self._process = subprocess.Popen([sys.executable, "-I", worker], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True, encoding="utf-8")
        self._loaded = set()

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            for stream in (self._process.stdin, self._process.stdout):
                stream.close()
        self._process = None
        self._loaded = set()

    def _ask(self, message: dict, limit: float) -> dict | None:
        """Send one message; its reply, or None (and the worker stopped) when none came within limit seconds."""
        import select

        try:
            self._process.stdin.write(json.dumps(message, ensure_ascii=False) + "\n")
            self._process.stdin.flush()
        except (BrokenPipeError, OSError):
            self.stop()
            raise SparqlError("the SPARQL worker process ended; retry the query") from None
        ready, _w, _x = select.select([self._process.stdout], [], [], limit)
        line = self._process.stdout.readline() if ready else ""
        if not line:
            self.stop()
            return None
        return json.loads(line)

    def query(self, query: str, digest: str, nquads, prefixes: dict[str, str], timeout_s: float | None = None) -> dict:
        """Results of query on the view with this digest; nquads() makes the view's text when the worker lacks it."""
        query = check_query(query)
        limit = self.timeout_s if timeout_s is None else timeout_s
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self.stop()
                self._start()
            if digest not in self._loaded:
                reply = self._ask({"op": "load", "digest": digest, "data": nquads()}, self.load_timeout_s)
                if reply is None:
                    raise SparqlError(f"the graph's RDF view did not load within {self.load_timeout_s:g} s")
                if not reply["ok"]:
                    raise SparqlError(f"the graph's RDF view could not be loaded: {reply['message']}")
                self._loaded.add(digest)
            reply = self._ask({"op": "query", "digest": digest, "query": query, "prefixes": prefixes,
                               "max_rows": self.max_rows}, limit)
        if reply is None:
            raise SparqlTimeout(f"SPARQL query ran past its time limit of {limit:g} s and was stopped; "
                                "narrow it (LIMIT, more specific patterns)")
        if reply["ok"]:
            return reply["result"]
        kind = {"SparqlSyntaxError": SparqlSyntaxError, "SparqlReadOnly": SparqlReadOnly}.get(reply["kind"], SparqlError)
        raise kind(reply["message"])


class RdfView:
    """The SPARQL view over a GraphStore: reads the graph's facts on every query (so the view is never stale),
    makes a caller's N-Quads only when those facts changed, and queries them in a SparqlRunner."""

    def __init__(self, graph_store=None, runner: SparqlRunner | None = None):
        from resources.graph_store import GraphStore

        self.graph_store = graph_store or GraphStore(lock_timeout_s=10.0)
        self.runner = runner or SparqlRunner()

    def snapshot(self) -> tuple[Snapshot, Ontology]:
        with self.graph_store.session() as backend:
            return read_snapshot(backend), backend.ontology

    def query(self, query: str, prefixes: tuple[str, ...] = (), timeout_s: float | None = None,
              snapshot: tuple[Snapshot, Ontology] | None = None) -> dict:
        check_query(query)
        full, ontology = snapshot or self.snapshot()
        view = full.visible(prefixes)
        digest = hashlib.sha256((view.digest + ontology.fingerprint).encode()).hexdigest()
        return self.runner.query(query, digest, lambda: view_nquads(view, ontology), query_prefixes(ontology), timeout_s)

    def close(self) -> None:
        self.runner.stop()
