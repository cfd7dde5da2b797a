"""Loading an ontology folder: every OWL/RDFS file parsed with rdflib (imports followed), classes, object and
datatype properties, individuals and SHACL shapes read into an Ontology; what RDFS would infer (undeclared domain or
range terms, literal ranges) is inferred and reported (OntologyLoadReport), or refused in strict mode."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from rdflib import RDF, RDFS, XSD, BNode, Graph, Literal, Namespace, URIRef
from rdflib.collection import Collection
from rdflib.namespace import OWL, SKOS

from resources.ontology import (
    _NUMERIC_TYPES,
    IDENTIFIER,
    INFRA,
    KG,
    SH,
    AttributeInfo,
    ClassInfo,
    KnownEntity,
    Ontology,
    OntologyError,
    RelationInfo,
    attribute_identifier,
    class_identifier,
    default_ontology_dir,
    humanize,
    relation_identifier,
)


ONTOLOGY_SUFFIXES = {".ttl": "turtle", ".owl": None, ".rdf": "xml", ".n3": "n3", ".nt": "nt", ".jsonld": "json-ld"}
# Names the graph store uses for itself (compared case-insensitively: ladybug table names are): node labels
# for classes, table names for relations.
RESERVED_CLASS_NAMES = {"chunk", "attribute"}
RESERVED_RELATION_NAMES = {"chunk", "entity", "mentioned_in", "attribute", "has_attribute"}
_META_TYPES = {OWL.Class, RDFS.Class, OWL.ObjectProperty, OWL.DatatypeProperty, OWL.AnnotationProperty,
               OWL.Ontology, RDF.Property, OWL.FunctionalProperty, OWL.InverseFunctionalProperty,
               OWL.TransitiveProperty, OWL.SymmetricProperty, OWL.AsymmetricProperty, OWL.ReflexiveProperty,
               OWL.IrreflexiveProperty, OWL.Restriction, OWL.AllDisjointClasses, OWL.NamedIndividual,
               OWL.AllDifferent, OWL.Axiom}
_PLATFORM_PROPERTIES = {INFRA.name, INFRA.alias, KG.name, KG.alias, KG.mentionedIn}


# ---------------------------------------------------------------------------------------------- parsing

def _local(uri) -> str:
    text = str(uri)
    return re.split(r"[#/:]", text.rstrip("#/"))[-1]


def _strings(graph: Graph, subject, *predicates) -> tuple[str, ...]:
    return tuple(sorted({str(o).strip() for p in predicates for o in graph.objects(subject, p)
                         if isinstance(o, Literal) and str(o).strip()}))


def _english_label(graph: Graph, subject, fallback: str) -> str:
    """rdfs:label / skos:prefLabel in English (or without a language tag), else any label, else the local name."""
    candidates = [o for p in (RDFS.label, SKOS.prefLabel) for o in graph.objects(subject, p) if isinstance(o, Literal)]
    for lang_ok in (lambda l: l in (None, "") or str(l).lower().startswith("en"), lambda l: True):
        chosen = sorted(str(o).strip() for o in candidates if lang_ok(o.language) and str(o).strip())
        if chosen:
            return chosen[0]
    return fallback


def _ancestors(graph: Graph, cls: URIRef, names: dict[URIRef, str]) -> tuple[str, ...]:
    order, seen, frontier = [], set(), [cls]
    while frontier:
        current = frontier.pop(0)
        if current in seen:
            continue
        seen.add(current)
        if current in names:
            order.append(names[current])
        frontier.extend(sorted(o for o in graph.objects(current, RDFS.subClassOf) if isinstance(o, URIRef)))
    return tuple(order)


def _class_refs(graph: Graph, node, names: dict[URIRef, str], what: str) -> tuple[str, ...]:
    """Class ids of an rdfs:domain/range value: a class, or an owl:unionOf list of classes."""
    if node is None or node == OWL.Thing or node == RDFS.Resource:
        return ()
    if isinstance(node, BNode):
        union = graph.value(node, OWL.unionOf)
        if union is None:
            raise OntologyError(f"{what} is an anonymous class other than owl:unionOf; declare a named class")
        return tuple(ref for member in Collection(graph, union) for ref in _class_refs(graph, member, names, what))
    if node not in names:
        raise OntologyError(f"{what} is {node}, which is not a class declared in the ontology (owl:Class)"
                            " (strict_ontology is on: undeclared domain/range classes are refused, not inferred)")
    return (names[node],)


@dataclass
class OntologyLoadReport:
    """What loading an ontology as published had to infer (RDFS entailment rules rdfs2/rdfs3: whatever is an
    rdfs:domain or rdfs:range is a class), and which ranges it read as literal values."""
    inferred_classes: dict[str, list[str]] = field(default_factory=dict)  # class id -> properties implying it
    literal_ranges: dict[str, list[str]] = field(default_factory=dict)  # range term -> properties with that range
    object_properties_as_attributes: list[str] = field(default_factory=list)  # owl:ObjectProperty, literal range
    imports_followed: list[str] = field(default_factory=list)
    imports_not_followed: list[str] = field(default_factory=list)  # remote or missing: named, never fetched
    strict: bool = False

    def as_metadata(self) -> dict:
        return {"inferred_classes": self.inferred_classes, "literal_ranges": self.literal_ranges,
                "object_properties_as_attributes": self.object_properties_as_attributes,
                "imports_followed": self.imports_followed, "imports_not_followed": self.imports_not_followed,
                "strict": self.strict}

    def lines(self) -> list[str]:
        out = [f"inferred class {c} (used as domain/range of {', '.join(props)})"
               for c, props in sorted(self.inferred_classes.items())]
        out += [f"literal range {term} ({', '.join(props)})" for term, props in sorted(self.literal_ranges.items())]
        out += [f"owl:ObjectProperty {p} has a literal range: its facts are attributes"
                for p in self.object_properties_as_attributes]
        out += [f"owl:imports {i} not followed (not a local file)" for i in self.imports_not_followed]
        return out


# Names of "classes" that stand for literal values in published ontologies (compared lower-case, letters only)
_LITERAL_CLASS_KINDS = {
    "string": "text", "str": "text", "text": "text", "literal": "text", "langstring": "text", "plainliteral": "text",
    "name": "text", "label": "text",
    "number": "number", "numeric": "number", "integer": "number", "int": "number", "float": "number",
    "double": "number", "decimal": "number", "real": "number", "long": "number", "quantity": "number",
    "nonnegativeinteger": "number", "positiveinteger": "number",
    "year": "year", "gyear": "year", "date": "date", "datetime": "date", "time": "date", "month": "date",
    "day": "date", "duration": "text", "boolean": "text", "bool": "text",
}
_RDF_LITERALS = {RDFS.Literal, RDF.langString, RDF.PlainLiteral, RDF.XMLLiteral, RDF.HTML}


def _literal_kind(graph: Graph, term) -> str:
    """'' if term is a class of things; else the kind of literal it stands for (xsd:*, rdfs:Literal, or a class
    with a datatype-like name and no subclasses and no instances)."""
    if not isinstance(term, URIRef):
        return ""
    if str(term).startswith(str(XSD)):
        local = _local(term)
        return "number" if local in _NUMERIC_TYPES and local != "gYear" else \
            "year" if local == "gYear" else "date" if local in ("date", "dateTime", "time") else "text"
    if term in _RDF_LITERALS:
        return "text"
    kind = _LITERAL_CLASS_KINDS.get(re.sub(r"[^a-z]", "", _local(term).lower()), "")
    if kind and not any(True for _ in graph.subjects(RDFS.subClassOf, term)) and \
            not any(True for _ in graph.subjects(RDF.type, term)):
        return kind
    return ""


def _xsd_of(term, kind: str) -> str:
    """The datatype attribute values are checked against: the xsd type named, else a plain string (values written
    in prose, '2,100 km2' or 'March 1986', must not fail SHACL because the file said 'number' or 'Date')."""
    if isinstance(term, URIRef) and str(term).startswith(str(XSD)):
        return _local(term)
    return "string"


def _follow_imports(graph: Graph, directory: Path, read: set[Path], report: OntologyLoadReport) -> None:
    """owl:imports of local files (a path relative to the folder, a file: URI, or a file of the folder with the
    imported name) are read; anything else is listed in the report and never fetched (air-gapped)."""
    pending = sorted({o for o in graph.objects(None, OWL.imports) if isinstance(o, URIRef)})
    while pending:
        target = pending.pop(0)
        text = str(target)
        candidates = []
        if text.startswith("file:"):
            from urllib.parse import unquote, urlparse
            candidates.append(Path(unquote(urlparse(text).path)))
        elif "://" not in text:
            candidates.append((directory / text))
        tail = text.rstrip("/#").rsplit("/", 1)[-1]
        candidates += [directory / tail] + [directory / (tail + suffix) for suffix in ONTOLOGY_SUFFIXES]
        found = next((c.resolve() for c in candidates if c.is_file() and c.suffix.lower() in ONTOLOGY_SUFFIXES), None)
        if found is None:
            report.imports_not_followed.append(text)
            continue
        if found in read:
            report.imports_followed.append(text)
            continue
        read.add(found)
        imported = _parse_file(found)
        report.imports_followed.append(text)
        for triple in imported:
            graph.add(triple)
        pending.extend(sorted({o for o in imported.objects(None, OWL.imports) if isinstance(o, URIRef)}))


def _parse_file(path: Path) -> Graph:
    graph = Graph()
    formats = [ONTOLOGY_SUFFIXES[path.suffix.lower()]] if ONTOLOGY_SUFFIXES[path.suffix.lower()] else ["xml", "turtle"]
    errors = []
    for fmt in formats:
        try:
            graph.parse(path, format=fmt)
            return graph
        except Exception as exc:  # rdflib raises many parser-specific errors
            errors.append(f"{fmt}: {type(exc).__name__}: {str(exc)[:300]}")
    raise OntologyError(f"ontology file {path} cannot be parsed ({'; '.join(errors)})")


def _keywords(graph: Graph, subject, local_name: str) -> tuple[str, ...]:
    words = {s.lower() for s in _strings(graph, subject, RDFS.label, SKOS.prefLabel, SKOS.altLabel)}
    words.add(humanize(local_name))
    return tuple(sorted(w for w in words if w))


def _check_unique(kind: str, mapping: dict[str, URIRef], ident: str, uri: URIRef, reserved=frozenset()) -> None:
    if ident in mapping and mapping[ident] != uri:
        raise OntologyError(f"{kind} {uri} and {mapping[ident]} both map to the identifier {ident!r}; rename one")
    if ident.lower() in reserved:
        raise OntologyError(f"{kind} {uri} maps to {ident!r}, a name the graph store reserves for itself")


def _generated_shapes(classes: dict[str, ClassInfo], relations: dict[str, RelationInfo],
                      attributes: dict[str, AttributeInfo]) -> Graph:
    """Shapes every ontology gets: named, typed, traceable entities; domain/range of relations; attribute datatypes."""
    shapes = Graph()
    shape_ns = Namespace("urn:docplatform:shape:")
    typed = shape_ns["TypedEntity"]
    shapes.add((typed, RDF.type, SH.NodeShape))
    shapes.add((typed, SH.targetSubjectsOf, KG.name))
    for path, message, extra in (
        (KG.name, "an entity has exactly one non-empty name", [(SH.minCount, 1), (SH.maxCount, 1), (SH.minLength, 1)]),
        (KG.mentionedIn, "every entity is traceable to at least one chunk", [(SH.minCount, 1), (SH.nodeKind, SH.IRI)]),
    ):
        prop = BNode()
        shapes.add((typed, SH.property, prop))
        shapes.add((prop, SH.path, path))
        shapes.add((prop, SH.message, Literal(message)))
        for p, o in extra:
            shapes.add((prop, p, Literal(o) if isinstance(o, int) else o))
    classes_by_name = {c.name: c for c in classes.values()}

    def class_constraint(node, allowed: tuple[str, ...]) -> None:
        if len(allowed) == 1:
            shapes.add((node, SH["class"], classes_by_name[allowed[0]].uri))
        elif allowed:
            members = []
            for name in allowed:
                member = BNode()
                shapes.add((member, SH["class"], classes_by_name[name].uri))
                members.append(member)
            head = BNode()
            Collection(shapes, head, members)
            shapes.add((node, SH["or"], head))

    for rel in relations.values():
        shape = shape_ns[f"Relation_{rel.name}"]
        shapes.add((shape, RDF.type, SH.NodeShape))
        shapes.add((shape, SH.targetSubjectsOf, rel.uri))
        shapes.add((shape, SH.message, Literal(f"{rel.name}: the source must be {' or '.join(rel.domains) or 'any class'}")))
        class_constraint(shape, rel.domains)
        if rel.ranges:
            prop = BNode()
            shapes.add((shape, SH.property, prop))
            shapes.add((prop, SH.path, rel.uri))
            shapes.add((prop, SH.message, Literal(f"{rel.name} must point to {' or '.join(rel.ranges)}")))
            class_constraint(prop, rel.ranges)
    for attr in attributes.values():
        shape = shape_ns[f"Attribute_{attr.name}"]
        shapes.add((shape, RDF.type, SH.NodeShape))
        shapes.add((shape, SH.targetSubjectsOf, attr.uri))
        if attr.domain:
            class_constraint(shape, (attr.domain,))
        prop = BNode()
        shapes.add((shape, SH.property, prop))
        shapes.add((prop, SH.path, attr.uri))
        shapes.add((prop, SH.datatype, XSD[attr.datatype]))
        shapes.add((prop, SH.message, Literal(f"{attr.name} values must be xsd:{attr.datatype}")))
    return shapes


def _add_characteristics(graph: Graph, relations: dict[str, RelationInfo]) -> None:
    """owl:TransitiveProperty, owl:SymmetricProperty, owl:inverseOf and rdfs:subPropertyOf between the relations."""
    ident = {rel.uri: name for name, rel in relations.items()}
    for name, rel in list(relations.items()):
        inverse = next((ident[o] for o in graph.objects(rel.uri, OWL.inverseOf) if o in ident), "") or \
            next((ident[s] for s in graph.subjects(OWL.inverseOf, rel.uri) if s in ident), "")
        supers, frontier = [], [rel.uri]
        while frontier:
            for parent in sorted(graph.objects(frontier.pop(0), RDFS.subPropertyOf)):
                if parent in ident and ident[parent] not in supers and ident[parent] != name:
                    supers.append(ident[parent])
                    frontier.append(parent)
        relations[name] = replace(rel, transitive=(rel.uri, RDF.type, OWL.TransitiveProperty) in graph,
                                  symmetric=(rel.uri, RDF.type, OWL.SymmetricProperty) in graph,
                                  inverse_of=inverse, super_properties=tuple(supers))


def ontology_files(directory: Path) -> list[Path]:
    return sorted(p for p in Path(directory).iterdir() if p.is_file() and p.suffix.lower() in ONTOLOGY_SUFFIXES
                  and not p.name.startswith("."))


def parse_ontology(directory: Path, strict: bool = False) -> Ontology:
    """strict: refuse domain/range terms the files do not declare as classes (the behaviour before RDFS inference)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise OntologyError(f"ontology folder {directory} does not exist")
    files = ontology_files(directory)
    if not files:
        raise OntologyError(f"ontology folder {directory} has no ontology files ({', '.join(sorted(ONTOLOGY_SUFFIXES))})")
    graph, shapes = Graph(), Graph()
    origin: dict = {}  # subject -> the file that types it (named in errors)
    for path in files:
        parsed = _parse_file(path)
        for subject in parsed.subjects(RDF.type, None):
            origin.setdefault(subject, path)
        is_shapes = any(True for _ in parsed.subjects(RDF.type, SH.NodeShape)) or \
            any(True for _ in parsed.subjects(RDF.type, SH.PropertyShape))
        target = shapes if is_shapes else graph
        for triple in parsed:
            target.add(triple)
        for prefix, ns in parsed.namespaces():
            target.bind(prefix, ns, override=False)
    report = OntologyLoadReport(strict=strict)
    _follow_imports(graph, directory, {p.resolve() for p in files}, report)

    declared = {c for t in (OWL.Class, RDFS.Class) for c in graph.subjects(RDF.type, t)
                if isinstance(c, URIRef) and c not in (OWL.Thing, RDFS.Resource)}
    # domain/range terms: a literal kind, or a class (declared, or inferred as RDFS entailment would)
    object_props = [p for p in sorted(set(graph.subjects(RDF.type, OWL.ObjectProperty)))
                    if isinstance(p, URIRef) and p not in _PLATFORM_PROPERTIES and not str(p).startswith(str(KG))]
    datatype_props = [p for p in sorted(set(graph.subjects(RDF.type, OWL.DatatypeProperty)))
                      if isinstance(p, URIRef) and p not in _PLATFORM_PROPERTIES and not str(p).startswith(str(KG))]
    literal_range: dict[URIRef, tuple[URIRef, str]] = {}  # object property -> (range term, kind)
    implied: dict[URIRef, list[str]] = {}
    used_as_domain = {graph.value(p, RDFS.domain) for p in object_props + datatype_props}

    def terms(node):
        if isinstance(node, BNode) and graph.value(node, OWL.unionOf) is not None:
            return [m for m in Collection(graph, graph.value(node, OWL.unionOf))]
        return [node] if node is not None else []

    for prop in object_props:
        range_ = graph.value(prop, RDFS.range)
        kind = _literal_kind(graph, range_)
        if not strict and kind and range_ not in used_as_domain:
            literal_range[prop] = (range_, kind)
            report.literal_ranges.setdefault(_local(range_), []).append(_local(prop))
            report.object_properties_as_attributes.append(_local(prop))
    for prop in object_props + datatype_props:
        for predicate in (RDFS.domain, RDFS.range):
            if predicate == RDFS.range and (prop in literal_range or prop in datatype_props):
                continue
            for term in terms(graph.value(prop, predicate)):
                if isinstance(term, URIRef) and term not in declared and term not in (OWL.Thing, RDFS.Resource):
                    implied.setdefault(term, []).append(_local(prop))
    for prop in datatype_props:
        range_ = graph.value(prop, RDFS.range)
        if range_ is not None and not str(range_).startswith(str(XSD)) and range_ not in _RDF_LITERALS:
            report.literal_ranges.setdefault(_local(range_), []).append(_local(prop))
    if not strict:
        for term, props in implied.items():
            report.inferred_classes[class_identifier(_local(term))] = sorted(set(props))
        declared |= set(implied)
    class_uris = sorted(declared)
    if not class_uris:
        raise OntologyError(f"ontology in {directory} declares no classes (owl:Class or rdfs:Class) in "
                            f"{', '.join(p.name for p in files)}")
    names: dict[URIRef, str] = {}
    by_ident: dict[str, URIRef] = {}
    for uri in class_uris:
        local = _local(uri)
        ident = class_identifier(local)
        if not IDENTIFIER.match(ident):
            raise OntologyError(f"ontology class {uri} cannot be a graph label ({ident!r})")
        _check_unique("class", by_ident, ident, uri, RESERVED_CLASS_NAMES)
        by_ident[ident] = uri
        names[uri] = ident

    classes: dict[str, ClassInfo] = {}
    for uri in class_uris:
        ident, local = names[uri], _local(uri)
        classes[ident] = ClassInfo(
            name=ident, uri=uri, ancestors=_ancestors(graph, uri, names), local_name=local,
            label=_english_label(graph, uri, humanize(local)),
            labels=_strings(graph, uri, RDFS.label, SKOS.prefLabel, SKOS.altLabel),
            comment=" ".join(_strings(graph, uri, RDFS.comment, SKOS.definition)),
            keywords=_keywords(graph, uri, local),
            name_patterns=_strings(graph, uri, KG.namePattern),
            headwords=_strings(graph, uri, KG.headword),
            ner_labels=_strings(graph, uri, KG.nerLabel),
        )
        for pattern in classes[ident].name_patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise OntologyError(f"kg:namePattern {pattern!r} of {uri} is not a valid regex: {exc}") from exc

    relations: dict[str, RelationInfo] = {}
    rel_idents: dict[str, URIRef] = {}
    for prop in object_props:  # kg:mentionedIn is provenance, not a domain relation
        if prop in literal_range:
            continue  # an attribute, below
        local = _local(prop)
        ident = relation_identifier(local)
        if not IDENTIFIER.match(ident):
            raise OntologyError(f"ontology relation {prop} cannot be a relationship type ({ident!r})")
        _check_unique("relation", rel_idents, ident, prop, RESERVED_RELATION_NAMES)
        rel_idents[ident] = prop
        domains = _class_refs(graph, graph.value(prop, RDFS.domain), names, f"rdfs:domain of relation {prop} (in {origin.get(prop, directory)})")
        ranges = _class_refs(graph, graph.value(prop, RDFS.range), names, f"rdfs:range of relation {prop} (in {origin.get(prop, directory)})")
        relations[ident] = RelationInfo(
            name=ident, uri=prop, domain=domains[0] if domains else "", range=ranges[0] if ranges else "",
            domains=domains, ranges=ranges, local_name=local,
            label=_english_label(graph, prop, humanize(local)),
            labels=_strings(graph, prop, RDFS.label, SKOS.prefLabel, SKOS.altLabel),
            comment=" ".join(_strings(graph, prop, RDFS.comment, SKOS.definition)),
            phrases=_strings(graph, prop, KG.phrase),
            inverse_phrases=_strings(graph, prop, KG.inversePhrase),
        )
    _add_characteristics(graph, relations)

    attributes: dict[str, AttributeInfo] = {}
    attr_idents: dict[str, URIRef] = {}
    for prop in datatype_props + [p for p in object_props if p in literal_range]:
        local = _local(prop)
        ident = attribute_identifier(local)
        _check_unique("datatype property", attr_idents, ident, prop)
        attr_idents[ident] = prop
        domains = _class_refs(graph, graph.value(prop, RDFS.domain), names, f"rdfs:domain of datatype property {prop} (in {origin.get(prop, directory)})")
        range_ = graph.value(prop, RDFS.range)
        kind = literal_range[prop][1] if prop in literal_range else \
            ("" if range_ is None or str(range_).startswith(str(XSD)) else _literal_kind(graph, range_) or "text")
        datatype = _xsd_of(range_, kind)
        attributes[ident] = AttributeInfo(
            name=ident, uri=prop, domain=domains[0] if len(domains) == 1 else None, datatype=datatype,
            local_name=local, label=_english_label(graph, prop, humanize(local)),
            labels=_strings(graph, prop, RDFS.label, SKOS.prefLabel, SKOS.altLabel),
            comment=" ".join(_strings(graph, prop, RDFS.comment, SKOS.definition)),
            phrases=_strings(graph, prop, KG.phrase), literal_kind=kind if not str(range_ or "").startswith(str(XSD)) else "",
            declared_as="owl:ObjectProperty" if prop in literal_range else "owl:DatatypeProperty",
        )

    # known individuals: any subject typed with a declared class (canonical name = label, aliases = altLabels)
    known: list[KnownEntity] = []
    for subject, cls in sorted(graph.subject_objects(RDF.type)):
        if cls in _META_TYPES or cls not in names or subject in names:
            continue
        name = _english_label(graph, subject, "")
        if not name:
            raise OntologyError(f"known individual {subject} (a {names[cls]}) needs an rdfs:label")
        known.append(KnownEntity(label=names[cls], name=name,
                                 aliases=tuple(a for a in _strings(graph, subject, RDFS.label, SKOS.prefLabel,
                                                                   SKOS.altLabel) if a != name)))
    # SHACL: the folder's own shapes plus the shapes every ontology gets
    shapes += _generated_shapes(classes, relations, attributes)
    digest = hashlib.sha256()
    for path in files + [p for p in [directory / "examples.jsonl"] if p.is_file()]:  # examples teach extraction
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return Ontology(directory=directory, graph=graph, shapes=shapes, classes=classes, relations=relations,
                    known_entities=known, fingerprint=digest.hexdigest() + ("-strict" if strict else ""),
                    attributes=attributes, files=tuple(p.name for p in files), load_report=report)


