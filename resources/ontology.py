"""The infrastructure ontology (OWL in Turtle) and its SHACL shapes, loaded with rdflib.

The ontology is the allow-list of the knowledge graph: only its class and relation names may become
graph labels and relationship types (they are the only strings ever spliced into Cypher text).
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

from rdflib import RDF, RDFS, XSD, Graph, Literal, Namespace, URIRef
from rdflib.namespace import OWL, SKOS

ONTOLOGY_DIR = Path(__file__).resolve().parent.parent / "ontology_schemas"
INFRA = Namespace("https://docplatform.local/ontology/infra#")
KG = Namespace("https://docplatform.local/ontology/kg#")
ENTITY_NS = "urn:docplatform:entity:"
CHUNK_NS = "urn:docplatform:chunk:"

IDENTIFIER = re.compile(r"^[A-Z][A-Za-z0-9_]*$")
# Labels the graph store uses for itself; an ontology class may not take them.
RESERVED_LABELS = {"Chunk", "MENTIONED_IN"}


class OntologyError(ValueError):
    """A label, relation type or fact that the ontology does not allow."""


def default_ontology_dir() -> str:
    return os.environ.get("DOCPLATFORM_ONTOLOGY_DIR", str(ONTOLOGY_DIR))


@dataclass(frozen=True)
class ClassInfo:
    name: str
    uri: URIRef
    ancestors: tuple[str, ...]  # the class itself first, then every superclass up to the root
    keywords: tuple[str, ...] = ()  # skos:altLabel, lower case
    name_patterns: tuple[str, ...] = ()
    headwords: tuple[str, ...] = ()
    ner_labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class RelationInfo:
    name: str
    uri: URIRef
    domain: str
    range: str
    phrases: tuple[str, ...] = ()
    inverse_phrases: tuple[str, ...] = ()


@dataclass(frozen=True)
class KnownEntity:
    label: str
    name: str
    aliases: tuple[str, ...]


@dataclass
class Ontology:
    directory: Path
    graph: Graph
    shapes: Graph
    classes: dict[str, ClassInfo]
    relations: dict[str, RelationInfo]
    known_entities: list[KnownEntity] = field(default_factory=list)
    fingerprint: str = ""  # sha256 of the Turtle files: caches keyed on it follow edits

    # ------------------------------------------------------------------ allow-list
    def require_class(self, label: str) -> str:
        """The label if it is an ontology class usable as a graph label, else OntologyError."""
        if not isinstance(label, str) or label not in self.classes or not IDENTIFIER.match(label):
            raise OntologyError(f"label {label!r} is not a class of the ontology ({', '.join(sorted(self.classes))})")
        return label

    def require_relation(self, rel_type: str) -> str:
        if not isinstance(rel_type, str) or rel_type not in self.relations or not IDENTIFIER.match(rel_type):
            raise OntologyError(
                f"relation type {rel_type!r} is not a relation of the ontology ({', '.join(sorted(self.relations))})"
            )
        return rel_type

    # ------------------------------------------------------------------ hierarchy
    def is_a(self, label: str, ancestor: str) -> bool:
        info = self.classes.get(label)
        return bool(info) and ancestor in info.ancestors

    def labels_of(self, label: str) -> list[str]:
        """The class and all its superclasses (the Neo4j labels of a node of that class)."""
        return list(self.classes[self.require_class(label)].ancestors)

    def domain_range_ok(self, rel_type: str, source_label: str, target_label: str) -> bool:
        rel = self.relations.get(rel_type)
        return bool(rel) and self.is_a(source_label, rel.domain) and self.is_a(target_label, rel.range)

    def known_names(self, text: str, label: str | None = None) -> list[tuple[str, str]]:
        """(label, canonical name) of the known individuals that text names (by label or alias)."""
        key = normalize_name(text)
        return sorted({(k.label, k.name) for k in self.known_entities
                       if (label is None or self.is_a(k.label, label))
                       and key in {normalize_name(f) for f in (k.name, *k.aliases)}})

    @property
    def extractable_classes(self) -> list[ClassInfo]:
        """Classes with a way to be recognised in text (keywords, name patterns or headwords)."""
        return [c for c in self.classes.values() if c.keywords or c.name_patterns or c.headwords]

    # ------------------------------------------------------------------ SHACL
    def facts_graph(self, facts: dict) -> Graph:
        """RDF data graph of one document's facts, in the terms the shapes speak."""
        data = Graph()
        for entity in facts.get("entities", []):
            node = entity_uri(entity["id"])
            label = entity.get("label")
            cls = self.classes[label].uri if label in self.classes else INFRA[quote(str(label), safe="")]
            data.add((node, RDF.type, cls))
            if entity.get("name") is not None:
                data.add((node, INFRA.name, Literal(entity["name"], datatype=XSD.string)))
            for alias in entity.get("aliases", []):
                data.add((node, INFRA.alias, Literal(alias, datatype=XSD.string)))
            for chunk_id in entity.get("chunk_ids", []):
                data.add((node, KG.mentionedIn, URIRef(CHUNK_NS + quote(chunk_id, safe=""))))
        for rel in facts.get("relations", []):
            rel_type = rel.get("type")
            predicate = self.relations[rel_type].uri if rel_type in self.relations else INFRA[quote(str(rel_type), safe="")]
            data.add((entity_uri(rel["source"]), predicate, entity_uri(rel["target"])))
        return data

    def validate_shacl(self, facts: dict) -> tuple[bool, str, int]:
        """(conforms, report text, number of violations): pyshacl, inference none, ontology as ont_graph."""
        from pyshacl import validate

        conforms, report_graph, report_text = validate(
            self.facts_graph(facts),
            shacl_graph=self.shapes,
            ont_graph=self.graph,
            inference="none",
            abort_on_first=False,
            allow_warnings=False,
        )
        SH = Namespace("http://www.w3.org/ns/shacl#")
        violations = len(set(report_graph.subjects(RDF.type, SH.ValidationResult)))
        return bool(conforms), report_text, violations


