"""What the HTTP and MCP servers serve: search, graph paths and grounded answers over the platform's stores,
restricted to the document prefixes a caller may see.

Why one module: the OpenAI-compatible app and the MCP server must apply the same rules (question checks, prefix
filters on retrieval and on graph facts, the extractive answer when no model serves), so both call these functions.
Calls are serialised by one lock: milvus-lite and the embedded graph admit one user at a time in a process.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

from assets.ask import MAX_QUESTION_CHARS, Answer, AskError, ask, validate_question
from assets.ask.core import fetch_chunks, graph_expansion, short
from assets.grounded_prompt import cited_numbers

MAX_TOP_K = 50
MAX_HOPS = 4  # a cost bound: facts on a path, an inferred (transitive) fact counting one
SOURCE_TEXT_CHARS = 1500  # per source in a response body
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")


def clean_question(question) -> str:
    """validate_question plus a refusal of binary input (NUL and other control bytes, undecodable bytes)."""
    text = validate_question(question)
    bad = _CONTROL.findall(text)
    if bad:
        raise AskError(f"question {short(text)} holds {len(bad)} control or undecodable character(s) "
                       f"(first {bad[0]!r}): send plain text")
    return text


@dataclass(frozen=True)
class Caller:
    """Who asks: the API key's id (or 'anonymous') and the document-key prefixes it may see (empty = all)."""
    key_id: str = "anonymous"
    prefixes: tuple[str, ...] = ()

    def allows(self, doc_id: str) -> bool:
        return not self.prefixes or any(doc_id.startswith(p) for p in self.prefixes)

    def retrieval_filters(self) -> dict | None:
        return {"path": list(self.prefixes)} if self.prefixes else None


@dataclass
class PlatformService:
    """The platform's resources (env-configured defaults) and the model server the answers come from."""
    milvus: object = None
    embedder: object = None
    graph_store: object = None
    documents: object = None
    llm_url: str | None = None
    use_llm: bool = True
    answer_timeout_s: float = 120.0
    sparql_timeout_s: float = 10.0  # a caller may ask for less, never more
    rdf_view: object = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        from resources.documents import DocumentSource
        from resources.embedder import Embedder
        from resources.graph_store import GraphStore
        from resources.milvus import MilvusStore

        self.milvus = self.milvus or MilvusStore()
        self.embedder = self.embedder or Embedder()
        self.graph_store = self.graph_store or GraphStore(lock_timeout_s=10.0)
        self.documents = self.documents or DocumentSource()
        if self.rdf_view is None:
            from resources.rdf_view import RdfView, SparqlRunner

            self.rdf_view = RdfView(self.graph_store, SparqlRunner(timeout_s=self.sparql_timeout_s))

    # ------------------------------------------------------------------------------ readiness

    def ready(self) -> tuple[bool, str]:
        """(True, detail) once a question can be answered: the chunk collection exists and the embedder loads."""
        with self._lock:
            try:
                with self.milvus.client() as client:
                    if not client.has_collection(self.milvus.collection):
                        return False, f"no chunk index in {self.milvus.uri} yet (run `make run` first)"
                self.embedder.encode_queries(["ready"])
            except Exception as exc:  # noqa: BLE001
                return False, f"index not usable: {type(exc).__name__}: {exc}"
        return True, "ok"

    # ------------------------------------------------------------------------------ prefixes on graph facts

    def restrict_paths(self, paths: list, caller: Caller) -> list:
        """Keep a graph path only if every hop rests on at least one chunk of an allowed document; the kept paths
        lose the evidence and document ids the caller may not see."""
        if not caller.prefixes or not paths:
            return paths
        doc_of = {c: d for p in paths for c, d in getattr(p, "chunk_docs", {}).items()}  # as the graph records it
        missing = sorted({c for p in paths for hop in p.evidence for c in hop} - set(doc_of))
        if missing:
            doc_of |= {cid: row["doc_id"] for cid, row in fetch_chunks(missing, self.milvus).items()}
        allowed = lambda chunks: [c for c in chunks if c in doc_of and caller.allows(doc_of[c])]  # noqa: E731
        kept = []
        for path in paths:
            evidence = [allowed(hop) for hop in path.evidence]
            for number, hop in enumerate(path.hops):
                if hop.get("inferred"):  # an inferred hop stands only if every asserted hop under it does
                    via = [dict(v, evidence=allowed(v["evidence"])) for v in hop["via"]]
                    evidence[number] = sorted({c for v in via for c in v["evidence"]}) if all(v["evidence"] for v in via) else []
                    hop["via"] = via
            if all(evidence):
                path.evidence = evidence
                path.doc_ids = sorted({doc_of[c] for hop in evidence for c in hop})
                kept.append(path)
        return kept

    # ------------------------------------------------------------------------------ the three operations

    def search(self, query, top_k: int, caller: Caller) -> list[dict]:
        from assets.ask.core import retrieve

        query = clean_question(query)
        with self._lock:
            hits, _mode = retrieve(query, top_k, milvus=self.milvus, embedder=self.embedder,
                                   filters=caller.retrieval_filters())
        return [{"doc_id": h["doc_id"], "chunk_id": h["chunk_id"], "seq": h["seq"], "score": round(h["score"], 6),
                 "text": h["text"]} for h in hits if caller.allows(h["doc_id"])]

    def graph_paths(self, question, caller: Caller, max_hops: int = 2, max_paths: int = 8) -> dict:
        question = clean_question(question)
        with self._lock:
            entities, paths = graph_expansion(question, self.graph_store, max_hops=max_hops, max_paths=max_paths)
            paths = self.restrict_paths(paths, caller)
        kept = {node for p in paths for node in p.ids}
        if caller.prefixes:
            entities = [e for e in entities if e.id in kept]
        return {"entities": [{"id": e.id, "name": e.name, "label": e.label, "matched": e.matched} for e in entities],
                "paths": [p.to_dict() for p in paths]}

    def sparql(self, query, caller: Caller, timeout_s: float | None = None) -> dict:
        """A read-only SPARQL query on the RDF view of the facts the caller's prefixes allow (SparqlError on bad
        input, an update or a query past the time limit). The graph is read under the lock; the query runs in the
        view's worker process, so a long query holds up no other call."""
        from resources.rdf_view import check_query

        check_query(query)
        limit = self.sparql_timeout_s if timeout_s is None else min(float(timeout_s), self.sparql_timeout_s)
        with self._lock:
            snapshot = self.rdf_view.snapshot()
        return self.rdf_view.query(query, caller.prefixes, timeout_s=limit, snapshot=snapshot)

    def ask(self, question, caller: Caller, top_k: int = 5, max_tokens: int = 256, timeout_s: float | None = None,
            client=None) -> Answer:
        """ask() under the caller's prefixes; with no model answering, an extractive answer from the same sources.
        client: an AnswerClient of llm_url (one that forwards the streamed pieces), else a plain one."""
        question = clean_question(question)
        with self._lock:
            answer = ask(question, top_k=top_k, server_url=self.llm_url, timeout_s=timeout_s or self.answer_timeout_s,
                         max_tokens=max_tokens, use_llm=self.use_llm, milvus=self.milvus, embedder=self.embedder,
                         graph_store=self.graph_store, documents=self.documents, filters=caller.retrieval_filters(),
                         path_filter=lambda paths: self.restrict_paths(paths, caller), client=client)
        answer.sources = [s for s in answer.sources if caller.allows(s["doc_id"])]  # belt and braces
        if not answer.answer and answer.sources:
            extractive_answer(answer)
        return answer


