"""Any ontology: a folder of OWL files in any naming style loads into Cypher-safe identifiers, or fails clearly."""

import shutil
from pathlib import Path

import pytest

from resources.ontology import OntologyError, attribute_identifier, class_identifier, relation_identifier
from resources.ontology_loading import load_ontology, parse_ontology

AVIATION = Path(__file__).parent / "data" / "aviation_ontology"
PREFIXES = """@prefix owl: <http://www.w3.org/2002/07/owl#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .
@prefix ex: <http://example.org/x#> .
"""


@pytest.mark.parametrize("local, cls, rel, attr", [
    ("operatedBy", "OperatedBy", "OPERATED_BY", "operated_by"),
    ("operated_by", "OperatedBy", "OPERATED_BY", "operated_by"),
    ("RUNS_ON", "RUNSON", "RUNS_ON", "runs_on"),
    ("runs-on", "RunsOn", "RUNS_ON", "runs_on"),
    ("HTTPServer", "HTTPServer", "HTTP_SERVER", "http_server"),
    ("aircraft_type", "AircraftType", "AIRCRAFT_TYPE", "aircraft_type"),
])
def test_identifiers_follow_any_naming_style(local, cls, rel, attr):
    assert (class_identifier(local), relation_identifier(local), attribute_identifier(local)) == (cls, rel, attr)


def test_non_ascii_names_get_stable_safe_identifiers():
    first, second = relation_identifier("운영함"), relation_identifier("운영함")
    assert first == second and first.startswith("R_") and first.isascii()
    assert class_identifier("서버") != class_identifier("팀")


def test_user_ontology_in_another_domain_loads_without_hints():
    onto = load_ontology(AVIATION)
    assert {"Airline", "Airport", "Runway", "City", "Organization", "AircraftType"} <= set(onto.classes)
    assert onto.is_a("Airline", "Organization")
    assert set(onto.relations) == {"HUB_AIRPORT", "LOCATED_IN", "HAS_RUNWAY", "OPERATES_TYPE", "BASED_IN"}
    hub = onto.relations["HUB_AIRPORT"]
    assert (hub.domain, hub.range, hub.label, hub.local_name) == ("Airline", "Airport", "has hub at", "hubAirport")
    assert onto.relations["LOCATED_IN"].label == "located in"  # from the camelCase local name
    assert onto.relations["BASED_IN"].domains == ("Airline", "Airport")  # owl:unionOf
    assert onto.domain_range_ok("BASED_IN", "Airport", "City") and not onto.domain_range_ok("BASED_IN", "City", "City")
    length = onto.attributes["runway_length"]
    assert (length.domain, length.datatype, length.numeric) == ("Runway", "integer", True)
    assert onto.attributes["iata_code"].datatype == "string"
    assert "항공사" in onto.classes["Airline"].keywords and onto.classes["Airline"].label == "airline"
    incheon = next(k for k in onto.known_entities if k.label == "Airport")
    assert incheon.name == "Incheon International Airport" and {"ICN", "인천국제공항"} <= set(incheon.aliases)


def test_user_ontology_shacl_checks_domain_range_and_datatypes():
    onto = load_ontology(AVIATION)
    facts = {"entities": [
        {"id": "Airline:a", "label": "Airline", "name": "A Air", "chunk_ids": ["c1"]},
        {"id": "Airport:b", "label": "Airport", "name": "B Field", "chunk_ids": ["c1"]},
        {"id": "Runway:r", "label": "Runway", "name": "09L", "chunk_ids": ["c1"]}],
        "relations": [{"source": "Airline:a", "type": "HUB_AIRPORT", "target": "Airport:b", "chunk_id": "c1"}],
        "attributes": [{"entity": "Runway:r", "property": "runway_length", "value": "3200", "chunk_id": "c1"}]}
    assert onto.validate_shacl(facts)[0]
    wrong_range = dict(facts, relations=[{"source": "Airline:a", "type": "HUB_AIRPORT", "target": "Runway:r", "chunk_id": "c1"}])
    conforms, report, violations = onto.validate_shacl(wrong_range)
    assert not conforms and violations >= 1 and "HUB_AIRPORT" in report
    bad_value = dict(facts, attributes=[{"entity": "Runway:r", "property": "runway_length", "value": "long", "chunk_id": "c1"}])
    assert not onto.validate_shacl(bad_value)[0]


