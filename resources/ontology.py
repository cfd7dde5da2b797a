"""The ontology of the knowledge graph: any folder of OWL/RDFS files (Turtle, RDF/XML, N3), loaded with rdflib.

The ontology is the allow-list of the knowledge graph: only its classes, object properties and datatype
properties may become graph labels, relationship types and attribute names. Whatever the naming style in the
files (camelCase, snake_case, kebab-case, UPPER), names map deterministically to Cypher-safe identifiers:

    classes              PascalCase      software_application -> SoftwareApplication
    object properties    UPPER_SNAKE     operatedBy -> OPERATED_BY, runs-on -> RUNS_ON
    datatype properties  lower_snake     runwayLength -> runway_length

Those identifiers are the only strings ever spliced into Cypher text; all values travel as parameters.

No file names are fixed: every *.ttl/*.owl/*.rdf/*.n3/*.nt file of the folder is read. Files holding SHACL
shapes (sh:NodeShape / sh:PropertyShape) are the shapes; individuals typed with an ontology class are the known
entities (canonical names and aliases for resolution). Annotations in the kg: namespace (kg:phrase,
kg:namePattern, ...) are optional extraction hints; labels, comments and the hierarchy are enough.

This module holds the model (Ontology and its class, relation and attribute views) and the naming rules;
reading a folder into it is resources/ontology_loading.py (load_ontology, parse_ontology).
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from rdflib import RDF, XSD, Graph, Literal, Namespace, URIRef

ONTOLOGY_DIR = Path(__file__).resolve().parent.parent / "ontology_schemas"
INFRA = Namespace("https://docplatform.local/ontology/infra#")
KG = Namespace("https://docplatform.local/ontology/kg#")
SH = Namespace("http://www.w3.org/ns/shacl#")
ENTITY_NS = "urn:docplatform:entity:"
CHUNK_NS = "urn:docplatform:chunk:"


IDENTIFIER = re.compile(r"^[A-Z][A-Za-z0-9_]*$")
ATTRIBUTE_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
_NUMERIC_TYPES = {"integer", "int", "long", "short", "nonNegativeInteger", "positiveInteger", "decimal", "double",
                  "float", "gYear"}


class OntologyError(ValueError):
    """A label, relation type or fact that the ontology does not allow, or an ontology that cannot be used."""


def default_ontology_dir() -> str:
    return os.environ.get("DOCPLATFORM_ONTOLOGY_DIR", str(ONTOLOGY_DIR))


# ---------------------------------------------------------------------------------------------- identifiers

def name_words(local_name: str) -> list[str]:
    """Words of a local name in any naming style: 'operatedBy', 'operated_by', 'OPERATED-BY', 'HTTPServer'."""
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", local_name)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", text)
    return [w for w in re.split(r"[^A-Za-z0-9]+", text) if w]


def _ascii_words(text: str) -> list[str]:
    return name_words(unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode())


def _hashed(prefix: str, text: str) -> str:
    return f"{prefix}{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def _identifier(local_name: str, join, prefix: str) -> str:
    """Words of the name joined in one style; a name without ASCII words gets a stable hashed identifier, one that
    would start with a digit gets the prefix."""
    words = _ascii_words(local_name)
    if not words:
        return _hashed(prefix, local_name)
    ident = join(words)
    return ident if ident[0].isalpha() else prefix + ident


def class_identifier(local_name: str) -> str:
    """PascalCase graph label: software_application -> SoftwareApplication; '서버' -> C_1a2b3c4d."""
    return _identifier(local_name, lambda words: "".join(w[:1].upper() + w[1:] for w in words), "C_")


def relation_identifier(local_name: str) -> str:
    """UPPER_SNAKE relationship type: operatedBy -> OPERATED_BY, runs-on -> RUNS_ON, RUNS_ON stays."""
    return _identifier(local_name, lambda words: "_".join(w.upper() for w in words), "R_")


def attribute_identifier(local_name: str) -> str:
    """lower_snake attribute name: runwayLength -> runway_length."""
    return _identifier(local_name, lambda words: "_".join(w.lower() for w in words), "a_")


def humanize(local_name: str) -> str:
    return " ".join(w.lower() for w in name_words(local_name)) or local_name


# ---------------------------------------------------------------------------------------------- model

@dataclass(frozen=True)
class ClassInfo:
    name: str  # graph label (PascalCase identifier)
    uri: URIRef
    ancestors: tuple[str, ...]  # the class itself first, then every superclass up to the root
    local_name: str = ""
    label: str = ""  # human label: rdfs:label in English if there is one, else the split local name
    labels: tuple[str, ...] = ()  # every label, preferred and alternative label, any language
    comment: str = ""
    keywords: tuple[str, ...] = ()  # lower-case words that name the class in text ("server", "host", "서버")
    name_patterns: tuple[str, ...] = ()  # kg:namePattern hints
    headwords: tuple[str, ...] = ()  # kg:headword hints
    ner_labels: tuple[str, ...] = ()  # kg:nerLabel hints


@dataclass(frozen=True)
class RelationInfo:
    name: str  # relationship type (UPPER_SNAKE identifier)
    uri: URIRef
    domain: str  # the first of domains (for display); "" when any class may be the source
    range: str
    local_name: str = ""
    label: str = ""
    labels: tuple[str, ...] = ()
    comment: str = ""
    phrases: tuple[str, ...] = ()
    inverse_phrases: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()  # rdfs:domain (owl:unionOf gives several); empty = any class
    ranges: tuple[str, ...] = ()
    # OWL characteristics, honoured at query time (graph paths, SPARQL): relation identifiers, never URIs
    transitive: bool = False  # owl:TransitiveProperty
    symmetric: bool = False  # owl:SymmetricProperty
    inverse_of: str = ""  # owl:inverseOf (either direction of the axiom)
    super_properties: tuple[str, ...] = ()  # rdfs:subPropertyOf, transitively, nearest first


@dataclass(frozen=True)
class AttributeInfo:
    name: str  # attribute name (lower_snake identifier)
    uri: URIRef
    domain: str | None
    datatype: str  # xsd local name: string, integer, decimal, date, ...
    local_name: str = ""
    label: str = ""
    labels: tuple[str, ...] = ()
    comment: str = ""
    phrases: tuple[str, ...] = ()
    # what the values look like when the file names no xsd type ("number", "year", "date", "text"); "" = datatype
    literal_kind: str = ""
    declared_as: str = "owl:DatatypeProperty"  # or "owl:ObjectProperty" for an object property with a literal range

    @property
    def numeric(self) -> bool:
        return self.datatype in _NUMERIC_TYPES or self.literal_kind in ("number", "year")

    @property
    def value_kind(self) -> str:
        """'date', 'year', 'number' or 'text': what the values look like, from the xsd type or, where the file
        names none, from the range class's name."""
        kind = (self.literal_kind or self.datatype).lower()
        if kind in ("date", "datetime"):
            return "date"
        if kind in ("year", "gyear"):
            return "year"
        return "number" if self.numeric else "text"


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
    fingerprint: str = ""  # sha256 of the files: caches keyed on it follow edits
    attributes: dict[str, AttributeInfo] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    # what loading had to infer, as RDFS would (see OntologyLoadReport); shown in the graph assets' metadata
    load_report: "OntologyLoadReport" = None  # type: ignore[assignment]

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

    def require_attribute(self, name: str) -> str:
        if not isinstance(name, str) or name not in self.attributes or not ATTRIBUTE_IDENTIFIER.match(name):
            raise OntologyError(f"attribute {name!r} is not a datatype property of the ontology "
                                f"({', '.join(sorted(self.attributes)) or 'none'})")
        return name

    # ------------------------------------------------------------------ hierarchy
    def is_a(self, label: str, ancestor: str) -> bool:
        info = self.classes.get(label)
        return bool(info) and ancestor in info.ancestors

    def labels_of(self, label: str) -> list[str]:
        """The class and all its superclasses (the Neo4j labels of a node of that class)."""
        return list(self.classes[self.require_class(label)].ancestors)

    def fits(self, label: str, allowed: tuple[str, ...]) -> bool:
        """Whether an entity of class label may stand where one of allowed is expected (empty = any class)."""
        return label in self.classes and (not allowed or any(self.is_a(label, a) for a in allowed))

    def domain_range_ok(self, rel_type: str, source_label: str, target_label: str) -> bool:
        rel = self.relations.get(rel_type)
        return bool(rel) and self.fits(source_label, rel.domains) and self.fits(target_label, rel.ranges)

    def attribute_ok(self, name: str, label: str) -> bool:
        attr = self.attributes.get(name)
        return bool(attr) and (attr.domain is None or self.is_a(label, attr.domain))

    def specificity(self, label: str) -> int:
        return len(self.classes[label].ancestors) if label in self.classes else 0

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
    def attribute_literal(self, name: str, value: str) -> Literal:
        """The typed literal of an attribute value; an ill-typed value stays ill-typed so SHACL reports it."""
        attr = self.attributes[name]
        return Literal(str(value), datatype=XSD[attr.datatype] if attr.datatype else XSD.string)

    def facts_graph(self, facts: dict) -> Graph:
        """RDF data graph of one document's facts, in the terms the shapes speak (the ontology's own URIs)."""
        data = Graph()
        for entity in facts.get("entities", []):
            node = entity_uri(entity["id"])
            label = entity.get("label")
            cls = self.classes[label].uri if label in self.classes else INFRA[quote(str(label), safe="")]
            data.add((node, RDF.type, cls))
            if entity.get("name") is not None:
                data.add((node, KG.name, Literal(entity["name"], datatype=XSD.string)))
            for alias in entity.get("aliases", []):
                data.add((node, KG.alias, Literal(alias, datatype=XSD.string)))
            for chunk_id in entity.get("chunk_ids", []):
                data.add((node, KG.mentionedIn, URIRef(CHUNK_NS + quote(chunk_id, safe=""))))
        for rel in facts.get("relations", []):
            rel_type = rel.get("type")
            predicate = self.relations[rel_type].uri if rel_type in self.relations else INFRA[quote(str(rel_type), safe="")]
            data.add((entity_uri(rel["source"]), predicate, entity_uri(rel["target"])))
        for attr in facts.get("attributes", []):
            name = attr.get("property")
            if name in self.attributes:
                data.add((entity_uri(attr["entity"]), self.attributes[name].uri, self.attribute_literal(name, attr["value"])))
            else:
                data.add((entity_uri(attr["entity"]), KG[quote(str(name), safe="")], Literal(str(attr.get("value")))))
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
