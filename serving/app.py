"""The OpenAI-compatible HTTP API over the platform (Starlette): chat completions answered by model
`docplatform-rag` from retrieval + graph, plus search, graph paths and a health probe.

Every request goes through `guarded`: body size limit, API-key check, per-key rate limit, a time limit, JSON
errors in OpenAI's shape (never a stack trace) and one access-log line (key id, endpoint, status, latency, sources
returned; never the key). Sources travel in the response body's `docplatform` field; see docs/serving.md.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from serving.apikeys import KeyStore
from serving.service import (MAX_HOPS, MAX_TOP_K, AskError, Caller, PlatformService, answer_text_with_sources,
                             clean_question, public_sources)

MODEL_ID = "docplatform-rag"
access_log = logging.getLogger("docplatform.access")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiError(Exception):
    """A refusal with an HTTP status and a message for the caller."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.headers = status, message, kind, code, headers or {}

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


@dataclass
class Limits:
    max_body_bytes: int = 64 * 1024
    requests_per_minute: int = 60
    request_timeout_s: float = 180.0
    max_tokens: int = 512


class RateLimiter:
    """A sliding one-minute window per key id."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._seen: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def check(self, key_id: str) -> None:
        now = time.monotonic()
        with self._lock:
            window = self._seen[key_id]
            while window and now - window[0] > 60.0:
                window.popleft()
            if len(window) >= self.per_minute:
                retry = max(1, int(60.0 - (now - window[0])) + 1)
                raise ApiError(429, f"rate limit of {self.per_minute} requests a minute reached for key {key_id}; "
                                    f"retry in {retry} s", "rate_limit_error", "rate_limited", {"Retry-After": str(retry)})
            window.append(now)


class ServingState:
    def __init__(self, service: PlatformService, keys: KeyStore, limits: Limits, require_keys: bool):
        self.service, self.keys, self.limits, self.require_keys = service, keys, limits, require_keys
        self.rate = RateLimiter(limits.requests_per_minute)

    def anonymous_allowed(self) -> bool:
        return not self.require_keys and not self.keys.has_active_keys()

    def caller(self, request: Request) -> Caller:
        """A docplatform key a request comes with is always checked; anonymous only on loopback with no keys."""
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(401, "Authorization header must read 'Bearer KEY'", "authentication_error", "invalid_api_key")
            token = token.strip()
            if not token.startswith("dp_") and self.anonymous_allowed():
                return Caller()  # a placeholder an OpenAI client must send (api_key="local") on an open loopback server
            record = self.keys.verify(token)
            if record is None:
                raise ApiError(401, "invalid or revoked API key", "authentication_error", "invalid_api_key")
            return Caller(record.key_id, tuple(record.prefixes))
        if not self.anonymous_allowed():
            raise ApiError(401, "an API key is required: send 'Authorization: Bearer KEY' (make one with "
                                "python -m pipelines.apikeys create NAME)", "authentication_error", "missing_api_key")
        return Caller()

    async def raw_body(self, request: Request) -> bytes:
        """The request body, refused (413) past max_body_bytes whether declared or streamed."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.limits.max_body_bytes:
            raise ApiError(413, f"request body of {declared} bytes is over the limit of {self.limits.max_body_bytes}",
                           code="request_too_large")
        raw = bytearray()
        async for piece in request.stream():
            raw += piece
            if len(raw) > self.limits.max_body_bytes:
                raise ApiError(413, f"request body is over the limit of {self.limits.max_body_bytes} bytes",
                               code="request_too_large")
        return bytes(raw)

    async def body(self, request: Request) -> dict:
        raw = await self.raw_body(request)
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ApiError(400, f"request body is not UTF-8 text (byte {exc.start})", code="invalid_json") from None
        except json.JSONDecodeError as exc:
            raise ApiError(400, f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                           code="invalid_json") from None
        if not isinstance(data, dict):
            raise ApiError(400, f"request body must be a JSON object, not {type(data).__name__}", code="invalid_json")
        return data


def _int_field(data: dict, name: str, default: int, low: int, high: int) -> int:
    value = data.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(400, f"{name} must be an integer from {low} to {high}, not {value!r}", code="invalid_value")
    return value