def _folder(tmp_path, text: str, name: str = "mine.ttl") -> Path:
    folder = tmp_path / "onto"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(PREFIXES + text)
    return folder


@pytest.mark.parametrize("text, message", [
    ("ex:runsOn a owl:ObjectProperty .", "declares no classes"),
    ("ex:A a owl:Class . ex:runsOn a owl:ObjectProperty . ex:runs_on a owl:ObjectProperty .", "both map to the identifier 'RUNS_ON'"),
    ("ex:Chunk a owl:Class .", "reserves"),
    ("ex:A a owl:Class . ex:mentioned_in a owl:ObjectProperty .", "reserves"),
    ("ex:A a owl:Class . ex:x a ex:A .", "needs an rdfs:label"),
    ("ex:A a owl:Class ; rdfs:label \"unterminated .", "cannot be parsed"),
])
def test_unusable_ontologies_fail_with_a_clear_error(tmp_path, text, message):
    with pytest.raises(OntologyError, match=message):
        parse_ontology(_folder(tmp_path, text))


@pytest.mark.parametrize("text, message", [
    ("ex:A a owl:Class . ex:runsOn a owl:ObjectProperty ; rdfs:domain ex:Missing ; rdfs:range ex:A .",
     r"rdfs:domain of relation .*runsOn.*mine\.ttl.* not a class declared"),
    ("ex:A a owl:Class . ex:size a owl:DatatypeProperty ; rdfs:domain ex:Nowhere .", "rdfs:domain of datatype property"),
    ("ex:A a owl:Class . ex:year a owl:ObjectProperty ; rdfs:domain ex:A ; rdfs:range ex:Year .", "range of relation .*year"),
])
def test_strict_ontology_refuses_undeclared_domain_and_range_terms(tmp_path, text, message):
    folder = _folder(tmp_path, text)
    with pytest.raises(OntologyError, match=message):
        parse_ontology(folder, strict=True)
    parse_ontology(folder)  # the default infers them instead


PUBLISHED_STYLE = """
ex:birthYear a owl:ObjectProperty ; rdfs:label "birthYear" ; rdfs:domain ex:Athlete ; rdfs:range ex:Year .
ex:height a owl:ObjectProperty ; rdfs:domain ex:Athlete ; rdfs:range ex:number .
ex:nickname a owl:ObjectProperty ; rdfs:domain ex:Athlete ; rdfs:range xsd:string .
ex:motto a owl:ObjectProperty ; rdfs:domain ex:Club ; rdfs:range rdfs:Literal .
ex:club a owl:ObjectProperty ; rdfs:label "club", "클럽"@ko ; rdfs:domain ex:Athlete ; rdfs:range ex:Club .
ex:ground a owl:ObjectProperty ; rdfs:domain ex:Club ; rdfs:range ex:Place .
ex:Place a owl:Class ; rdfs:label "Place" .
ex:Date a owl:Class .
ex:Holiday rdfs:subClassOf ex:Date .
ex:opened a owl:ObjectProperty ; rdfs:domain ex:Place ; rdfs:range ex:Date .
"""


