"""examples.jsonl beside an ontology: resolved to the ontology's properties, bad lines reported by number."""

import json

from resources.ontology_loading import load_ontology
from resources.ontology_examples import contains_name, load_examples

ONTOLOGY = """@prefix owl: <http://www.w3.org/2002/07/owl#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix ex: <http://example.org/club#> .
ex:club a owl:ObjectProperty ; rdfs:label "club", "소속 클럽"@ko ; rdfs:domain ex:Athlete ; rdfs:range ex:Club .
ex:birthYear a owl:ObjectProperty ; rdfs:domain ex:Athlete ; rdfs:range ex:Year .
"""


def _folder(tmp_path, lines):
    folder = tmp_path / "onto"
    folder.mkdir()
    (folder / "ontology.ttl").write_text(ONTOLOGY)
    (folder / "examples.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_examples_resolve_relations_by_local_name_or_label_and_literals_to_attributes(tmp_path):
    folder = _folder(tmp_path, [
        json.dumps({"text": "Aaron Boogaard, born in 1986, played for Wichita Thunder.",
                    "triples": [["Aaron_Boogaard", "club", "Wichita_Thunder"], ["Aaron Boogaard", "birth year", "1986"]]}),
        json.dumps({"text": "손흥민은 토트넘 소속이다.", "triples": [["손흥민", "소속 클럽", "토트넘"]]}, ensure_ascii=False),
        json.dumps({"text": "Abel Hernandez's club is US Citta di Palermo.",
                    "triples": [["Abel Hernández", "CLUB", "U.S. Città di Palermo"]]}),
    ])
    examples = load_examples(load_ontology(folder))
    assert not examples.problems
    first = examples.examples[0]
    assert [(t.subject, t.predicate, t.object, t.kind) for t in first.triples] == [
        ("Aaron Boogaard", "CLUB", "Wichita Thunder", "relation"), ("Aaron Boogaard", "birth_year", "1986", "attribute")]
    assert examples.examples[1].triples[0].predicate == "CLUB"
    assert examples.examples[2].triples[0].subject == "Abel Hernández"  # accents fold when matching the text


def test_malformed_lines_and_triples_are_reported_by_line_and_skipped(tmp_path):
    folder = _folder(tmp_path, [
        "{not json",
        json.dumps({"triples": []}),
        json.dumps({"text": "A plays for B.", "triples": [["A", "playsFor", "B"], ["Z", "club", "B"], ["A", "club", "B"]]}),
    ])
    examples = load_examples(load_ontology(folder))
    problems = "\n".join(examples.problems)
    assert "examples.jsonl line 1: not JSON" in problems
    assert "examples.jsonl line 2: needs an object" in problems
    assert "line 3, triple 1: relation 'playsFor' is not a property" in problems
    assert "line 3, triple 2: subject 'Z' does not occur in the text" in problems
    assert len(examples.examples) == 1 and [t.subject for t in examples.examples[0].triples] == ["A"]


def test_editing_examples_changes_the_ontology_fingerprint(tmp_path):
    folder = _folder(tmp_path, [json.dumps({"text": "A plays for B.", "triples": [["A", "club", "B"]]})])
    before = load_ontology(folder).fingerprint
    (folder / "examples.jsonl").write_text(json.dumps({"text": "C plays for D.", "triples": [["C", "club", "D"]]}) + "\n")
    after = load_ontology(folder)
    assert after.fingerprint != before and load_examples(after).examples[0].triples[0].subject == "C"
    assert not load_examples(load_ontology()).examples  # the bundled ontology has no examples file


def test_names_match_running_text_loosely_but_not_inside_words():
    assert contains_name("He was born in Regina, Saskatchewan.", "Regina,_Saskatchewan")
    assert not contains_name("The Tigers won.", "Tig")
