"""Graph store: the knowledge graph in Neo4j (official driver) or, by default, an embedded ladybug database.

Both backends sit behind one interface (GraphBackend): per-document replacement of facts, purge,
integrity queries for the asset checks, and multi-hop queries. Graph model, identical in both:

    (:Entity {id, label, classes, name, aliases})   one node per resolved entity; in Neo4j it also
                                                    carries its ontology class and superclasses as labels
    (:Chunk {id, doc_id, doc_sha256, seq})          provenance: a chunk some fact was extracted from
    (Entity)-[:MENTIONED_IN {doc_id, aliases}]->(Chunk)   aliases: the surface forms that document used
    (Entity)-[:<RELATION> {chunk_id, doc_id, sentence}]->(Entity)   one edge per supporting chunk
    (Entity)-[:HAS_ATTRIBUTE {property, value, doc_id, sentence}]->(Chunk)   a literal-valued fact (datatype
                                                    property of the ontology) and the chunk that states it

The backends live beside this module: the shared interface in graph_backend.py, ladybug in graph_ladybug.py,
Neo4j in graph_neo4j.py; this module is the Dagster resource that opens one.
"""

from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Literal

from dagster import ConfigurableResource
from pydantic import Field

from resources.graph_backend import GraphBackend
from resources.graph_ladybug import LadybugBackend
from resources.graph_neo4j import Neo4jBackend, neo4j_transient_errors
from resources.milvus import default_data_dir
from resources.ontology import Ontology, default_ontology_dir
from resources.ontology_loading import load_ontology


def default_graph_path() -> str:
    return os.environ.get("DOCPLATFORM_GRAPH_PATH", str(default_data_dir() / "graph.lbug"))


class GraphStoreUnavailable(RuntimeError):
    """The graph store could not be opened or reached: the embedded file held by another process past
    lock_timeout_s, or the Neo4j server unreachable on every attempt. Transient: the graph step retries it."""


class GraphStore(ConfigurableResource):
    """Where the knowledge graph lives: embedded ladybug file (default) or a Neo4j server."""

    backend: Literal["ladybug", "neo4j"] = Field(
        default_factory=lambda: os.environ.get("DOCPLATFORM_GRAPH_BACKEND", "ladybug"),
        description="'ladybug' (embedded, default) or 'neo4j'.")
    path: str = Field(default_factory=default_graph_path, description="ladybug database file.")
    uri: str = Field(default_factory=lambda: os.environ.get("NEO4J_URI", "bolt://localhost:7687"))
    user: str = Field(default_factory=lambda: os.environ.get("NEO4J_USER", "neo4j"))
    password: str = Field(default_factory=lambda: os.environ.get("NEO4J_PASSWORD", ""))
    database: str = Field(default_factory=lambda: os.environ.get("NEO4J_DATABASE", "neo4j"))
    ontology_dir: str = Field(default_factory=default_ontology_dir, description="Folder of the OWL ontology and SHACL shapes.")
    batch_size: int = 500
    lock_timeout_s: float = Field(
        default=120.0, description="ladybug: how long to wait for another process to release the database file.")
    retries: int = Field(default=3, ge=0, description="Neo4j: connection attempts after the first, with backoff.")
    backoff_s: float = Field(default=1.0, ge=0, description="Neo4j: wait before retry n is backoff_s * 2**(n-1).")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="Neo4j: TCP connection timeout per attempt.")

    @property
    def location(self) -> str:
        """What the error messages name: the embedded file or the Neo4j URI."""
        return f"Neo4j at {self.uri}" if self.backend == "neo4j" else f"graph database {self.path}"

    def ontology(self) -> Ontology:
        return load_ontology(self.ontology_dir)

    def _open_embedded(self, ladybug):
        """The embedded database; one process at a time holds the file, so wait (bounded) for another to finish."""
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                return ladybug.Database(self.path)
            except RuntimeError as exc:
                # "Could not set lock on file : <path> (Lock is held by PID n)". Only the word 'lock' outside the
                # path counts: other errors ("Permission denied" on /var/locks/..., "... block ...") fail at once.
                message = str(exc)
                for form in {self.path, str(Path(self.path).absolute()), str(Path(self.path).resolve())}:
                    message = message.replace(form, "")
                locked = re.search(r"\block\b", message, re.IGNORECASE) is not None
                if not locked or time.monotonic() >= deadline:
                    if locked:
                        raise GraphStoreUnavailable(f"graph database {self.path} is held by another process "
                                                    f"(waited {self.lock_timeout_s:g}s): {exc}") from exc
                    raise
                time.sleep(0.25)

    def _connect_neo4j(self, driver) -> None:
        """Check the server answers, retrying with exponential backoff; then a clear GraphStoreUnavailable."""
        import logging

        transient = neo4j_transient_errors()
        started = time.monotonic()
        for attempt in range(self.retries + 1):
            try:
                driver.verify_connectivity()
                return
            except transient as exc:
                if attempt == self.retries:
                    raise GraphStoreUnavailable(
                        f"Neo4j at {self.uri} is unreachable after {attempt + 1} attempt(s) over "
                        f"{time.monotonic() - started:.1f}s: {type(exc).__name__}: {exc}") from exc
                wait = self.backoff_s * 2 ** attempt
                logging.getLogger(__name__).warning(f"Neo4j at {self.uri} not reachable ({exc}); retrying in {wait:g} s")
                time.sleep(wait)

    @contextmanager
    def session(self) -> Iterator[GraphBackend]:
        """A backend for one unit of work; the embedded file is held only while the block runs."""
        ontology = self.ontology()
        if self.backend == "neo4j":
            from neo4j import GraphDatabase

            driver = GraphDatabase.driver(self.uri, auth=(self.user, self.password),
                                          connection_timeout=self.connect_timeout_s)
            try:
                self._connect_neo4j(driver)
                backend = Neo4jBackend(ontology, driver, self.database, self.batch_size)
                try:
                    backend.ensure_schema()
                    yield backend
                finally:
                    backend.close()
            finally:
                driver.close()
            return
        import ladybug

        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        database = self._open_embedded(ladybug)
        try:
            connection = ladybug.Connection(database)
        except BaseException:
            database.close()  # else the file stays locked for as long as the error (and its traceback) lives
            raise
        try:
            backend = LadybugBackend(ontology, connection, self.batch_size)
            backend.ensure_schema()
            yield backend
        finally:
            connection.close()
            database.close()
