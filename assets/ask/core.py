"""ask(): question -> hybrid retrieval + knowledge-graph paths -> grounded prompt -> served model -> cited answer.

Plain functions over the platform's resources (no Dagster). Every failure a user can cause or meet (empty or
over-long question, no index yet, no model server, a server that stalls mid-answer) ends in an Answer whose
`error`/`notice` says what happened and names the question; the retrieved sources and graph paths are kept, so
the answer can still be checked by hand. Only AskError (bad input) is raised.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from assets.ask.graph import GraphContext, expand
from assets.ask.llm import AnswerClient, AnswerFailed, AnswerTimeout, ServerUnavailable, start_server_hint
from assets.grounded_prompt import MAX_SOURCE_CHARS, cited_numbers, grounded_messages

MAX_QUESTION_CHARS = 2000
CHARS_PER_TOKEN = 3.0  # conservative for English and Korean with a small BPE vocabulary: budget, not a count


class AskError(ValueError):
    """A question that cannot be asked (empty, too long); the message names it."""


def short(question: str, limit: int = 80) -> str:
    flat = " ".join(str(question).split())
    return repr(flat if len(flat) <= limit else flat[: limit - 3] + "...")


@dataclass
class Answer:
    question: str
    answer: str | None = None
    citations: list[dict] = field(default_factory=list)  # {number, chunk_id, doc_id, path, seq}
    sources: list[dict] = field(default_factory=list)  # {number, chunk_id, doc_id, path, seq, score, origin, text}
    graph_paths: list[dict] = field(default_factory=list)  # GraphPath.to_dict()
    entities: list[dict] = field(default_factory=list)  # {id, name, label, matched}
    model: str | None = None
    server: str | None = None
    retrieval_mode: str = "hybrid"
    complete: bool = False  # the model finished its answer
    error: str | None = None  # what went wrong (names the question)
    notice: str | None = None  # what to do about it (e.g. the command that starts a server)
    messages: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)

    @property
    def cited_chunk_ids(self) -> list[str]:
        return [c["chunk_id"] for c in self.citations]

    def to_dict(self, with_prompt: bool = False) -> dict:
        data = asdict(self)
        if not with_prompt:
            data.pop("messages")
        return data


def validate_question(question) -> str:
    if not isinstance(question, str) or not question.strip():
        raise AskError(f"empty question {question!r}: ask something about the documents, e.g. "
                       "'Which team manages billing-db?'")
    text = question.strip()
    if len(text) > MAX_QUESTION_CHARS:
        raise AskError(f"question {short(text)} is {len(text)} characters long; the limit is {MAX_QUESTION_CHARS} "
                       "(ask a shorter question)")
    return text


def retrieve(question: str, top_k: int, milvus=None, embedder=None, filters: dict | None = None) -> tuple[list[dict], str]:
    """Hybrid search (BM25 + dense); dense alone when the collection or server cannot do hybrid search."""
    from pipelines.search import search

    try:
        return search(question, top_k=top_k, filters=filters, mode="hybrid", milvus=milvus, embedder=embedder), "hybrid"
    except Exception as hybrid_error:  # noqa: BLE001  (pymilvus/grpc errors: no sparse field, no BM25 support)
        try:
            return search(question, top_k=top_k, filters=filters, mode="dense", milvus=milvus, embedder=embedder), "dense"
        except Exception:  # noqa: BLE001
            raise hybrid_error from None


def fetch_chunks(chunk_ids: list[str], milvus=None) -> dict[str, dict]:
    """Stored chunks by id (the text behind graph-path evidence): {chunk_id: {doc_id, seq, text}}."""
    from resources.milvus import MilvusStore

    if not chunk_ids:
        return {}
    milvus = milvus or MilvusStore()
    with milvus.client() as client:
        if not client.has_collection(milvus.collection):
            return {}
        rows = client.get(milvus.collection, ids=list(chunk_ids), output_fields=["chunk_id", "doc_id", "seq", "text"])
    return {row["chunk_id"]: row for row in rows}


def _document_path(doc_id: str, documents=None) -> str:
    from resources.documents import DocumentSource

    return str((documents or DocumentSource()).root_path / doc_id)


def build_sources(hits: list[dict], paths, milvus=None, max_graph_sources: int = 3,
                  char_budget: int | None = None, documents=None) -> list[dict]:
    """Retrieved chunks first, then the chunks that support the graph paths and were not retrieved, within budget."""
    sources, seen = [], set()
    for hit in hits:
        if hit["chunk_id"] not in seen:
            seen.add(hit["chunk_id"])
            sources.append({"chunk_id": hit["chunk_id"], "doc_id": hit["doc_id"], "path": _document_path(hit["doc_id"], documents),
                            "seq": int(hit["seq"]), "score": round(float(hit.get("score", 0.0)), 4), "origin": "retrieval",
                            "text": hit["text"]})
    wanted = []
    for path in paths:
        for chunk_id in path.chunk_ids:
            if chunk_id not in seen and chunk_id not in wanted:
                wanted.append(chunk_id)
    wanted = wanted[:max_graph_sources]
    stored = fetch_chunks(wanted, milvus) if wanted else {}
    for chunk_id in wanted:
        row = stored.get(chunk_id)
        if row:
            sources.append({"chunk_id": chunk_id, "doc_id": row["doc_id"], "path": _document_path(row["doc_id"], documents),
                            "seq": int(row["seq"]), "score": None, "origin": "graph", "text": row["text"]})
    if char_budget is not None:
        kept, used = [], 0
        for source in sources:
            cost = min(len(source["text"]), MAX_SOURCE_CHARS) + 40
            if kept and used + cost > char_budget:
                continue
            kept.append(source)
            used += cost
        sources = kept
    for number, source in enumerate(sources, 1):
        source["number"] = number
    return sources


def graph_expansion(question: str, graph_store=None, max_hops: int = 2, max_paths: int = 8):
    """(entities, paths) from the knowledge graph; ([], []) when the graph is empty or absent."""
    from resources.graph_store import GraphStore

    # a Dagster run holding the embedded graph file should not keep a question waiting for minutes
    graph_store = graph_store or GraphStore(lock_timeout_s=10.0)
    with graph_store.session() as backend:
        return expand(question, GraphContext(backend), max_hops=max_hops, max_paths=max_paths)


def ask(question: str, top_k: int = 5, *, server_url: str | None = None, model: str | None = None,
        timeout_s: float = 120.0, max_tokens: int = 256, max_hops: int = 2, max_paths: int = 8,
        use_llm: bool = True, milvus=None, embedder=None, graph_store=None, documents=None, filters: dict | None = None,
        client: AnswerClient | None = None, path_filter=None) -> Answer:
    """Answer a question from the indexed documents and the knowledge graph, citing chunk ids, paths and graph paths.

    Resources default to the platform's (env-configured) ones; documents (a DocumentSource) roots the reported paths.
    path_filter(paths) -> paths drops graph paths a caller may not see (an API key's document prefixes) before they
    reach the prompt; the entities reported are then only those on a kept path.
    Raises AskError for an empty or over-long question; everything else is reported on the Answer."""
    question = validate_question(question)
    result = Answer(question=question)
    started = time.perf_counter()

    try:
        entities, paths = graph_expansion(question, graph_store, max_hops=max_hops, max_paths=max_paths)
    except Exception as exc:  # noqa: BLE001  (no graph yet, locked by another process: answer from text alone)
        entities, paths = [], []
        result.notice = f"knowledge graph not used for question {short(question)}: {type(exc).__name__}: {exc}"
    if path_filter is not None:
        paths = path_filter(paths)
        kept = {node for path in paths for node in path.ids}
        entities = [e for e in entities if e.id in kept]
    result.entities = [{"id": e.id, "name": e.name, "label": e.label, "matched": e.matched} for e in entities]
    result.graph_paths = [p.to_dict() for p in paths]
    result.timings["graph_s"] = round(time.perf_counter() - started, 3)

    mark = time.perf_counter()
    try:
        hits, result.retrieval_mode = retrieve(question, top_k, milvus=milvus, embedder=embedder, filters=filters)
    except Exception as exc:  # noqa: BLE001
        result.error = (f"retrieval failed for question {short(question)}: {type(exc).__name__}: {exc} "
                        "(has the corpus been ingested? run `make run` first)")
        return result
    result.timings["retrieval_s"] = round(time.perf_counter() - mark, 3)

    client = client or AnswerClient(server_url, model=model, timeout_s=timeout_s)
    result.server = client.base_url
    served = None
    if use_llm:
        try:
            served = client.choose_model()
            result.model = served.id
        except ServerUnavailable as exc:
            result.error = f"no answer to question {short(question)}: {exc}"
            result.notice = f"start a model server with: {start_server_hint(client.base_url)}"
        except AnswerFailed as exc:
            result.error = f"no answer to question {short(question)}: {exc}"
        except Exception as exc:  # noqa: BLE001  (a proxy or another service answering at the URL)
            result.error = f"no answer to question {short(question)}: {client.base_url} is no usable vLLM server " \
                           f"({type(exc).__name__}: {exc})"

    budget = None
    if served is not None and served.max_model_len:
        budget = int((served.max_model_len - max_tokens - 200) * CHARS_PER_TOKEN)  # 200 tokens: instructions, template
    result.sources = build_sources(hits, paths, milvus=milvus, char_budget=budget, documents=documents)
    if not result.sources and not paths:
        result.error = result.error or (f"nothing in the index or the graph matches question {short(question)} "
                                        "(has the corpus been ingested? run `make run` first)")
    result.messages = grounded_messages(question, result.sources, [p["path"] for p in result.graph_paths])
    if served is None:
        result.timings["total_s"] = round(time.perf_counter() - started, 3)
        return result

    mark = time.perf_counter()
    try:
        text, _api = client.answer(result.messages, served.id, max_tokens=max_tokens)
        result.answer, result.complete = text.strip(), True
    except AnswerTimeout as exc:
        result.answer = exc.partial.strip() or None
        result.error = (f"the model server at {client.base_url} did not finish answering question {short(question)}: "
                        f"{exc}" + ("; the partial answer is shown" if result.answer else ""))
        result.notice = "retry with a longer --timeout, or check the server's load"
    except ServerUnavailable as exc:
        result.error = f"no answer to question {short(question)}: {exc}"
        result.notice = f"start a model server with: {start_server_hint(client.base_url)}"
    except AnswerFailed as exc:
        result.error = f"the model server refused question {short(question)}: {exc}"
    except Exception as exc:  # noqa: BLE001  (malformed stream)
        result.error = f"no usable answer to question {short(question)} from {client.base_url}: {type(exc).__name__}: {exc}"
    result.timings["llm_s"] = round(time.perf_counter() - mark, 3)
    if result.answer:
        by_number = {s["number"]: s for s in result.sources}
        result.citations = [{"number": n, "chunk_id": by_number[n]["chunk_id"], "doc_id": by_number[n]["doc_id"],
                             "path": by_number[n]["path"], "seq": by_number[n]["seq"]}
                            for n in cited_numbers(result.answer, len(result.sources))]
    result.timings["total_s"] = round(time.perf_counter() - started, 3)
    return result