def extractive_answer(answer: Answer) -> None:
    """The answer without a model: the graph facts and the best passages, each with its source number."""
    number_of = {s["chunk_id"]: s["number"] for s in answer.sources}
    lines = []
    for path in answer.graph_paths[:4]:
        numbers = sorted({number_of[c] for hop in path["evidence"] for c in hop if c in number_of})
        lines.append(f"- {path['path']}" + "".join(f" [{n}]" for n in numbers))
    for source in [s for s in answer.sources if s["origin"] == "retrieval"][:3]:
        passage = " ".join(source["text"].split())
        if len(passage) > 300:
            passage = passage[:297].rsplit(" ", 1)[0] + "..."
        lines.append(f"- {passage} [{source['number']}]")
    answer.answer = ("No language model is serving, so these are the facts and passages from the documents that "
                     "bear on the question:\n" + "\n".join(lines))
    answer.model = "extractive"
    answer.citations = [{"number": n, "chunk_id": s["chunk_id"], "doc_id": s["doc_id"], "path": s["path"], "seq": s["seq"]}
                        for n in cited_numbers(answer.answer, len(answer.sources))
                        for s in answer.sources if s["number"] == n]


def public_sources(answer: Answer) -> list[dict]:
    """Sources as a response body shows them: no server file paths, text cut to a readable length."""
    return [{"number": s["number"], "doc_id": s["doc_id"], "chunk_id": s["chunk_id"], "seq": s["seq"],
             "score": s["score"], "origin": s["origin"], "text": s["text"][:SOURCE_TEXT_CHARS]} for s in answer.sources]


def answer_text_with_sources(answer: Answer) -> str:
    """The answer followed by a 'Sources:' line naming each cited document chunk (all sources when none is cited)."""
    cited = {c["number"] for c in answer.citations}
    listed = [s for s in answer.sources if s["number"] in cited] or answer.sources
    text = (answer.answer or "").rstrip()
    if listed:
        text += "\n\nSources: " + "; ".join(f"[{s['number']}] {s['doc_id']}#{s['seq']}" for s in listed)
    return text


__all__ = ["MAX_HOPS", "MAX_QUESTION_CHARS", "MAX_TOP_K", "AskError", "Caller", "PlatformService", "clean_question",
           "answer_text_with_sources", "extractive_answer", "public_sources"]
