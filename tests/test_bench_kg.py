"""The knowledge-graph benchmark's labeled sets are consistent, and its scoring is right.

A benchmark is only as good as its gold: these tests catch a gold fact whose entity no document
mentions, a relation the ontology does not have, a multi-hop answer that does not follow from the
gold facts, and a scoring function that miscounts.
"""

import io
import json
import re
from pathlib import Path

import docx
import pytest

from bench.kg import (KG_DATA_DIR, EvalSet, NameCanonicalizer, available_sets, document_paths, evaluate_set,
                      expected_answers, gold_triples, main, markdown_report, normalize_value, prf, print_report,
                      outside_domain, score_triples)
from resources.ontology_loading import load_ontology

INFRA_DIR = KG_DATA_DIR / "infra"
AVIATION_DIR = KG_DATA_DIR / "aviation"
OWN_SETS = ("infra", "aviation")
CAMEL_CASE = re.compile(r"^[a-z]+(?:[A-Z][a-z0-9]*)*$")
HANGUL = re.compile(r"[\uac00-\ud7a3]")


def document_text(path: Path) -> str:
    """Text of a document as a reader sees it (paragraphs and table cells of a .docx)."""
    if path.suffix == ".docx":
        document = docx.Document(str(path))
        cells = [cell.text for table in document.tables for row in table.rows for cell in row.cells]
        return "\n".join([p.text for p in document.paragraphs] + cells)
    return path.read_text(encoding="utf-8")


def gold_names(gold: dict) -> set[str]:
    names = {name for pairs in gold.get("relations", {}).values() for pair in pairs for name in pair}
    names |= {entity for pairs in gold.get("attributes", {}).values() for entity, _ in pairs}
    names |= {name for _, source, target, *_ in gold.get("must_not", []) for name in (source, target)}
    for item in gold.get("multi_hop", []):
        names |= set(item["answer"]) | {item["end"]}
    return names


@pytest.fixture(scope="module")
def sets():
    return available_sets()


def test_infra_set_is_big_and_varied(sets):
    infra = sets["infra"]
    paths = document_paths(infra.docs_dir)
    relations = sum(len(pairs) for pairs in infra.gold["relations"].values())
    assert len(paths) >= 12
    assert relations >= 80
    assert len(infra.gold["multi_hop"]) >= 3
    assert len(infra.gold["must_not"]) >= 3
    assert {".md", ".txt", ".html", ".docx"} <= {p.suffix for p in paths}
    assert sum(bool(HANGUL.search(document_text(p))) for p in paths) >= 2


def test_aviation_set_has_forty_triples(sets):
    aviation = sets["aviation"]
    triples = sum(len(pairs) for pairs in aviation.gold["relations"].values())
    triples += sum(len(pairs) for pairs in aviation.gold["attributes"].values())
    assert triples >= 40
    assert len(document_paths(aviation.docs_dir)) >= 10
    assert len(aviation.gold["multi_hop"]) >= 3


def test_infra_relations_are_the_union_of_the_per_document_labels(sets):
    gold = sets["infra"].gold
    union = {(kind, s, t) for facts in gold["by_document"].values()
             for kind, pairs in facts.items() if kind != "must_not" for s, t in pairs}
    listed = {(kind, s, t) for kind, pairs in gold["relations"].items() for s, t in pairs}
    assert union == listed
    assert set(gold["by_document"]) == {p.name for p in document_paths(sets["infra"].docs_dir)}
    assert not listed & {(kind, s, t) for kind, s, t, _ in gold["must_not"]}


@pytest.mark.parametrize("name", OWN_SETS)
def test_gold_types_exist_in_the_ontology_and_respect_domain_and_range(sets, name):
    eval_set = sets[name]
    ontology = load_ontology(str(eval_set.ontology_dir))
    relations, attributes, _ = gold_triples(eval_set.gold, ontology, NameCanonicalizer(None))
    classes = eval_set.gold["entity_classes"]
    assert set(classes.values()) <= set(ontology.classes)
    for kind, source, target in relations:
        assert kind in ontology.relations, kind
    for kind, source, target, *_ in eval_set.gold.get("must_not", []):
        assert kind in ontology.relations or any(r.local_name == kind for r in ontology.relations.values()), kind
    for prop, _, _ in attributes:
        assert prop in ontology.attributes, prop
    for kind, pairs in eval_set.gold["relations"].items():
        info = next(r for r in ontology.relations.values() if kind in (r.name, r.local_name))
        for source, target in pairs:
            assert info.domain in ontology.classes[classes[source]].ancestors, (kind, source)
            assert info.range in ontology.classes[classes[target]].ancestors, (kind, target)


