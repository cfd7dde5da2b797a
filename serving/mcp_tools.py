"""The platform as an MCP server (the `mcp` SDK's MCPServer): tools search, graph_paths, ask and sparql.

The tools call serving.service, so they apply the HTTP API's rules: question checks, an API key's document prefixes
on retrieval and on graph facts, the extractive answer when no model serves. Over streamable HTTP a gate in front
of the SDK's app checks `Authorization: Bearer KEY` on every request, rate-limits per key and writes the access
log; the tools read the same header to know the caller's prefixes. Over stdio the client started the server as the
data's own user; DOCPLATFORM_API_KEY, when set, restricts it to that key's prefixes.
"""

from __future__ import annotations

import json
import os
import time

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from serving.apikeys import KeyStore
from serving.app import ApiError, RateLimiter, access_log
from serving.service import MAX_HOPS, MAX_TOP_K, AskError, Caller, PlatformService, answer_text_with_sources, public_sources

INSTRUCTIONS = ("Search and question the company's indexed documents and knowledge graph. `search` returns "
                "document chunks, `graph_paths` the facts linking the entities a question names, `ask` a grounded "
                "answer citing numbered sources, `sparql` a read-only SPARQL query over the graph's RDF view (ontology "
                "IRIs; prefixes infra:, kg:, entity:, chunk: predeclared; inferred facts included).")


def caller_from_key(keys: KeyStore, key: str | None, required: bool) -> Caller:
    anonymous = not required and not keys.has_active_keys()
    if key and not key.startswith("dp_") and anonymous:
        return Caller()  # a client's placeholder key on an open loopback server
    if key:
        record = keys.verify(key)
        if record is None:
            raise ApiError(401, "invalid or revoked API key", "authentication_error", "invalid_api_key")
        return Caller(record.key_id, tuple(record.prefixes))
    if not anonymous:
        raise ApiError(401, "an API key is required: send 'Authorization: Bearer KEY'", "authentication_error",
                       "missing_api_key")
    return Caller()


def bearer(headers) -> str | None:
    value = (headers or {}).get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "Authorization header must read 'Bearer KEY'", "authentication_error", "invalid_api_key")
    return token.strip()


def build_mcp(service: PlatformService | None = None, keys: KeyStore | None = None, require_keys: bool = False) -> MCPServer:
    service = service or PlatformService()
    keys = keys or KeyStore()
    server = MCPServer("docplatform", instructions=INSTRUCTIONS)

    def caller_of(ctx: Context) -> Caller:
        try:
            headers = ctx.headers
        except ValueError:
            headers = None
        try:
            if headers is not None:  # streamable HTTP: the gate has checked it; the prefixes come from the same key
                return caller_from_key(keys, bearer(headers), require_keys)
            return caller_from_key(keys, os.environ.get("DOCPLATFORM_API_KEY") or None, False) \
                if os.environ.get("DOCPLATFORM_API_KEY") else Caller()
        except ApiError as exc:
            raise ToolError(exc.message) from None

    def run(call):
        try:
            return call()
        except AskError as exc:
            raise ToolError(str(exc)) from None

    @server.tool(description="Hybrid (BM25 + dense) search over the document chunks: the best top_k chunks with "
                             "document key, chunk id, position and score.")
    def search(query: str, ctx: Context, top_k: int = 5) -> list[dict]:
        if not 1 <= top_k <= MAX_TOP_K:
            raise ToolError(f"top_k must be from 1 to {MAX_TOP_K}, not {top_k}")
        return run(lambda: service.search(query, top_k, caller_of(ctx)))

    @server.tool(description="Knowledge-graph paths through the entities the question names, with the ontology's "
                             "semantics (transitive, inverse, symmetric and sub-properties, subclasses); max_hops bounds "
                             "the facts on a path (an inferred transitive fact counts one); every hop lists the chunk ids "
                             "that state it, an inferred hop the asserted hops it rests on.")
    def graph_paths(question: str, ctx: Context, max_hops: int = 2) -> dict:
        if not 1 <= max_hops <= MAX_HOPS:
            raise ToolError(f"max_hops must be from 1 to {MAX_HOPS}, not {max_hops}")
        return run(lambda: service.graph_paths(question, caller_of(ctx), max_hops))

    @server.tool(description="A grounded answer to a question about the documents, citing numbered sources [n]; "
                             "the sources and graph paths come with it.")
    def ask(question: str, ctx: Context, top_k: int = 5) -> dict:
        if not 1 <= top_k <= MAX_TOP_K:
            raise ToolError(f"top_k must be from 1 to {MAX_TOP_K}, not {top_k}")
        answer = run(lambda: service.ask(question, caller_of(ctx), top_k))
        if not answer.answer:
            raise ToolError(answer.error or "no answer could be made")
        return {"answer": answer_text_with_sources(answer), "answered_by": answer.model,
                "sources": public_sources(answer), "citations": [{k: c[k] for k in ("number", "doc_id", "chunk_id", "seq")}
                                                                 for c in answer.citations],
                "graph_paths": answer.graph_paths}

    @server.tool(description="A read-only SPARQL 1.1 query (SELECT, ASK, CONSTRUCT, DESCRIBE) over the knowledge "
                             "graph's RDF view: ontology classes and relations as IRIs (infra:DEPENDS_ON ...), inferred "
                             "facts included, provenance as rdf:Statement nodes with kg:mentionedIn <chunk>. Returns "
                             "SPARQL 1.1 JSON results.")
    def sparql(query: str, ctx: Context, timeout_s: float | None = None) -> dict:
        from resources.rdf_view import SparqlError

        try:
            return service.sparql(query, caller_of(ctx), timeout_s)
        except SparqlError as exc:
            raise ToolError(str(exc)) from None

    return server


class BearerGate:
    """ASGI middleware before the SDK's streamable-HTTP app: key check, per-key rate limit, access log."""

    def __init__(self, app, keys: KeyStore, require_keys: bool, requests_per_minute: int = 60):
        self.app, self.keys, self.require_keys = app, keys, require_keys
        self.rate = RateLimiter(requests_per_minute)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, key_id, status = time.perf_counter(), "-", 500
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            caller = caller_from_key(self.keys, bearer(headers), self.require_keys)
            key_id = caller.key_id
            self.rate.check(key_id)
        except ApiError as exc:
            status = exc.status
            body = json.dumps({"error": {"message": exc.message, "type": exc.kind, "code": exc.code}}).encode()
            extra = [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
            await send({"type": "http.response.start", "status": exc.status,
                        "headers": [(b"content-type", b"application/json"), *extra]})
            await send({"type": "http.response.body", "body": body})
        else:
            async def record(message):
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            await self.app(scope, receive, record)
        access_log.info("key=%s endpoint=%s %s status=%s latency_ms=%d sources=-", key_id, scope.get("method"),
                        scope.get("path"), status, (time.perf_counter() - started) * 1000)


def http_app(server: MCPServer, keys: KeyStore, require_keys: bool, host: str, requests_per_minute: int = 60):
    return BearerGate(server.streamable_http_app(host=host), keys, require_keys, requests_per_minute)
