"""Vector store: Milvus through pymilvus' MilvusClient (a milvus-lite file by default, a server URI by config)."""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from dagster import ConfigurableResource
from pydantic import Field


def default_data_dir() -> Path:
    return Path(os.environ.get("DOCPLATFORM_DATA_DIR", Path.cwd() / ".data")).resolve()


def default_milvus_uri() -> str:
    return os.environ.get("DOCPLATFORM_MILVUS_URI", str(default_data_dir() / "milvus.db"))


def _quote(value: str) -> str:
    """A Milvus filter string literal. Backslash, double quote and line breaks (a raw one ends the literal) are
    escaped: the filter parser rejects \\u and \\x escapes, so other text stays as it is (milvus-lite has no
    filter templates)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") + '"'



class MilvusUnavailable(RuntimeError):
    """Milvus could not be reached after every retry."""


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _in(field: str, values) -> str:
    return f"{field} in [{', '.join(_quote(v) for v in values)}]"


class MilvusStore(ConfigurableResource):
    """Chunk vectors (primary key = deterministic chunk id; dense vector + BM25 sparse vector of the text)
    and, beside them, one state row per indexed document (content sha256 + stage fingerprint)."""

    uri: str = Field(default_factory=default_milvus_uri, description="milvus-lite .db file path or http(s)://host:port")
    token: str = ""
    collection: str = Field(default_factory=lambda: os.environ.get("DOCPLATFORM_MILVUS_COLLECTION", "document_chunks"))
    retries: int = Field(default=5, description="Connection attempts before failing (server URIs).")
    backoff_s: float = Field(default=1.0, description="First wait between attempts; doubles each time.")
    timeout_s: float = Field(default=10.0, description="Per-attempt connection timeout.")
    state_path: str = Field(default="", description="SQLite file of per-document state; empty = beside the .db "
                                                    "(lite) or under $DOCPLATFORM_DATA_DIR (server).")
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    search_ef: int = 64

    @property
    def is_lite(self) -> bool:
        return not self.uri.startswith(("http://", "https://", "tcp://", "unix:"))

    @property
    def state_file(self) -> Path:
        """SQLite file with one row per indexed document. Not in Milvus: milvus-lite admits one process per .db,
        and the sensor must read the state while a run writes. For a server, point state_path at storage that
        every run and the daemon share."""
        if self.state_path:
            return Path(self.state_path)
        if self.is_lite:
            return Path(f"{self.uri}.{self.collection}.state.sqlite")
        host = "".join(ch if ch.isalnum() else "-" for ch in self.uri.split("://", 1)[-1])
        return default_data_dir() / f"milvus-state-{host}-{self.collection}.sqlite"

    @contextmanager
    def _state_db(self):
        import sqlite3

        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.state_file, timeout=60)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS documents (doc_id TEXT PRIMARY KEY, sha256 TEXT, fingerprint TEXT, "
                   "chunks INTEGER, updated INTEGER)")
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        try:
            with db:
                yield db
        finally:
            db.close()

    def _read_state(self, sql: str) -> list[tuple]:
        """Rows of a query on the state file; none when it (or the table) does not exist yet. Creates nothing."""
        import sqlite3

        if not self.state_file.is_file():
            return []
        db = sqlite3.connect(self.state_file, timeout=60)
        try:
            return db.execute(sql).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            db.close()

    def recorded_embedder(self) -> str:
        """The embedder identity ("multilingual-e5@...") this collection's vectors were made with, as recorded in its
        state file when the collection was created or checked; "" when none is (Embedder model="auto" reads it)."""
        rows = self._read_state("SELECT value FROM meta WHERE key = 'embedder'")
        return rows[0][0] if rows else ""

    def has_indexed_documents(self) -> bool:
        return bool(self._read_state("SELECT 1 FROM documents LIMIT 1"))

    @contextmanager
    def client(self) -> Iterator["MilvusClient"]:  # noqa: F821
        """A connection for one unit of work: milvus-lite lets only one process hold a .db, so close promptly.

        A server that does not answer is retried with exponential backoff, then a clear MilvusUnavailable."""
        from pymilvus import MilvusClient

        if self.is_lite:
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
        # milvus-lite starts a local server per client: no short connect timeout for it, but retries all the same
        kwargs = {"uri": self.uri} | ({} if self.is_lite else {"timeout": self.timeout_s}) \
            | ({"token": self.token} if self.token else {})
        # milvus-lite: another process (e.g. the previous run, still exiting) may hold the file a while longer
        attempts = max(1, self.retries) + (3 if self.is_lite else 0)
        started, last = time.monotonic(), None
        for attempt in range(attempts):
            try:
                client = MilvusClient(**kwargs)
                break
            except Exception as exc:  # noqa: BLE001  (pymilvus raises MilvusException and grpc errors)
                last = exc
                if attempt + 1 < attempts:
                    wait = min(self.backoff_s * (2 ** attempt), 10.0)
                    logging.getLogger(__name__).warning(f"Milvus at {self.uri} not reachable ({exc}); retrying in {wait:g} s")
                    time.sleep(wait)
        else:
            raise MilvusUnavailable(f"Milvus at {self.uri} is unreachable after {attempts} attempt(s) over "
                                    f"{time.monotonic() - started:.0f} s: {type(last).__name__}: {last}") from last
        try:
            yield client
        finally:
            client.close()

    # ---------------------------------------------------------------------------------- schema

    def _recorded(self, client) -> dict:
        """The collection's recorded embedder, dimension and BM25 analyzer (collection properties)."""
        properties = client.describe_collection(self.collection).get("properties") or {}
        return {key.split(".", 1)[1]: value for key, value in properties.items() if key.startswith("docplatform.")}

    def check_embedder(self, client, embedder_id: str) -> None:
        """Refuse to mix vectors of two embedders in one collection (both MiniLM and multilingual-e5 are 384-d, so
        the dimension alone would not tell)."""
        if not embedder_id or not client.has_collection(self.collection):
            return
        stored = self._recorded(client).get("embedder", "")
        if stored != embedder_id:
            raise ValueError(
                f"Milvus collection {self.collection!r} at {self.uri} holds vectors of embedder "
                f"{stored or '(not recorded: created by an earlier version)'} but the configured embedder is {embedder_id}. "
                "Either set the embedder back (DOCPLATFORM_EMBEDDER / embedder.model), or use another collection "
                "(milvus.collection / DOCPLATFORM_MILVUS_COLLECTION; its documents are then all embedded anew), or drop "
                "this collection (client.drop_collection) and re-ingest.")

    def ensure_collection(self, client, dim: int, embedder_id: str = "") -> None:
        from pymilvus import DataType, Function, FunctionType, MilvusClient

        from resources.text_analysis import BM25_ANALYZER

        if client.has_collection(self.collection):
            fields = {f["name"]: f for f in client.describe_collection(self.collection)["fields"]}
            if "sparse" not in fields or "text_sha" not in fields:
                raise ValueError(
                    f"Milvus collection {self.collection!r} at {self.uri} has the old schema (no BM25 sparse field / "
                    "text hash); drop it (or use another collection name) and re-ingest")
            analyzer = self._recorded(client).get("bm25_analyzer", "")
            if "bm25_text" not in fields or analyzer != BM25_ANALYZER:
                raise ValueError(
                    f"Milvus collection {self.collection!r} at {self.uri} was created without Korean full-text terms "
                    f"(BM25 field bm25_text analyzed as {BM25_ANALYZER!r}; it has {analyzer or 'none'}); drop it (or use "
                    "another collection name) and re-ingest")
            self.check_embedder(client, embedder_id)
            have = int(fields["vector"].get("params", {}).get("dim", dim))
            if have != dim:
                raise ValueError(
                    f"Milvus collection {self.collection!r} holds {have}-d vectors but the embedder makes {dim}-d ones; "
                    "use another collection name or drop the old one"
                )
            self._record_embedder(embedder_id)
            client.load_collection(self.collection)
            return
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                            description=f"docplatform chunks; embedder {embedder_id or '?'}, {dim}-d")
        schema.add_field("chunk_id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=2048)
        schema.add_field("doc_sha256", DataType.VARCHAR, max_length=64)
        schema.add_field("doc_type", DataType.VARCHAR, max_length=16)
        schema.add_field("seq", DataType.INT64)
        schema.add_field("text", DataType.VARCHAR, max_length=65535)  # as written, for display
        # what BM25 reads: Korean as morphemes (resources/text_analysis.py), other text unchanged
        schema.add_field("bm25_text", DataType.VARCHAR, max_length=65535, enable_analyzer=True)
        schema.add_field("text_sha", DataType.VARCHAR, max_length=64)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_function(Function(name="text_bm25", function_type=FunctionType.BM25,
                                     input_field_names=["bm25_text"], output_field_names=["sparse"]))
        index = client.prepare_index_params()
        if self.is_lite:
            index.add_index(field_name="vector", index_type="FLAT", metric_type="COSINE")
        else:
            index.add_index(field_name="vector", index_type="HNSW", metric_type="COSINE",
                            params={"M": self.hnsw_m, "efConstruction": self.hnsw_ef_construction})
        index.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        # scalar indexes: per-document reads/deletes and the text-hash cache never scan the whole collection
        index.add_index(field_name="doc_id", index_type="INVERTED")
        index.add_index(field_name="text_sha", index_type="INVERTED")
        client.create_collection(self.collection, schema=schema, index_params=index,
                                 properties={"docplatform.embedder": embedder_id, "docplatform.dimension": str(dim),
                                             "docplatform.bm25_analyzer": BM25_ANALYZER})
        self._record_embedder(embedder_id)
        client.load_collection(self.collection)

    def _record_embedder(self, embedder_id: str) -> None:
        if embedder_id:
            with self._state_db() as db:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('embedder', ?)", (embedder_id,))

    def _ready(self, client) -> bool:
        if not client.has_collection(self.collection):
            return False
        client.load_collection(self.collection)
        return True

    def _query_all(self, client, collection: str, flt: str, fields: list[str]) -> list[dict]:
        rows: list[dict] = []
        iterator = client.query_iterator(collection, batch_size=4000, filter=flt, output_fields=fields)
        try:
            while batch := iterator.next():
                rows.extend(batch)
        finally:
            iterator.close()
        return rows

    # ---------------------------------------------------------------------------------- chunks

    def chunk_ids(self, client, doc_id: str) -> set[str]:
        return {row["chunk_id"] for row in self.rows(client, doc_id, ["chunk_id"])}

    def rows(self, client, doc_id: str, fields: list[str]) -> list[dict]:
        return self.rows_for_documents(client, [doc_id], fields)

    def rows_for_documents(self, client, doc_ids: list[str], fields: list[str]) -> list[dict]:
        if not doc_ids or not self._ready(client):
            return []
        rows = []
        for group in _chunks(sorted(doc_ids), 200):
            rows += self._query_all(client, self.collection, _in("doc_id", group), fields)
        return rows

    def chunk_index(self, client, doc_ids: list[str]) -> dict[str, int]:
        """{chunk_id: seq} of the stored chunks of these documents."""
        return {row["chunk_id"]: int(row["seq"]) for row in self.rows_for_documents(client, doc_ids, ["chunk_id", "seq"])}

    def vectors_by_text_sha(self, client, shas: set[str]) -> dict[str, list[float]]:
        """The embedding cache: a stored vector for each text hash that any document already has."""
        found: dict[str, list[float]] = {}
        if not shas or not self._ready(client):
            return found
        for group in _chunks(sorted(shas), 1000):
            for row in client.query(self.collection, filter=_in("text_sha", group), output_fields=["text_sha", "vector"],
                                    limit=16384):
                found.setdefault(row["text_sha"], row["vector"])
        return found

    def vectors_by_id(self, client, chunk_ids: list[str]) -> dict[str, list[float]]:
        found: dict[str, list[float]] = {}
        for group in _chunks(sorted(chunk_ids), 1000):
            for row in client.query(self.collection, filter=_in("chunk_id", group), output_fields=["chunk_id", "vector"]):
                found[row["chunk_id"]] = row["vector"]
        return found

    def contains_text(self, client, doc_id: str, phrase: str) -> bool:
        """Whether a stored chunk of the document contains the phrase (case-sensitive substring)."""
        if not self._ready(client):
            return False
        pattern = "%" + phrase.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return bool(client.query(self.collection, filter=f"doc_id == {_quote(doc_id)} and text like {_quote(pattern)}",
                                 output_fields=["chunk_id"], limit=1))

    def count(self, client, doc_id: str | None = None) -> int:
        if not self._ready(client):
            return 0
        flt = f"doc_id == {_quote(doc_id)}" if doc_id is not None else ""
        result = client.query(self.collection, filter=flt, output_fields=["count(*)"])
        return int(result[0]["count(*)"])

    def upsert(self, client, rows: list[dict], batch: int = 2000) -> None:
        from resources.text_analysis import bm25_terms

        rows = [row if "bm25_text" in row else {**row, "bm25_text": bm25_terms(row["text"])} for row in rows]
        for group in _chunks(rows, batch):
            client.upsert(self.collection, group)

    def delete_ids(self, client, chunk_ids: list[str]) -> int:
        for group in _chunks(sorted(chunk_ids), 1000):
            client.delete(self.collection, filter=_in("chunk_id", group))
        return len(chunk_ids)

    def delete_document(self, client, doc_id: str, keep: set[str] | None = None) -> int:
        """Remove a document's vectors, except the chunk ids in keep. Returns how many went."""
        if not self._ready(client):
            return 0
        stale = self.chunk_ids(client, doc_id) - (keep or set())
        return self.delete_ids(client, sorted(stale))

    def delete_documents(self, client, doc_ids: list[str]) -> int:
        """Remove these documents' vectors and state rows (the purge of deleted documents)."""
        removed = 0
        if self._ready(client):
            removed = len(self.rows_for_documents(client, doc_ids, ["chunk_id"]))
            for group in _chunks(sorted(doc_ids), 200):
                client.delete(self.collection, filter=_in("doc_id", group))
        with self._state_db() as db:
            db.executemany("DELETE FROM documents WHERE doc_id = ?", [(d,) for d in doc_ids])
        return removed

    def doc_ids(self, client) -> set[str]:
        if not self._ready(client):
            return set()
        return {row["doc_id"] for row in self._query_all(client, self.collection, "", ["doc_id"])}

    # ---------------------------------------------------------------------------------- document state

    def set_document_states(self, client, states: list[dict]) -> None:
        """Record documents as indexed with this content hash and stage fingerprint (after their vectors are written)."""
        now = int(time.time())
        with self._state_db() as db:
            db.executemany("INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?)",
                           [(s["doc_id"], s["sha256"], s["fingerprint"], int(s.get("chunks", 0)), now) for s in states])

    def finalize_document_states(self, doc_ids: list[str], pending_prefix: str) -> int:
        """Drop the pending prefix from these documents' fingerprints (every store now holds them). Returns how many."""
        with self._state_db() as db:
            return sum(db.execute("UPDATE documents SET fingerprint = substr(fingerprint, ?) WHERE doc_id = ? "
                                  "AND substr(fingerprint, 1, ?) = ?",
                                  (len(pending_prefix) + 1, d, len(pending_prefix), pending_prefix)).rowcount
                       for d in doc_ids)

    def document_states(self, client=None) -> dict[str, dict]:
        """{doc_id: {"sha256", "fingerprint", "chunks", "updated"}} of every indexed document (no Milvus connection)."""
        if not self.state_file.exists():
            return {}
        with self._state_db() as db:
            return {d: {"sha256": sha, "fingerprint": fp, "chunks": n, "updated": t}
                    for d, sha, fp, n, t in db.execute("SELECT doc_id, sha256, fingerprint, chunks, updated FROM documents")}

    # ---------------------------------------------------------------------------------- search

    def search(self, client, vector: list[float], limit: int = 5, filter: str = "") -> list[dict]:
        if not self._ready(client):
            return []
        hits = client.search(
            self.collection, data=[vector], limit=limit, filter=filter,
            output_fields=["doc_id", "seq", "text"], anns_field="vector",
            search_params={"metric_type": "COSINE", "params": {} if self.is_lite else {"ef": max(self.search_ef, limit)}},
        )[0]
        return [{"chunk_id": h["id"] if "id" in h else h.get("chunk_id"), "score": h["distance"], **h["entity"]} for h in hits]

    def bm25_search(self, client, text: str, limit: int = 5, filter: str = "") -> list[dict]:
        """Full-text only (Milvus BM25 function). milvus-lite reports BM25 scores negated (lower = better)."""
        if not self._ready(client):
            return []
        from resources.text_analysis import bm25_terms

        hits = client.search(self.collection, data=[bm25_terms(text)], anns_field="sparse", limit=limit, filter=filter,
                             output_fields=["doc_id", "seq", "text", "doc_type"], search_params={"metric_type": "BM25"})[0]
        return [{"chunk_id": h["id"] if "id" in h else h.get("chunk_id"), "score": h["distance"], **h["entity"]} for h in hits]

    def hybrid_search(self, client, text: str, vector: list[float], limit: int = 5, filter: str = "",
                      candidates: int = 50, rrf_k: int = 60) -> list[dict]:
        """BM25 full-text (Milvus BM25 function on `text`) + dense cosine, fused by reciprocal rank (RRF)."""
        from pymilvus import AnnSearchRequest, RRFRanker

        from resources.text_analysis import bm25_terms

        if not self._ready(client):
            return []
        dense_params = {"metric_type": "COSINE", "params": {} if self.is_lite else {"ef": max(self.search_ef, candidates)}}
        requests = [
            AnnSearchRequest(data=[bm25_terms(text)], anns_field="sparse", param={"metric_type": "BM25"}, limit=candidates,
                             expr=filter or None),
            AnnSearchRequest(data=[vector], anns_field="vector", param=dense_params, limit=candidates, expr=filter or None),
        ]
        hits = client.hybrid_search(self.collection, requests, RRFRanker(rrf_k), limit=limit,
                                    output_fields=["doc_id", "seq", "text", "doc_type"])[0]
        return [{"chunk_id": h["id"] if "id" in h else h.get("chunk_id"), "score": h["distance"], **h["entity"]} for h in hits]