def _text_field(data: dict, name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string, not {type(value).__name__}", code="invalid_value")
    return value


def guarded(handler):
    """Wraps an endpoint: auth, rate limit, time limit, JSON errors and the access-log line."""

    async def endpoint(request: Request):
        state: ServingState = request.app.state.serving
        started = time.perf_counter()
        info = {"key": "-", "sources": 0, "status": 500}
        try:
            caller = state.caller(request)
            info["key"] = caller.key_id
            state.rate.check(caller.key_id)
            response = await asyncio.wait_for(handler(request, state, caller, info), state.limits.request_timeout_s)
        except ApiError as exc:
            response = exc.response()
        except AskError as exc:
            response = ApiError(400, str(exc), code="invalid_question").response()
        except asyncio.TimeoutError:
            response = ApiError(504, f"no answer within {state.limits.request_timeout_s:g} s", "timeout_error",
                                "timeout").response()
        except ClientDisconnect:
            response = ApiError(400, "client disconnected", code="client_disconnect").response()
        except Exception as exc:  # noqa: BLE001  (the server keeps serving; the caller gets the reason, no traceback)
            logging.getLogger(__name__).exception("request failed")
            response = ApiError(500, f"internal error: {type(exc).__name__}: {str(exc)[:300]}", "server_error").response()
        info["status"] = response.status_code
        access_log.info("key=%s endpoint=%s %s status=%s latency_ms=%d sources=%s", info["key"], request.method,
                        request.url.path, info["status"], (time.perf_counter() - started) * 1000, info["sources"])
        return response

    return endpoint


# ---------------------------------------------------------------------------------------------- endpoints

async def healthz(request: Request):
    ok, detail = await run_in_threadpool(request.app.state.serving.service.ready)
    return JSONResponse({"status": "ok" if ok else "unavailable", "detail": detail}, status_code=200 if ok else 503)


async def models(request, state, caller, info):
    return JSONResponse({"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": 0,
                                                      "owned_by": "docplatform"}]})


async def search(request, state, caller, info):
    data = await state.body(request)
    query = _text_field(data, "query")
    top_k = _int_field(data, "top_k", 5, 1, MAX_TOP_K)
    hits = await run_in_threadpool(state.service.search, query, top_k, caller)
    info["sources"] = len(hits)
    return JSONResponse({"object": "list", "query": query, "data": hits})


async def graph_paths(request, state, caller, info):
    data = await state.body(request)
    question = data.get("question", data.get("query"))
    if not isinstance(question, str):
        raise ApiError(400, "question must be a string", code="invalid_value")
    hops = _int_field(data, "max_hops", 2, 1, MAX_HOPS)
    limit = _int_field(data, "max_paths", 8, 1, 50)
    result = await run_in_threadpool(state.service.graph_paths, question, caller, hops, limit)
    info["sources"] = len(result["paths"])
    return JSONResponse({"object": "graph.paths", "question": question.strip()} | result)


def last_user_message(data: dict) -> str:
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list of {role, content}", code="invalid_value")
    for message in reversed(messages):
        if not isinstance(message, dict):
            raise ApiError(400, "every message must be an object with role and content", code="invalid_value")
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # content parts: the text ones, in order
                content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
            if not isinstance(content, str):
                raise ApiError(400, "the last user message's content must be text", code="invalid_value")
            return content
    raise ApiError(400, "no user message to answer", code="invalid_value")


def extra_field(answer) -> dict:
    return {"sources": public_sources(answer), "citations": [{k: c[k] for k in ("number", "doc_id", "chunk_id", "seq")}
                                                             for c in answer.citations],
            "graph_paths": answer.graph_paths, "answered_by": answer.model, "complete": answer.complete,
            "error": answer.error}


async def chat_completions(request, state, caller, info):
    data = await state.body(request)
    model = data.get("model")
    if model != MODEL_ID:
        raise ApiError(404, f"model {model!r} does not exist here; use {MODEL_ID!r} (GET /v1/models)",
                       code="model_not_found")
    question = last_user_message(data)
    max_tokens = _int_field(data, "max_tokens", 256, 1, state.limits.max_tokens)
    top_k = _int_field(data, "top_k", 5, 1, MAX_TOP_K)
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if data.get("stream"):
        return await stream_chat(state, caller, info, clean_question(question), top_k, max_tokens, ident, created)
    answer = await run_in_threadpool(state.service.ask, question, caller, top_k, max_tokens,
                                     state.limits.request_timeout_s - 5)
    info["sources"] = len(answer.sources)
    if not answer.answer:
        raise ApiError(503, answer.error or "no answer could be made", "server_error", "no_answer")
    return JSONResponse({"id": ident, "object": "chat.completion", "created": created, "model": MODEL_ID,
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": answer_text_with_sources(answer)},
                                      "finish_reason": finish_reason(answer)}],
                         "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                         "docplatform": extra_field(answer)})


def finish_reason(answer) -> str:
    return "stop" if answer.complete or answer.model == "extractive" else "length"


class StreamReaderGone(RuntimeError):
    """The HTTP client closed its stream: the model server's stream is closed too (vLLM then stops generating)."""