@pytest.mark.parametrize("name", OWN_SETS)
def test_every_gold_entity_is_named_in_some_document(sets, name):
    eval_set = sets[name]
    corpus = "\n".join(document_text(p) for p in document_paths(eval_set.docs_dir)).casefold()
    ontology = load_ontology(str(eval_set.ontology_dir))
    forms = {k.name.casefold(): {k.name, *k.aliases} for k in ontology.known_entities}
    for entity in gold_names(eval_set.gold):
        spellings = forms.get(entity.casefold(), {entity})
        assert any(form.casefold() in corpus for form in spellings), f"{entity!r} is in no {name} document"


@pytest.mark.parametrize("name", OWN_SETS)
def test_multi_hop_answers_follow_from_the_gold_relations(sets, name):
    eval_set = sets[name]
    ontology = load_ontology(str(eval_set.ontology_dir))
    identity = NameCanonicalizer(None)
    relations, _, _ = gold_triples(eval_set.gold, ontology, identity)
    for item in eval_set.gold["multi_hop"]:
        assert item["answer"], item["q"]
        assert expected_answers(item, eval_set.gold, ontology, identity, relations) == {
            identity(a) for a in item["answer"]}, item["q"]


def test_aviation_ontology_is_a_plain_user_ontology():
    ontology = load_ontology(str(AVIATION_DIR / "ontology"))
    turtle = "\n".join(p.read_text() for p in (AVIATION_DIR / "ontology").glob("*.ttl"))
    assert "docplatform" not in turtle and "kg:" not in turtle
    assert len(ontology.relations) >= 6 and len(ontology.attributes) >= 3
    assert all(CAMEL_CASE.match(r.local_name) for r in ontology.relations.values())
    assert ontology.relations["OPERATED_BY"].domain == "Airport"
    assert ontology.attributes["runway_length"].datatype == "integer"
    assert ontology.classes["Airline"].ancestors[:2] == ("Airline", "Organization")


