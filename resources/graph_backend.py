"""The graph backend interface and its shared logic, the same over both engines: per-document replacement of facts,
purge, integrity queries for the asset checks, multi-hop queries; subclasses supply _read/_write and the dialect.

Cypher cannot take labels or relationship types as parameters, so they are spliced into the query text; the only
strings ever spliced are class and relation names that the ontology declares (Ontology.require_class /
require_relation, identifiers only). Every value travels as a parameter."""

from __future__ import annotations

from collections import Counter, defaultdict
from contextlib import contextmanager
from typing import Any, Iterator

from resources.ontology import Ontology, OntologyError, normalize_name


FACT_PROPS = ("chunk_id", "doc_id", "sentence")


def remap_entities(facts: dict, mapping: dict[str, tuple[str, str]]) -> dict:
    """The facts with entity ids (and labels) replaced as mapping says: old id -> (new id, label)."""
    def new_id(old: str) -> str:
        return mapping[old][0] if old in mapping else old

    entities = [dict(e, id=new_id(e["id"]), label=mapping[e["id"]][1]) if e["id"] in mapping else e
                for e in facts["entities"]]
    relations = [dict(r, source=new_id(r["source"]), target=new_id(r["target"])) for r in facts["relations"]]
    attributes = [dict(a, entity=new_id(a["entity"])) for a in facts.get("attributes", [])]
    return dict(facts, entities=entities, relations=relations, attributes=attributes)


def _backtick(identifier: str) -> str:
    # Defence in depth: identifiers are already checked against the ontology and ^[A-Z][A-Za-z0-9_]*$.
    return "`" + identifier.replace("`", "``") + "`"


