"""Vector store: Milvus through pymilvus' MilvusClient (a milvus-lite file by default, a server URI by config)."""

from __future__ import annotations

import os
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
    """A Milvus filter string literal. Only backslash and double quote are escaped: the filter parser
    rejects \\u escapes, so non-ASCII text stays as it is (milvus-lite has no filter templates)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'



class MilvusStore(ConfigurableResource):
    """One collection of chunk vectors, primary key = deterministic chunk id."""

    uri: str = Field(default_factory=default_milvus_uri, description="milvus-lite .db file path or http(s)://host:port")
    token: str = ""
    collection: str = "document_chunks"

    @property
    def is_lite(self) -> bool:
        return not self.uri.startswith(("http://", "https://", "tcp://", "unix:"))

    @contextmanager
    def client(self) -> Iterator["MilvusClient"]:  # noqa: F821
        """A connection for one unit of work: milvus-lite lets only one process hold a .db, so close promptly."""
        from pymilvus import MilvusClient

        if self.is_lite:
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
        client = MilvusClient(uri=self.uri, token=self.token) if self.token else MilvusClient(uri=self.uri)
        try:
            yield client
        finally:
            client.close()

    def ensure_collection(self, client, dim: int) -> None:
        from pymilvus import DataType, MilvusClient

        if client.has_collection(self.collection):
            fields = client.describe_collection(self.collection)["fields"]
            existing = next(f for f in fields if f["name"] == "vector")
            have = int(existing.get("params", {}).get("dim", dim))
            if have != dim:
                raise ValueError(
                    f"Milvus collection {self.collection!r} holds {have}-d vectors but the embedder makes {dim}-d ones; "
                    "use another collection name or drop the old one"
                )
            client.load_collection(self.collection)
            return
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("chunk_id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=2048)
        schema.add_field("doc_sha256", DataType.VARCHAR, max_length=64)
        schema.add_field("seq", DataType.INT64)
        schema.add_field("text", DataType.VARCHAR, max_length=65535)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type="FLAT" if self.is_lite else "AUTOINDEX", metric_type="COSINE")
        client.create_collection(self.collection, schema=schema, index_params=index)
        client.load_collection(self.collection)

    def _ready(self, client) -> bool:
        if not client.has_collection(self.collection):
            return False
        client.load_collection(self.collection)
        return True

    def chunk_ids(self, client, doc_id: str) -> set[str]:
        if not self._ready(client):
            return set()
        rows = client.query(self.collection, filter=f"doc_id == {_quote(doc_id)}", output_fields=["chunk_id"])
        return {row["chunk_id"] for row in rows}

    def rows(self, client, doc_id: str, fields: list[str]) -> list[dict]:
        if not self._ready(client):
            return []
        return list(client.query(self.collection, filter=f"doc_id == {_quote(doc_id)}", output_fields=fields))

    def count(self, client, doc_id: str | None = None) -> int:
        if not self._ready(client):
            return 0
        flt = f"doc_id == {_quote(doc_id)}" if doc_id is not None else ""
        result = client.query(self.collection, filter=flt, output_fields=["count(*)"])
        return int(result[0]["count(*)"])

    def upsert(self, client, rows: list[dict], batch: int = 512) -> None:
        for start in range(0, len(rows), batch):
            client.upsert(self.collection, rows[start : start + batch])

    def delete_document(self, client, doc_id: str, keep: set[str] | None = None) -> int:
        """Remove a document's vectors, except the chunk ids in keep. Returns how many went."""
        if not self._ready(client):
            return 0
        flt = f"doc_id == {_quote(doc_id)}"
        if keep:
            flt += f" and chunk_id not in [{', '.join(_quote(cid) for cid in sorted(keep))}]"
        stale = self.chunk_ids(client, doc_id) - (keep or set())
        if not stale:
            return 0
        client.delete(self.collection, filter=flt)
        return len(stale)

    def doc_ids(self, client) -> set[str]:
        if not self._ready(client):
            return set()
        ids: set[str] = set()
        iterator = client.query_iterator(self.collection, batch_size=1000, filter="", output_fields=["doc_id"])
        try:
            while batch := iterator.next():
                ids.update(row["doc_id"] for row in batch)
        finally:
            iterator.close()
        return ids

    def search(self, client, vector: list[float], limit: int = 5) -> list[dict]:
        if not self._ready(client):
            return []
        hits = client.search(
            self.collection, data=[vector], limit=limit, output_fields=["doc_id", "seq", "text"], anns_field="vector"
        )[0]
        return [{"chunk_id": h["id"] if "id" in h else h.get("chunk_id"), "score": h["distance"], **h["entity"]} for h in hits]