async def stream_chat(state, caller, info, question: str, top_k: int, max_tokens: int, ident: str, created: int):
    """Server-sent events that forward the model server's stream piece by piece as it arrives (the answer is
    asked in a worker thread whose client hands each piece to this loop); then a content chunk with the
    'Sources:' line and a last chunk with finish_reason and the docplatform field. An extractive answer (no
    model serving) is one content chunk. The response starts with the first piece, so a question that gets no
    answer at all is still a plain 503."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    reader_gone = threading.Event()

    def on_piece(piece: str) -> None:
        if reader_gone.is_set():
            raise StreamReaderGone("the client closed the stream")
        loop.call_soon_threadsafe(events.put_nowait, ("piece", piece))

    def work() -> None:
        from assets.ask.llm import AnswerClient

        timeout = state.limits.request_timeout_s - 5
        try:
            answer = state.service.ask(question, caller, top_k, max_tokens, timeout,
                                       client=AnswerClient(state.service.llm_url, timeout_s=timeout, on_piece=on_piece))
            loop.call_soon_threadsafe(events.put_nowait, ("done", answer))
        except BaseException as exc:  # noqa: BLE001  (handed to the loop, which answers with it)
            loop.call_soon_threadsafe(events.put_nowait, ("error", exc))

    threading.Thread(target=work, name=f"stream-{ident[-8:]}", daemon=True).start()
    first = await events.get()
    if first[0] == "error":
        raise first[1]
    if first[0] == "done":
        info["sources"] = len(first[1].sources)
        if not first[1].answer:
            raise ApiError(503, first[1].error or "no answer could be made", "server_error", "no_answer")

    def chunk(delta: dict, finish=None, extra: dict | None = None) -> str:
        body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": MODEL_ID,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if extra is not None:
            body["docplatform"] = extra
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    async def stream():
        sent, held = "", ""  # held: trailing whitespace, sent only when more text follows (the answer is stripped)
        event = first
        try:
            yield chunk({"role": "assistant", "content": ""})
            while event[0] == "piece":
                text = held + event[1]
                if not sent:
                    text = text.lstrip()
                body = text.rstrip()
                held = text[len(body):]
                if body:
                    sent += body
                    yield chunk({"content": body})
                event = await events.get()
            if event[0] == "error":
                logging.getLogger(__name__).error("streamed answer failed: %s: %s", type(event[1]).__name__, event[1])
                yield chunk({}, "stop", {"error": f"{type(event[1]).__name__}: {str(event[1])[:300]}"})
            else:
                answer = event[1]
                content = answer_text_with_sources(answer)
                if not sent:  # nothing streamed (an extractive answer): a few words a chunk
                    words = content.split(" ")
                    for start in range(0, len(words), 4):
                        yield chunk({"content": " ".join(words[start:start + 4]) + (" " if start + 4 < len(words) else "")})
                elif content.startswith(sent):  # the model's answer (whole or cut short): its Sources line
                    yield chunk({"content": content[len(sent):]})
                else:  # the model's stream broke and an extractive answer follows what it said
                    yield chunk({"content": "\n\n" + content})
                yield chunk({}, finish_reason(answer), extra_field(answer))
            yield "data: [DONE]\n\n"
        finally:
            reader_gone.set()  # a client gone mid-stream stops the model's stream at its next piece

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def sparql(request, state, caller, info):
    """SPARQL over the graph: a JSON body {"query": ..., "timeout_s": ...} or, as the SPARQL protocol has it, the
    query itself with Content-Type application/sparql-query. Answers SPARQL 1.1 JSON results."""
    from resources.rdf_view import SparqlError

    timeout_s = None
    if request.headers.get("content-type", "").split(";")[0].strip() == "application/sparql-query":
        try:
            query = (await state.raw_body(request)).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiError(400, f"query is not UTF-8 text (byte {exc.start})", code="invalid_query") from None
    else:
        data = await state.body(request)
        query = _text_field(data, "query")
        timeout_s = data.get("timeout_s")
        if timeout_s is not None and (isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float))
                                      or not 0 < timeout_s <= 600):
            raise ApiError(400, f"timeout_s must be a number of seconds from 0 to 600, not {timeout_s!r}",
                           code="invalid_value")
    try:
        result = await run_in_threadpool(state.service.sparql, query, caller, timeout_s)
    except SparqlError as exc:
        raise ApiError(exc.status, str(exc), code=exc.code) from None
    info["sources"] = len(result.get("results", {}).get("bindings", result.get("triples", [])))
    return JSONResponse(result, media_type="application/sparql-results+json")


async def not_found(request: Request, exc):
    status = getattr(exc, "status_code", 404)
    message = "no such endpoint" if status == 404 else "method not allowed"
    return ApiError(status, f"{message}: {request.method} {request.url.path}", code="not_found").response()


def build_app(service: PlatformService | None = None, keys: KeyStore | None = None, limits: Limits | None = None,
              require_keys: bool = False) -> Starlette:
    routes = [Route("/healthz", healthz, methods=["GET"]),
              Route("/v1/models", guarded(models), methods=["GET"]),
              Route("/v1/chat/completions", guarded(chat_completions), methods=["POST"]),
              Route("/v1/search", guarded(search), methods=["POST"]),
              Route("/v1/graph/paths", guarded(graph_paths), methods=["POST"]),
              Route("/v1/sparql", guarded(sparql), methods=["POST"])]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.state.serving = ServingState(service or PlatformService(), keys or KeyStore(), limits or Limits(), require_keys)
    return app