def normalize_name(text: str) -> str:
    """Resolution key of a name: case, punctuation and a leading article do not distinguish names.

    Letters and digits of any script are kept ("결제 Team" and "보안 Team" are two names, "Café" is not "Caf");
    for ASCII names the key is the same as it always was."""
    key = re.sub(r"[\W_]+", "-", unicodedata.normalize("NFKC", text).casefold()).strip("-")
    return re.sub(r"^(the|a|an)-", "", key)


def entity_uri(entity_id: str) -> URIRef:
    return URIRef(ENTITY_NS + quote(str(entity_id), safe=""))


def _local(uri: URIRef) -> str:
    text = str(uri)
    return re.split(r"[#/]", text)[-1]


def _strings(graph: Graph, subject, predicate) -> tuple[str, ...]:
    return tuple(sorted({str(o) for o in graph.objects(subject, predicate) if isinstance(o, Literal)}))


def _ancestors(graph: Graph, cls: URIRef) -> tuple[str, ...]:
    order, seen, frontier = [], set(), [cls]
    while frontier:
        current = frontier.pop(0)
        if current in seen:
            continue
        seen.add(current)
        order.append(_local(current))
        frontier.extend(sorted(o for o in graph.objects(current, RDFS.subClassOf) if isinstance(o, URIRef)))
    return tuple(order)


def parse_ontology(directory: Path) -> Ontology:
    directory = Path(directory)
    graph = Graph()
    graph.parse(directory / "infrastructure.ttl", format="turtle")
    shapes = Graph()
    shapes.parse(directory / "shapes.ttl", format="turtle")

    classes: dict[str, ClassInfo] = {}
    for cls in sorted(set(graph.subjects(RDF.type, OWL.Class))):
        if not isinstance(cls, URIRef):
            continue
        name = _local(cls)
        if not IDENTIFIER.match(name) or name in RESERVED_LABELS:
            raise OntologyError(f"ontology class {cls} cannot be a graph label (need ^[A-Z][A-Za-z0-9_]*$, not reserved)")
        classes[name] = ClassInfo(
            name=name,
            uri=cls,
            ancestors=_ancestors(graph, cls),
            keywords=tuple(k.lower() for k in _strings(graph, cls, SKOS.altLabel)),
            name_patterns=_strings(graph, cls, KG.namePattern),
            headwords=_strings(graph, cls, KG.headword),
            ner_labels=_strings(graph, cls, KG.nerLabel),
        )
    for info in classes.values():
        for pattern in info.name_patterns:
            re.compile(pattern)

    relations: dict[str, RelationInfo] = {}
    for prop in sorted(set(graph.subjects(RDF.type, OWL.ObjectProperty))):
        if not isinstance(prop, URIRef) or not str(prop).startswith(str(INFRA)):
            continue  # kg:mentionedIn is provenance, not a domain relation
        name = _local(prop)
        if not IDENTIFIER.match(name) or name in RESERVED_LABELS:
            raise OntologyError(f"ontology relation {prop} cannot be a relationship type")
        domain, range_ = graph.value(prop, RDFS.domain), graph.value(prop, RDFS.range)
        if domain is None or range_ is None or _local(domain) not in classes or _local(range_) not in classes:
            raise OntologyError(f"ontology relation {prop} needs an rdfs:domain and rdfs:range that are classes")
        relations[name] = RelationInfo(
            name=name,
            uri=prop,
            domain=_local(domain),
            range=_local(range_),
            phrases=_strings(graph, prop, KG.phrase),
            inverse_phrases=_strings(graph, prop, KG.inversePhrase),
        )

    known: list[KnownEntity] = []
    known_path = directory / "known_entities.ttl"
    if known_path.exists():
        individuals = Graph()
        individuals.parse(known_path, format="turtle")
        for subject, cls in sorted(individuals.subject_objects(RDF.type)):
            label = _local(cls)
            name = individuals.value(subject, RDFS.label)
            if label not in classes or name is None:
                raise OntologyError(f"known entity {subject} needs an ontology class and an rdfs:label")
            known.append(KnownEntity(label=label, name=str(name), aliases=_strings(individuals, subject, SKOS.altLabel)))
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.ttl")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return Ontology(directory=directory, graph=graph, shapes=shapes, classes=classes, relations=relations,
                    known_entities=known, fingerprint=digest.hexdigest())


@lru_cache(maxsize=8)
def _cached(directory: str, stamp: tuple) -> Ontology:
    return parse_ontology(Path(directory))


def load_ontology(directory: str | Path | None = None) -> Ontology:
    """The ontology in directory (default: ontology_schemas/ or $DOCPLATFORM_ONTOLOGY_DIR), cached per file change."""
    path = Path(directory or default_ontology_dir()).resolve()
    stamp = tuple(sorted((p.name, p.stat().st_mtime_ns) for p in path.glob("*.ttl")))
    return _cached(str(path), stamp)