def test_prf_on_a_hand_made_prediction():
    gold = {("RUNS_ON", "a", "s1"), ("RUNS_ON", "b", "s2"), ("MANAGED_BY", "s1", "t"), ("MANAGED_BY", "s2", "t")}
    predicted = {("RUNS_ON", "a", "s1"), ("RUNS_ON", "b", "s9"), ("MANAGED_BY", "s1", "t")}
    figures = prf(predicted, gold)
    assert (figures["tp"], figures["fp"], figures["fn"]) == (2, 1, 2)
    assert figures["precision"] == pytest.approx(0.667, abs=1e-3)
    assert figures["recall"] == 0.5
    assert figures["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5), abs=1e-3)
    per_type = score_triples(predicted, gold)["per_type"]
    assert per_type["MANAGED_BY"]["precision"] == 1.0 and per_type["MANAGED_BY"]["recall"] == 0.5
    assert per_type["RUNS_ON"]["f1"] == 0.5
    assert prf(set(), gold)["f1"] == 0.0 and prf(predicted, set())["precision"] == 0.0


def test_values_and_names_are_compared_without_units_case_or_aliases():
    assert normalize_value("3,200 metres") == normalize_value("3200") == "3200"
    assert normalize_value("about 310 seats") == "310"
    assert normalize_value(" NVK ") == "nvk"
    canon = NameCanonicalizer(load_ontology(str(INFRA_DIR.parent.parent.parent / "ontology_schemas")))
    assert canon("SecOps") == canon("security  team") == "security team"
    assert canon("Route  Planner") == "route planner"


def test_runner_scores_two_documents_end_to_end(tmp_path, sets):
    infra = sets["infra"]
    chosen = ["02-host-inventory.md", "07-runbook-notification-hub.md"]
    relations: dict[str, list] = {}
    for doc in chosen:
        for kind, pairs in infra.gold["by_document"][doc].items():
            if kind != "must_not":
                relations.setdefault(kind, []).extend(p for p in pairs if p not in relations.get(kind, []))
    gold = {"relations": relations, "must_not": [], "entity_classes": infra.gold["entity_classes"],
            "multi_hop": [{"q": "apps on Platform Team servers", "start": "Application",
                           "hops": [["RUNS_ON", "Server"], ["MANAGED_BY", "Team"]], "end": "Platform Team",
                           "answer": ["Carrier Gateway", "Rate Quote Service", "Route Planner"]}]}
    small = EvalSet(name="two-docs", docs_dir=infra.docs_dir, gold=gold, ontology_dir=infra.ontology_dir)
    result = evaluate_set(small, documents=[infra.docs_dir / doc for doc in chosen])

    assert result["documents"] == 2 and result["document_errors"] == {}
    assert result["gold_relations"] == sum(len(p) for p in relations.values())
    assert set(result["per_type"]) >= {"RUNS_ON", "MANAGED_BY"}
    for figures in [result["overall"], *result["per_type"].values(), *result["per_layer"].values()]:
        assert 0.0 <= figures["precision"] <= 1.0 and 0.0 <= figures["recall"] <= 1.0
        assert figures["tp"] + figures["fn"] <= result["gold_relations"]
    assert result["overall"]["tp"] + result["overall"]["fn"] == result["gold_relations"]
    assert len(result["multi_hop"]) == 1 and result["multi_hop"][0]["want"] == [
        "carrier gateway", "rate quote service", "route planner"]
    assert result["seconds_per_document"]["mean"] > 0
    json.dumps(result)
    report = io.StringIO()
    print_report(result, out=report)
    assert "per layer" in report.getvalue() and "multi-hop accuracy" in report.getvalue()
    # where the time goes: every layer that ran has its milliseconds per chunk, and they add up to the whole
    timing = result["ms_per_chunk_by_layer"]
    assert {"parse", "sentences", "structure", "assemble"} <= set(timing) and all(v >= 0 for v in timing.values())
    assert 0 < sum(timing.values()) * result["chunks"] / 1000 <= 2 * result["seconds_per_document"]["mean"] + 1
    assert "ms per chunk by layer" in report.getvalue()
    table = markdown_report([result])
    assert "| two-docs | 2 |" in table and ("0/1" in table or "1/1" in table)
    assert "parse" in table.split("ms per chunk by layer")[1]


def test_unknown_set_is_reported_and_exits_zero(capsys):
    assert main(["--set", "no-such-set", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sets"][0]["set"] == "no-such-set" and "error" in summary["sets"][0]


def test_committed_docx_matches_its_generator():
    from bench.kg_data.make_docx import HEADER, ROWS, TARGET

    table = docx.Document(str(TARGET)).tables[0]
    assert [tuple(cell.text for cell in row.cells) for row in table.rows] == [HEADER, *ROWS]


TEXT2KG = Path(__file__).resolve().parent.parent.parent / "shared" / "text2kg_dev"


@pytest.mark.skipif(not (TEXT2KG / "score.py").exists(), reason="the Text2KGBench folder is not beside the project")
def test_text2kg_bench_scores_a_published_ontology_with_the_sets_own_scorer(tmp_path):
    from bench.kg_text2kg import evaluate, markdown_report

    results = evaluate(TEXT2KG, examples=False, only=["8_celestialbody"], main_job=False)
    assert [r["ontology"] for r in results] == ["8_celestialbody"]
    result = results[0]
    assert result["gold"] > 0 and result["extracted"] > 0 and 0 < result["f1"] <= 1
    assert result["vicuna13b_f1"] > 0  # the paper's answers, scored the same way
    report = markdown_report(results, examples=False, main_job=False)
    assert "8_celestialbody" in report and "target 0.25" in report


def test_heldout_block_sets_development_beside_test_with_the_gap():
    from bench.kg import heldout_report

    def result(name, f1, hops):
        return {"set": name, "documents": 3, "gold_relations": 10, "overall": {"precision": f1, "recall": f1, "f1": f1},
                "multi_hop": [{"correct": c} for c in hops]}

    text = heldout_report([result("infra_dev2", 0.8, [True]), result("infra_heldout", 0.5, [True, False])])
    assert "infra_dev2 (3 documents, 10 relations)" in text and "| 1/2 |" in text
    assert "Gap development - test, F1: infra_dev2 0.300." in text and "not reached" in text


def test_outside_domain_counts_every_relation_as_false(tmp_path, capsys):
    """--outside: a folder the ontology does not describe; one infrastructure statement in it is counted."""
    (tmp_path / "readme.md").write_text("# Quorvex\n\nQuorvex is a small parser library for config files.\n\n"
                                        "The payments-api service runs on srv-pay-01.\n")
    report = outside_domain(tmp_path)
    assert report["documents"] == 1 and report["chunks"] >= 1
    assert report["relations"] == 1 and report["by_layer"] == {"sentence": 1}
    assert "RUNS_ON(payments-api" in report["examples"][0] and "srv-pay-01)" in report["examples"][0]
    assert main(["--outside", str(tmp_path)]) == 0
    assert "1 relations" in capsys.readouterr().out
