"""One extraction view of the ontology (assets/knowledge_graph/schema.py), read by every layer."""

from assets.knowledge_graph import korean_index
from assets.knowledge_graph.mentions import lexicon_for
from assets.knowledge_graph.schema import extraction_schema, split_local_name
from assets.knowledge_graph.scoring import scorer_for
from resources.ontology_loading import load_ontology

TTL = """@prefix : <http://example.org/lab#> .
@prefix owl: <http://www.w3.org/2002/07/owl#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix skos: <http://www.w3.org/2004/02/skos/core#> .

:Instrument a owl:Class ; rdfs:label "instrument"@en, "장비"@ko ; skos:altLabel "analyser"@en .
:Laboratory a owl:Class ; rdfs:label "laboratory"@en, "실험실"@ko .
:installedIn a owl:ObjectProperty ; rdfs:domain :Instrument ; rdfs:range :Laboratory ;
    rdfs:label "installed in"@en, "설치 위치"@ko ; rdfs:comment "The instrument stands in the laboratory." .
:calibratedBy a owl:ObjectProperty ; rdfs:domain :Instrument ; rdfs:range :Laboratory ;
    rdfs:label "calibrated by"@en .
:serialNumber a owl:DatatypeProperty ; rdfs:domain :Instrument ; rdfs:label "serial number"@en .
"""


def test_the_view_is_built_once_and_every_layer_reads_it(tmp_path):
    (tmp_path / "lab.ttl").write_text(TTL, encoding="utf-8")
    ontology = load_ontology(str(tmp_path))
    schema = extraction_schema(ontology)
    assert extraction_schema(ontology) is schema  # built once, shared

    instrument = schema.classes["Instrument"]
    assert {"instrument", "장비", "analyser"} <= set(instrument.words)  # every language, alternative labels
    assert "instruments" in instrument.plural_keywords and "장비s" not in instrument.plural_keywords
    installed = schema.relations["INSTALLED_IN"]
    assert "installed in" in installed.forward and "설치 위치" in installed.texts
    assert "설치 위치" not in installed.forward  # the English scorer compares English phrases only
    assert "serial number" in schema.attributes["serial_number"].texts

    # the layers take their words from this view, not from their own walk of the ontology
    lexicon = lexicon_for(ontology)
    assert lexicon.schema is schema and lexicon.classes_for_word("analysers") == {"Instrument"}
    scorer = scorer_for(ontology)
    assert scorer.descriptions["INSTALLED_IN"].forward == list(installed.forward)
    assert "calibrates" in scorer.descriptions["CALIBRATED_BY"].inverse  # the active form of a passive label
    assert scorer.attribute_texts["serial_number"] == list(schema.attributes["serial_number"].texts)
    index = korean_index._OntologyIndex(ontology)
    assert index.class_of_word("장비", cross_lingual=False) == "Instrument"
    assert [t for r, t in index.relation_texts if r == "INSTALLED_IN"] == list(installed.texts)


def test_local_names_split_into_words():
    assert split_local_name("dependsOn") == "depends on"
    assert split_local_name("RUNS_ON") == "runs on"
    assert split_local_name("HTTPServer") == "http server"
