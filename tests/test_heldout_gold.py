"""The held-out knowledge-graph gold set is consistent with its ontology and its documents.

Fast: reads bench/kg_data/infra_heldout/ (real files) and the real ontology; no extraction runs.
"""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

CHECKER_PATH = Path("bench/kg_data/infra_heldout/check_gold.py")


def load_checker():
    spec = importlib.util.spec_from_file_location("heldout_check_gold", CHECKER_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checker():
    return load_checker()


def test_heldout_gold_is_consistent(checker):
    problems, counts = checker.check()
    assert problems == []
    assert 10 <= counts["documents"] <= 14
    assert counts["relations"] >= 90
    assert counts["korean_documents"] >= 3
    assert counts["relations_stated_in_korean_documents"] >= 25
    assert counts["multi_hop"] >= 5
    assert counts["must_not"] >= 10


def test_checker_refuses_a_bad_gold(checker, tmp_path):
    """Domain/range, undeclared relations, a fact no document states and a wrong answer are each caught."""
    broken = tmp_path / "infra_heldout"
    shutil.copytree(checker.SET_DIR, broken)
    gold = json.loads((broken / "gold.json").read_text(encoding="utf-8"))
    gold["relations"]["RUNS_ON"].append(["Treasury Ops", "lx-app-12"])  # a Team is not Software
    gold["relations"]["HOSTED_BY"] = [["payment relay", "lx-app-12"]]
    gold["multi_hop"][0]["answer"] = sorted(gold["multi_hop"][0]["answer"][1:])
    (broken / "gold.json").write_text(json.dumps(gold, ensure_ascii=False), encoding="utf-8")
    problems, _ = checker.check(broken)
    text = "\n".join(problems)
    assert "domain is Software" in text
    assert "'HOSTED_BY' is not declared" in text
    assert "that no document states" in text
    assert gold["multi_hop"][0]["q"] in text
