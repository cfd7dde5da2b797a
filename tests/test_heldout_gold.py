"""The held-out and infra_dev2 knowledge-graph gold sets are consistent with their ontology and documents.

Fast: reads bench/kg_data/infra_heldout/ and bench/kg_data/infra_dev2/ (real files) and the real ontology;
no extraction runs.
"""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

CHECKER_PATH = Path("bench/kg_data/infra_heldout/check_gold.py")
DEV2_DIR = Path("bench/kg_data/infra_dev2")


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


def test_dev2_gold_is_consistent(checker):
    problems, counts = checker.check(DEV2_DIR)
    assert problems == []
    assert counts["documents"] == 14
    assert counts["relations"] >= 110
    assert counts["korean_documents"] >= 4
    assert counts["must_not"] >= 25
    assert counts["multi_hop"] >= 6


def test_checker_takes_a_set_dir(checker, tmp_path, capsys):
    """--set-dir picks the set; the default stays the held-out set; a broken copy makes it exit 1."""
    assert checker.main(["--set-dir", str(DEV2_DIR)]) == 0
    assert '"documents": 14' in capsys.readouterr().out
    assert checker.main([]) == 0
    assert '"documents": 14' not in capsys.readouterr().out
    broken = tmp_path / "infra_dev2"
    shutil.copytree(DEV2_DIR, broken)
    (broken / "docs" / "06-dispatch-deploy-notes.txt").unlink()
    assert checker.main(["--set-dir", str(broken)]) == 1
    assert "that no document states" in capsys.readouterr().out


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