def test_published_ontology_quirks_are_inferred_and_reported(tmp_path):
    """Terms used as domain/range are classes (RDFS rdfs2/rdfs3); datatype-named, childless, instance-free
    "classes" and xsd/rdfs:Literal ranges of owl:ObjectProperty make attributes; all of it is in the report."""
    onto = parse_ontology(_folder(tmp_path, PUBLISHED_STYLE))
    report = onto.load_report
    assert {"Athlete", "Club", "Date"} <= set(onto.classes)  # Date has a subclass (Holiday): a class, not a literal
    assert "Year" not in onto.classes and "Number" not in onto.classes
    assert report.inferred_classes["Athlete"] == ["birthYear", "club", "height", "nickname"]
    assert report.inferred_classes["Club"] == ["club", "ground", "motto"]
    assert set(report.literal_ranges) == {"Year", "number", "string", "Literal"}
    assert set(onto.relations) == {"CLUB", "GROUND", "OPENED"}
    birth = onto.attributes["birth_year"]
    assert (birth.domain, birth.literal_kind, birth.numeric, birth.declared_as) == \
        ("Athlete", "year", True, "owl:ObjectProperty")
    assert onto.attributes["nickname"].datatype == "string" and onto.attributes["motto"].literal_kind == "text"
    assert "클럽" in onto.relations["CLUB"].labels
    assert any("inferred class Athlete" in line for line in report.lines())
    facts = {"entities": [{"id": "Athlete:a", "label": "Athlete", "name": "A. Runner", "chunk_ids": ["c1"]}],
             "relations": [], "attributes": [{"entity": "Athlete:a", "property": "birth_year", "value": "1986",
                                              "chunk_id": "c1"}]}
    assert onto.validate_shacl(facts)[0]


def test_local_owl_imports_are_followed_and_remote_ones_reported(tmp_path):
    folder = tmp_path / "onto"
    (folder / "imported").mkdir(parents=True)
    (folder / "imported" / "base.ttl").write_text(PREFIXES + "ex:Team a owl:Class ; rdfs:label \"Team\" .\n")
    (folder / "main.ttl").write_text(PREFIXES + """
<urn:x:onto> a owl:Ontology ; owl:imports <imported/base.ttl>, <http://example.org/remote.owl> .
ex:Service a owl:Class . ex:ownedBy a owl:ObjectProperty ; rdfs:domain ex:Service ; rdfs:range ex:Team .
""")
    onto = parse_ontology(folder)
    assert onto.load_report.imports_followed == ["imported/base.ttl"] or \
        onto.load_report.imports_followed[0].endswith("imported/base.ttl")
    assert onto.load_report.imports_not_followed == ["http://example.org/remote.owl"]
    assert "Team" not in onto.load_report.inferred_classes and onto.classes["Team"].label == "Team"


def test_missing_or_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(OntologyError, match="does not exist"):
        load_ontology(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OntologyError, match="has no ontology files"):
        load_ontology(tmp_path / "empty")


def test_file_names_are_free_and_shapes_are_found_by_content(tmp_path):
    folder = tmp_path / "renamed"
    shutil.copytree(load_ontology().directory, folder)
    (folder / "infrastructure.ttl").rename(folder / "company-model.owl")
    (folder / "shapes.ttl").rename(folder / "rules.ttl")
    onto = load_ontology(folder)
    assert set(onto.relations) == {"RUNS_ON", "DEPENDS_ON", "MANAGED_BY"}
    assert any(True for _ in onto.shapes.subjects()) and onto.known_entities
    assert onto.fingerprint != load_ontology().fingerprint


def test_property_characteristics_are_read(tmp_path):
    (tmp_path / "o.ttl").write_text(PREFIXES + """
ex:Thing a owl:Class .
ex:partOf a owl:ObjectProperty, owl:TransitiveProperty ; rdfs:domain ex:Thing ; rdfs:range ex:Thing .
ex:hasPart a owl:ObjectProperty ; owl:inverseOf ex:partOf ; rdfs:domain ex:Thing ; rdfs:range ex:Thing .
ex:near a owl:ObjectProperty, owl:SymmetricProperty .
ex:related a owl:ObjectProperty .
ex:linked a owl:ObjectProperty ; rdfs:subPropertyOf ex:related .
ex:wiredTo a owl:ObjectProperty ; rdfs:subPropertyOf ex:linked .
""")
    rels = parse_ontology(tmp_path).relations
    assert rels["PART_OF"].transitive and not rels["HAS_PART"].transitive
    assert rels["HAS_PART"].inverse_of == "PART_OF" and rels["PART_OF"].inverse_of == "HAS_PART"
    assert rels["NEAR"].symmetric and not rels["PART_OF"].symmetric
    assert rels["WIRED_TO"].super_properties == ("LINKED", "RELATED") and rels["RELATED"].super_properties == ()
    assert load_ontology().relations["DEPENDS_ON"].transitive  # the bundled ontology declares it