@lru_cache(maxsize=8)
def _cached(directory: str, stamp: tuple, strict: bool) -> Ontology:
    return parse_ontology(Path(directory), strict=strict)


def strict_ontology_default() -> bool:
    """DOCPLATFORM_STRICT_ONTOLOGY=true: refuse undeclared domain/range classes instead of inferring them."""
    return os.environ.get("DOCPLATFORM_STRICT_ONTOLOGY", "").strip().lower() in ("1", "true", "yes", "on")


def load_ontology(directory: str | Path | None = None, strict: bool | None = None) -> Ontology:
    """The ontology in directory (default: ontology_schemas/ or $DOCPLATFORM_ONTOLOGY_DIR), cached per file change.

    strict (default $DOCPLATFORM_STRICT_ONTOLOGY): refuse domain/range terms that are not declared classes."""
    strict = strict_ontology_default() if strict is None else strict
    path = Path(directory or default_ontology_dir()).resolve()
    if not path.is_dir():
        raise OntologyError(f"ontology folder {path} does not exist (set DOCPLATFORM_ONTOLOGY_DIR to a folder of "
                            f"OWL/Turtle files)")
    stamp = tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size)
                         for p in ontology_files(path) + [e for e in [path / "examples.jsonl"] if e.is_file()]))
    return _cached(str(path), stamp, bool(strict))
