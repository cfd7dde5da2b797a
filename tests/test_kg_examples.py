"""The examples layer: relations and literals learned from a user's examples.jsonl (tests/data/examples_ontology,
a small people-and-companies ontology written for this test), read from sentences with names it has never seen."""

import shutil
from pathlib import Path

import pytest

from assets.knowledge_graph.examples import model_for
from assets.knowledge_graph.examples_mentions import Span, _looks_literal, literal_value, value_shape
from assets.knowledge_graph.extract import ExtractionConfig, extract_facts
from resources.ontology_loading import load_ontology

FOLDER = Path(__file__).parent / "data" / "examples_ontology"


@pytest.fixture(scope="module")
def ontology():
    return load_ontology(FOLDER)


def facts_of(text: str, ontology, **config) -> dict:
    return extract_facts([{"chunk_id": "c0", "doc_id": "d.txt", "seq": 0, "text": text}], ontology,
                         config=ExtractionConfig(**config))


def triples(facts: dict, layer: str = "examples") -> set:
    names = {e["id"]: e["name"] for e in facts["entities"]}
    out = {(names[r["source"]], r["type"], names[r["target"]]) for r in facts["relations"] if r["layer"] == layer}
    return out | {(names[a["entity"]], a["property"], a["value"]) for a in facts["attributes"] if a["layer"] == layer}


def test_model_learns_from_examples_and_calibrates_a_threshold(ontology):
    model = model_for(ontology)
    assert model is not None
    assert 0.2 <= model.calibration.threshold < 0.95
    assert model.calibration.prototypes > 40
    assert model.value_shapes["founding_year"] == "year"


def test_relations_and_literals_of_unseen_names(ontology):
    facts = facts_of("Priya Natarajan works for Halcyon Dynamics.\n\n"
                     "Halcyon Dynamics is headquartered in Fenwick and was founded in 1978.", ontology)
    found = triples(facts)
    assert ("Priya Natarajan", "EMPLOYER", "Halcyon Dynamics") in found
    assert ("Halcyon Dynamics", "HEADQUARTERS", "Fenwick") in found
    assert ("Halcyon Dynamics", "founding_year", "1978") in found
    classes = {e["name"]: e["label"] for e in facts["entities"]}
    assert classes["Priya Natarajan"] == "Person" and classes["Halcyon Dynamics"] == "Company"


def test_pronoun_in_the_next_sentence_stands_for_the_paragraphs_first_name(ontology):
    found = triples(facts_of("Rafael Soto grew up in Kilbride. He now works for Tamsin Textiles.", ontology))
    assert ("Rafael Soto", "EMPLOYER", "Tamsin Textiles") in found
    assert not any(s.lower() == "he" for s, _, _ in found)


def test_names_that_merely_co_occur_give_no_fact(ontology):
    found = triples(facts_of("Priya Natarajan and Rafael Soto met in Fenwick last winter.", ontology))
    assert not {t for t in found if t[1] in ("HOMETOWN", "EMPLOYER")}


def test_without_examples_the_layer_is_silent(tmp_path):
    shutil.copy(FOLDER / "ontology.ttl", tmp_path / "ontology.ttl")
    bare = load_ontology(tmp_path)
    assert model_for(bare) is None
    assert not triples(facts_of("Priya Natarajan works for Halcyon Dynamics.", bare))


def test_literal_shapes_follow_the_examples():
    assert value_shape("374976.0") == "decimal" and value_shape("94.8 (kilograms)") == "decimal"
    assert value_shape("1996-05-30") == "iso-date" and value_shape("1986") == "year"
    span = Span(0, 6, "374976", "number")
    assert literal_value(span, "number", "decimal") == "374976.0"
    assert literal_value(Span(0, 11, "30 May 1996", "date"), "date", "iso-date") == "1996-05-30"
    assert _looks_literal("5.6kg") and _looks_literal("1.905 metres") and not _looks_literal("1036 Ganymed")
    assert not _looks_literal("(19255) 1994 VK8")
