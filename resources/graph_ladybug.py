"""The default graph backend: an embedded ladybug database file (a Kuzu-style engine)."""

from __future__ import annotations

from contextlib import contextmanager

from resources.graph_backend import GraphBackend
from resources.ontology import Ontology


class LadybugBackend(GraphBackend):
    """Embedded graph database (ladybug, a Kuzu-style engine): one node table per kind, one rel table per relation."""

    name = "ladybug"

    def __init__(self, ontology: Ontology, connection, batch_size: int = 500):
        super().__init__(ontology, batch_size)
        self.connection = connection

    def _execute(self, query: str, params: dict | None = None) -> list[dict]:
        result = self.connection.execute(query, params or {})
        results = result if isinstance(result, list) else [result]
        rows: list[dict] = []
        for res in results:
            columns = res.get_column_names()
            while res.has_next():
                rows.append(dict(zip(columns, res.get_next())))
        return rows

    def _read(self, query: str, params: dict | None = None) -> list[dict]:
        return self._execute(query, params)

    @contextmanager
    def _transaction(self):
        self._execute("BEGIN TRANSACTION")
        try:
            yield self._execute
        except BaseException:
            try:
                self._execute("ROLLBACK")
            except RuntimeError:
                pass  # a failed query already rolled ladybug back ("No active transaction"): keep the real error
            raise
        self._execute("COMMIT")

    def ensure_schema(self) -> None:
        self._execute("CREATE NODE TABLE IF NOT EXISTS Entity(id STRING PRIMARY KEY, label STRING, classes STRING[], "
                      "name STRING, aliases STRING[])")
        self._execute("CREATE NODE TABLE IF NOT EXISTS Chunk(id STRING PRIMARY KEY, doc_id STRING, doc_sha256 STRING, seq INT64)")
        self._execute("CREATE REL TABLE IF NOT EXISTS MENTIONED_IN(FROM Entity TO Chunk, doc_id STRING, aliases STRING[])")
        self._execute("CREATE REL TABLE IF NOT EXISTS HAS_ATTRIBUTE(FROM Entity TO Chunk, property STRING, value STRING, "
                      "doc_id STRING, sentence STRING)")
        for rel_type in sorted(self.ontology.relations):
            self._execute(f"CREATE REL TABLE IF NOT EXISTS {self._rel_type(rel_type)}"
                          "(FROM Entity TO Entity, chunk_id STRING, doc_id STRING, sentence STRING)")