class GraphBackend:
    """Shared logic; subclasses supply _read/_write and the dialect-specific bits."""

    name = "abstract"

    def __init__(self, ontology: Ontology, batch_size: int = 500):
        self.ontology = ontology
        self.batch_size = batch_size

    # ------------------------------------------------------------------ dialect
    def _read(self, query: str, params: dict | None = None) -> list[dict]:
        raise NotImplementedError

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """Yields a callable tx(query, params) -> list[dict]; commits on success, rolls back on error."""
        raise NotImplementedError

    def ensure_schema(self) -> None:
        raise NotImplementedError

    def _rel_type(self, rel_type: str) -> str:
        return _backtick(self.ontology.require_relation(rel_type))

    def _set_class_labels(self, tx, label: str, ids: list[str]) -> None:
        """Neo4j adds the class hierarchy as node labels; ladybug keeps them in the classes property."""

    def _node(self, var: str, label: str) -> tuple[str, str, dict]:
        """(pattern, where-clause, params) matching an entity of the class label or a subclass."""
        self.ontology.require_class(label)
        return f"({var}:Entity)", f"${var}_class IN {var}.classes", {f"{var}_class": label}

    # ------------------------------------------------------------------ writes
    def _batched(self, tx, query: str, rows: list[dict]) -> None:
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            if batch:
                tx(query, {"rows": batch})

    def _validate_facts(self, facts: dict) -> None:
        """Refuse (before touching the store) any label or relation type outside the ontology."""
        ids = set()
        for entity in facts.get("entities", []):
            self.ontology.require_class(entity["label"])
            if not entity.get("id") or not entity.get("name"):
                raise OntologyError(f"entity {entity!r} needs an id and a name")
            ids.add(entity["id"])
        for rel in facts.get("relations", []):
            self.ontology.require_relation(rel["type"])
            if rel["source"] not in ids or rel["target"] not in ids:
                raise OntologyError(f"relation {rel!r} points to an entity that the facts do not define")
            if not rel.get("chunk_id"):
                raise OntologyError(f"relation {rel!r} has no chunk id (provenance)")
        for attr in facts.get("attributes", []):
            self.ontology.require_attribute(attr["property"])
            if attr["entity"] not in ids or not attr.get("chunk_id") or attr.get("value") in (None, ""):
                raise OntologyError(f"attribute {attr!r} needs an entity the facts define, a value and a chunk id")

    def _delete_document(self, tx, doc_id: str) -> dict:
        previous = [r["id"] for r in tx(
            "MATCH (e:Entity)-[:MENTIONED_IN]->(k:Chunk) WHERE k.doc_id = $doc_id RETURN DISTINCT e.id AS id",
            {"doc_id": doc_id})]
        removed_relations = 0
        for rel_type in sorted(self.ontology.relations):
            rows = tx(f"MATCH ()-[r:{self._rel_type(rel_type)}]->() WHERE r.doc_id = $doc_id RETURN count(r) AS n",
                      {"doc_id": doc_id})
            count = int(rows[0]["n"]) if rows else 0
            if count:
                tx(f"MATCH ()-[r:{self._rel_type(rel_type)}]->() WHERE r.doc_id = $doc_id DELETE r", {"doc_id": doc_id})
                removed_relations += count
        tx("MATCH (:Entity)-[a:HAS_ATTRIBUTE]->(:Chunk) WHERE a.doc_id = $doc_id DELETE a", {"doc_id": doc_id})
        rows = tx("MATCH (k:Chunk) WHERE k.doc_id = $doc_id RETURN count(k) AS n", {"doc_id": doc_id})
        removed_chunks = int(rows[0]["n"]) if rows else 0
        tx("MATCH (k:Chunk) WHERE k.doc_id = $doc_id DETACH DELETE k", {"doc_id": doc_id})
        return {"previous_entity_ids": previous, "removed_relations": removed_relations, "removed_chunks": removed_chunks}

    def _drop_orphans_and_refresh(self, tx, entity_ids: list[str]) -> int:
        """Delete entities among entity_ids that no chunk mentions any more; recompute the others' aliases."""
        if not entity_ids:
            return 0
        gone = tx(
            "MATCH (e:Entity) WHERE e.id IN $ids AND NOT EXISTS { MATCH (e)-[:MENTIONED_IN]->(:Chunk) } RETURN e.id AS id",
            {"ids": entity_ids})
        if gone:
            tx("MATCH (e:Entity) WHERE e.id IN $ids DETACH DELETE e", {"ids": [r["id"] for r in gone]})
        rows = tx(
            "MATCH (e:Entity)-[m:MENTIONED_IN]->(:Chunk) WHERE e.id IN $ids RETURN e.id AS id, e.name AS name, m.aliases AS aliases",
            {"ids": entity_ids})
        merged: dict[str, Counter] = defaultdict(Counter)
        names = {}
        for row in rows:
            names[row["id"]] = row["name"]
            merged[row["id"]].update(set(row["aliases"] or []))
        updates = []
        for eid, name in names.items():
            forms = merged[eid]
            if forms and name not in forms:
                # the document that gave the entity its name changed or left: take the best form still mentioned
                # (most mentions, capitalised, shortest), as extraction picks a canonical name
                name = max(forms, key=lambda s: (forms[s], s != s.lower(), -len(s), s))
            updates.append({"id": eid, "name": name, "aliases": sorted(a for a in forms if a != name)})
        self._batched(tx, "UNWIND $rows AS row MATCH (e:Entity {id: row.id}) SET e.name = row.name, e.aliases = row.aliases",
                      updates)
        return len(gone)

    def _same_entities_elsewhere(self, tx, entities: list[dict]) -> dict[str, tuple[str, str]]:
        """id -> (stored id, label) for entities the graph already holds under a compatible class: 'Software:x'
        from a host table and 'Application:x' from a service page are one thing, and keep the more specific
        class. (Ids embed the class the first document saw; the label follows the most specific evidence.)"""
        candidates: dict[str, list[str]] = {}
        for entity in entities:
            label, key = entity["label"], entity["id"].split(":", 1)[-1]
            related = [c for c in self.ontology.classes if c != label and
                       (self.ontology.is_a(c, label) or self.ontology.is_a(label, c))]
            candidates[entity["id"]] = [f"{c}:{key}" for c in related]
        wanted = sorted({i for ids in candidates.values() for i in ids} | {e["id"] for e in entities})
        stored = {r["id"]: r["label"] for r in tx("MATCH (e:Entity) WHERE e.id IN $ids RETURN e.id AS id, e.label AS label",
                                                   {"ids": wanted})}
        mapping = {}
        for entity in entities:
            if entity["id"] in stored:  # same id: keep the more specific class either side saw
                if self.ontology.specificity(stored[entity["id"]]) > self.ontology.specificity(entity["label"]) \
                        and self.ontology.is_a(stored[entity["id"]], entity["label"]):
                    mapping[entity["id"]] = (entity["id"], stored[entity["id"]])
                continue
            found = [i for i in candidates[entity["id"]] if i in stored]
            if not found:
                continue
            target = max(found, key=lambda i: self.ontology.specificity(stored[i]))
            label = max((stored[target], entity["label"]), key=self.ontology.specificity)
            mapping[entity["id"]] = (target, label)
        return mapping

    def replace_document(self, doc_id: str, facts: dict, chunks: list[dict] | None = None) -> dict:
        """Atomically swap one document's facts: its old provenance, edges and now-orphaned entities go,
        the new ones are merged in. Entities that other documents still mention survive; an entity another
        document holds under a compatible class is the same entity (summary['id_map'] says which ids moved)."""
        self._validate_facts(facts)
        with self._transaction() as tx:
            mapping = self._same_entities_elsewhere(tx, facts["entities"])
        if mapping:
            facts = remap_entities(facts, mapping)
        chunk_meta = {c["chunk_id"]: c for c in chunks or []}
        used_chunks = sorted({cid for e in facts["entities"] for cid in e["chunk_ids"]} |
                             {r["chunk_id"] for r in facts["relations"]} |
                             {a["chunk_id"] for a in facts.get("attributes", [])})
        chunk_rows = [{"id": cid, "doc_id": doc_id, "doc_sha256": chunk_meta.get(cid, {}).get("doc_sha256", ""),
                       "seq": int(chunk_meta.get(cid, {}).get("seq", -1))} for cid in used_chunks]
        entity_rows = [{"id": e["id"], "label": e["label"], "classes": self.ontology.labels_of(e["label"]),
                        "name": e["name"], "aliases": sorted(e.get("aliases", []))} for e in facts["entities"]]
        # every surface form this document used (its name included): an entity's aliases are the union over
        # the documents still mentioning it, less its name (which moves on when no document uses it any more)
        mention_rows = [{"entity": e["id"], "chunk": cid, "doc_id": doc_id,
                         "aliases": sorted({e["name"], *e.get("aliases", [])})}
                        for e in facts["entities"] for cid in e["chunk_ids"]]
        by_type: dict[str, list[dict]] = defaultdict(list)
        for rel in facts["relations"]:
            by_type[rel["type"]].append({"source": rel["source"], "target": rel["target"], "chunk_id": rel["chunk_id"],
                                         "doc_id": doc_id, "sentence": rel.get("sentence", "")})
        with self._transaction() as tx:
            removed = self._delete_document(tx, doc_id)
            self._batched(tx, "UNWIND $rows AS row MERGE (k:Chunk {id: row.id}) "
                              "SET k.doc_id = row.doc_id, k.doc_sha256 = row.doc_sha256, k.seq = row.seq", chunk_rows)
            self._batched(tx, "UNWIND $rows AS row MERGE (e:Entity {id: row.id}) ON CREATE SET e.name = row.name "
                              "SET e.label = row.label, e.classes = row.classes", entity_rows)
            by_label: dict[str, list[str]] = defaultdict(list)
            for row in entity_rows:
                by_label[row["label"]].append(row["id"])
            for label, ids in sorted(by_label.items()):
                self._set_class_labels(tx, label, ids)
            self._batched(tx, "UNWIND $rows AS row MATCH (e:Entity {id: row.entity}), (k:Chunk {id: row.chunk}) "
                              "MERGE (e)-[m:MENTIONED_IN]->(k) SET m.doc_id = row.doc_id, m.aliases = row.aliases",
                          mention_rows)
            for rel_type, rows in sorted(by_type.items()):
                self._batched(tx, f"UNWIND $rows AS row MATCH (s:Entity {{id: row.source}}), (t:Entity {{id: row.target}}) "
                                  f"MERGE (s)-[r:{self._rel_type(rel_type)} {{chunk_id: row.chunk_id}}]->(t) "
                                  f"SET r.doc_id = row.doc_id, r.sentence = row.sentence", rows)
            attribute_rows = sorted({(a["entity"], a["chunk_id"], a["property"], str(a["value"]), a.get("sentence", ""))
                                     for a in facts.get("attributes", [])})
            self._batched(tx, "UNWIND $rows AS row MATCH (e:Entity {id: row.entity}), (k:Chunk {id: row.chunk}) "
                              "MERGE (e)-[a:HAS_ATTRIBUTE {property: row.property, value: row.value}]->(k) "
                              "SET a.doc_id = row.doc_id, a.sentence = row.sentence",
                          [{"entity": e, "chunk": c, "property": p, "value": v, "sentence": t, "doc_id": doc_id}
                           for e, c, p, v, t in attribute_rows])
            touched = sorted(set(removed["previous_entity_ids"]) | {e["id"] for e in entity_rows})
            removed_entities = self._drop_orphans_and_refresh(tx, touched)
        return {"doc_id": doc_id, "id_map": {k: v[0] for k, v in mapping.items() if k != v[0]},
                "entities": len(entity_rows), "relations": sum(len(r) for r in by_type.values()),
                "attributes": len(attribute_rows), "chunks": len(chunk_rows), "removed_relations": removed["removed_relations"],
                "removed_chunks": removed["removed_chunks"], "removed_entities": removed_entities}

    def purge_document(self, doc_id: str) -> dict:
        """Remove a deleted document's facts; entities only it mentioned go too."""
        with self._transaction() as tx:
            removed = self._delete_document(tx, doc_id)
            removed_entities = self._drop_orphans_and_refresh(tx, removed["previous_entity_ids"])
        return {"doc_id": doc_id, "removed_relations": removed["removed_relations"],
                "removed_chunks": removed["removed_chunks"], "removed_entities": removed_entities}

    # ------------------------------------------------------------------ reads
    def relation_rows(self, doc_id: str | None = None) -> list[dict]:
        """Every fact edge (optionally one document's) with its endpoints' ids and classes."""
        out = []
        for rel_type in sorted(self.ontology.relations):
            where = "WHERE r.doc_id = $doc_id " if doc_id is not None else ""
            rows = self._read(
                f"MATCH (s:Entity)-[r:{self._rel_type(rel_type)}]->(t:Entity) {where}"
                "RETURN s.id AS source, s.label AS source_label, t.id AS target, t.label AS target_label, "
                "r.chunk_id AS chunk_id, r.doc_id AS doc_id, r.sentence AS sentence",
                {"doc_id": doc_id} if doc_id is not None else {})
            out.extend({"type": rel_type, **row} for row in rows)
        return out

    def document_facts(self, doc_id: str) -> dict:
        """The stored facts of one document, in graph_facts' shape (aliases are the merged, graph-wide ones)."""
        rows = self._read(
            "MATCH (e:Entity)-[:MENTIONED_IN]->(k:Chunk) WHERE k.doc_id = $doc_id "
            "RETURN e.id AS id, e.label AS label, e.name AS name, e.aliases AS aliases, k.id AS chunk_id",
            {"doc_id": doc_id})
        entities: dict[str, dict] = {}
        for row in rows:
            entity = entities.setdefault(row["id"], {"id": row["id"], "label": row["label"], "name": row["name"],
                                                     "aliases": sorted(row["aliases"] or []), "chunk_ids": []})
            entity["chunk_ids"].append(row["chunk_id"])
        for entity in entities.values():
            entity["chunk_ids"].sort()
        relations = [{"source": r["source"], "type": r["type"], "target": r["target"], "chunk_id": r["chunk_id"],
                      "sentence": r["sentence"]} for r in self.relation_rows(doc_id)]
        attributes = self.attribute_rows(doc_id)
        return {"doc_id": doc_id, "entities": sorted(entities.values(), key=lambda e: e["id"]),
                "relations": sorted(relations, key=lambda r: (r["source"], r["type"], r["target"], r["chunk_id"])),
                "attributes": attributes}

    def attribute_rows(self, doc_id: str | None = None, entity_id: str | None = None) -> list[dict]:
        """Literal-valued facts (entity, property, value, chunk_id), optionally of one document or one entity."""
        wheres, params = [], {}
        if doc_id is not None:
            wheres.append("a.doc_id = $doc_id")
            params["doc_id"] = doc_id
        if entity_id is not None:
            wheres.append("e.id = $entity_id")
            params["entity_id"] = entity_id
        where = f"WHERE {' AND '.join(wheres)} " if wheres else ""
        rows = self._read(f"MATCH (e:Entity)-[a:HAS_ATTRIBUTE]->(k:Chunk) {where}"
                          "RETURN e.id AS entity, a.property AS property, a.value AS value, k.id AS chunk_id, "
                          "a.doc_id AS doc_id", params)
        return sorted(({"entity": r["entity"], "property": r["property"], "value": r["value"], "chunk_id": r["chunk_id"]}
                       for r in rows), key=lambda r: (r["entity"], r["property"], r["value"], r["chunk_id"]))

    def entity(self, entity_id: str) -> dict | None:
        rows = self._read("MATCH (e:Entity) WHERE e.id = $id RETURN e.id AS id, e.label AS label, e.name AS name, "
                          "e.aliases AS aliases, e.classes AS classes", {"id": entity_id})
        return rows[0] if rows else None

    def find_entities(self, text: str, label: str | None = None) -> list[dict]:
        """Entities whose id, name or alias names text (case and punctuation aside), optionally of a class;
        an alias the ontology's known individuals declare counts too ('Infra Team' -> 'Platform Team')."""
        if label is not None:
            self.ontology.require_class(label)
        wanted = {text.strip().lower(), normalize_name(text)}
        wanted |= {normalize_name(name) for _, name in self.ontology.known_names(text, label)}
        wanted.discard("")  # punctuation only ("???") names nothing
        rows = self._read("MATCH (e:Entity) RETURN e.id AS id, e.label AS label, e.name AS name, e.aliases AS aliases, "
                          "e.classes AS classes")
        hits = []
        for row in rows:
            if label is not None and label not in (row["classes"] or []):
                continue
            forms = {row["id"].lower(), *[normalize_name(f or "") for f in [row["name"], *(row["aliases"] or [])]]}
            if wanted & forms:
                hits.append(row)
        return sorted(hits, key=lambda r: r["id"])

    def stats(self) -> dict:
        entities = self._read("MATCH (e:Entity) RETURN count(e) AS n")[0]["n"]
        chunks = self._read("MATCH (k:Chunk) RETURN count(k) AS n")[0]["n"]
        relations = {t: self._read(f"MATCH ()-[r:{self._rel_type(t)}]->() RETURN count(r) AS n")[0]["n"]
                     for t in sorted(self.ontology.relations)}
        return {"entities": int(entities), "chunks": int(chunks), "relations": {k: int(v) for k, v in relations.items()}}

    # ------------------------------------------------------------------ integrity (asset checks)
    def orphan_nodes(self, entity_ids: list[str] | None = None, doc_ids: list[str] | None = None) -> list[str]:
        """Entities no chunk mentions, and chunks that mention nothing: both must not exist.

        Scoped (the per-batch check): only these entities and these documents' chunks; unscoped = full audit."""
        if entity_ids is None and doc_ids is None:
            entities = self._read("MATCH (e:Entity) WHERE NOT EXISTS { MATCH (e)-[:MENTIONED_IN]->(:Chunk) } RETURN e.id AS id")
            chunks = self._read("MATCH (k:Chunk) WHERE NOT EXISTS { MATCH (:Entity)-[:MENTIONED_IN]->(k) } RETURN k.id AS id")
        else:
            entities = self._read("MATCH (e:Entity) WHERE e.id IN $ids AND NOT EXISTS { MATCH (e)-[:MENTIONED_IN]->(:Chunk) } "
                                  "RETURN e.id AS id", {"ids": list(entity_ids or [])}) if entity_ids else []
            chunks = self._read("MATCH (k:Chunk) WHERE k.doc_id IN $docs AND NOT EXISTS { MATCH (:Entity)-[:MENTIONED_IN]->(k) } "
                                "RETURN k.id AS id", {"docs": list(doc_ids or [])}) if doc_ids else []
        return sorted([f"Entity:{r['id']}" for r in entities] + [f"Chunk:{r['id']}" for r in chunks])

    def untraceable_edges(self, doc_ids: list[str] | None = None) -> list[dict]:
        """Fact edges whose chunk_id is not a stored chunk of the same document mentioning both endpoints.

        Scoped to the edges of these documents (the per-batch check); unscoped = full audit."""
        bad = []
        scope = "r.doc_id IN $docs AND " if doc_ids is not None else ""
        for rel_type in sorted(self.ontology.relations):
            rows = self._read(
                f"MATCH (s:Entity)-[r:{self._rel_type(rel_type)}]->(t:Entity) "
                f"WHERE {scope}NOT EXISTS {{ MATCH (s)-[:MENTIONED_IN]->(k:Chunk)<-[:MENTIONED_IN]-(t) "
                "WHERE k.id = r.chunk_id AND k.doc_id = r.doc_id } "
                "RETURN s.id AS source, t.id AS target, r.chunk_id AS chunk_id, r.doc_id AS doc_id",
                {"docs": list(doc_ids)} if doc_ids is not None else None)
            bad.extend({"type": rel_type, **row} for row in rows)
        return bad

    def domain_range_violations(self, doc_id: str | None = None) -> list[dict]:
        return [row for row in self.relation_rows(doc_id)
                if not self.ontology.domain_range_ok(row["type"], row["source_label"], row["target_label"])]

    # ------------------------------------------------------------------ queries
    def multi_hop(self, start_label: str, hops: list[tuple[str, str]], end: str | None = None) -> list[dict]:
        """Paths (start_label)-[hop1]->(label1)-[hop2]->...; end: id, name or alias of the last node.

        multi_hop("Application", [("RUNS_ON", "Server"), ("MANAGED_BY", "Team")], end="Platform Team")
        answers "which applications run on servers managed by the Platform Team?", each row with the
        names along the path and the chunk ids that support every hop.
        """
        if not hops:
            raise ValueError("multi_hop needs at least one hop")
        patterns, wheres, params = [], [], {}
        pattern, where, extra = self._node("n0", start_label)
        patterns.append(pattern)
        wheres.append(where)
        params.update(extra)
        for i, (rel_type, label) in enumerate(hops, start=1):
            pattern, where, extra = self._node(f"n{i}", label)
            patterns.append(f"-[r{i}:{self._rel_type(rel_type)}]->" + pattern)
            wheres.append(where)
            params.update(extra)
        last = len(hops)
        if end is not None:
            candidates = [e["id"] for e in self.find_entities(end, hops[-1][1])]
            if not candidates:
                return []
            wheres.append(f"n{last}.id IN $end_ids")
            params["end_ids"] = candidates
        returns = ", ".join(
            [f"n{i}.id AS id{i}, n{i}.name AS name{i}" for i in range(last + 1)]
            + [f"r{i}.chunk_id AS chunk{i}" for i in range(1, last + 1)])
        query = f"MATCH {''.join(patterns)} WHERE {' AND '.join(wheres)} RETURN {returns}"
        paths: dict[tuple, dict] = {}
        for row in self._read(query, params):
            key = tuple(row[f"id{i}"] for i in range(last + 1))
            path = paths.setdefault(key, {"ids": list(key), "names": [row[f"name{i}"] for i in range(last + 1)],
                                          "evidence": [set() for _ in hops]})
            for i in range(1, last + 1):
                path["evidence"][i - 1].add(row[f"chunk{i}"])
        return [dict(p, evidence=[sorted(e) for e in p["evidence"]]) for _, p in sorted(paths.items())]

    def applications_on_servers_managed_by(self, team: str) -> list[dict]:
        """Applications running on servers that the team manages (the canonical two-hop question)."""
        return self.multi_hop("Application", [("RUNS_ON", "Server"), ("MANAGED_BY", "Team")], end=team)
