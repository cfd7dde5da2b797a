"""The Neo4j graph backend (official driver), and the driver errors that mean the server is gone or busy."""

from __future__ import annotations

from contextlib import contextmanager

from resources.graph_backend import GraphBackend, _backtick
from resources.ontology import Ontology


class Neo4jBackend(GraphBackend):
    """Neo4j through the official driver: uniqueness constraints, batched UNWIND/MERGE in one write transaction."""

    name = "neo4j"

    def __init__(self, ontology: Ontology, driver, database: str, batch_size: int = 500):
        super().__init__(ontology, batch_size)
        self.driver = driver
        self.database = database
        # One session for the unit of work: it chains bookmarks, so reads see this session's writes (clusters too).
        self.session = driver.session(database=database)

    def close(self) -> None:
        self.session.close()

    def _read(self, query: str, params: dict | None = None) -> list[dict]:
        return self.session.execute_read(lambda tx: [record.data() for record in tx.run(query, params or {})])

    @contextmanager
    def _transaction(self):
        with self.session.begin_transaction() as tx:
            def run(query: str, params: dict | None = None) -> list[dict]:
                return [record.data() for record in tx.run(query, params or {})]

            yield run
            tx.commit()

    def _node(self, var: str, label: str) -> tuple[str, str, dict]:
        # Real labels here (indexable, idiomatic): the class name, checked against the ontology.
        return f"({var}:{_backtick(self.ontology.require_class(label))})", "true", {}

    def _set_class_labels(self, tx, label: str, ids: list[str]) -> None:
        labels = ":".join(_backtick(name) for name in self.ontology.labels_of(label))
        self._batched(tx, f"UNWIND $rows AS row MATCH (e:Entity {{id: row.id}}) SET e:{labels}", [{"id": i} for i in ids])

    def ensure_schema(self) -> None:
        statements = [
            "CREATE CONSTRAINT kg_entity_id IF NOT EXISTS FOR (e:Entity) REQUIRE e.id IS UNIQUE",
            "CREATE CONSTRAINT kg_chunk_id IF NOT EXISTS FOR (k:Chunk) REQUIRE k.id IS UNIQUE",
            "CREATE INDEX kg_chunk_doc IF NOT EXISTS FOR (k:Chunk) ON (k.doc_id)",
        ]
        for rel_type in sorted(self.ontology.relations):
            statements.append(f"CREATE INDEX kg_{rel_type.lower()}_doc IF NOT EXISTS "
                              f"FOR ()-[r:{self._rel_type(rel_type)}]-() ON (r.doc_id)")
        for statement in statements:
            self.session.run(statement).consume()


def neo4j_transient_errors() -> tuple[type[BaseException], ...]:
    """The Neo4j driver's errors that mean 'server gone or busy', not 'bad query'."""
    from neo4j.exceptions import ServiceUnavailable, SessionExpired, TransientError

    return ServiceUnavailable, SessionExpired, TransientError
