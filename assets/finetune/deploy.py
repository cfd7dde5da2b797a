"""Deployment to vLLM: load the adapter under a versioned name, smoke it, swap the alias; roll back on any failure."""

import json
from pathlib import Path

from dagster import Config, Failure, MetadataValue
from pydantic import Field

from assets.faults import fault_point
from resources.llm import AdapterRegistry, VLLMError, VLLMServer

class DeploymentConfig(Config):
    smoke_prompt: str = Field(default="", description="Prompt for the smoke completion; empty = the manifest's.")
    smoke_max_tokens: int = Field(default=0, description="0 = the manifest's.")
    require_reference_match: bool = Field(
        default=True, description="Smoke completion must equal the greedy HF reference recorded at training time "
                                  "(exact for float32 serving; turn off for bf16/quantized servers).")


class DeploymentFailed(Failure):
    pass


class VLLMGone(DeploymentFailed):
    """The vLLM server was unreachable or went away during the deployment (transient: the step is retried)."""


def _smoke(vllm: VLLMServer, model_name: str, prompt: str, max_tokens: int, reference: list[int] | None,
           eos_id: int | None) -> tuple[bool, dict]:
    try:
        result = vllm.complete(model_name, prompt, max_tokens=max_tokens)
    except VLLMError as exc:
        return False, {"error": str(exc)}
    ids = list(result["token_ids"] or [])
    if eos_id is not None and ids and ids[-1] == eos_id:
        ids = ids[:-1]
    details = {"model": model_name, "text": result["text"], "token_ids": ids, "finish_reason": result["finish_reason"]}
    if not ids:
        return False, details | {"error": "empty completion"}
    if reference is not None and ids != list(reference):
        return False, details | {"error": "completion differs from the training-time greedy reference",
                                 "reference_token_ids": list(reference)}
    return True, details


def deploy_adapter(vllm: VLLMServer, registry: AdapterRegistry, adapter: dict, config: DeploymentConfig,
                   log=None) -> dict:
    """Load adapter into vLLM as <name>-<version>, smoke it, then swap the alias <name> in place; roll back on failure.

    Returns the deployment record; raises DeploymentFailed (after rolling back) when anything fails.
    """
    log = log or (lambda message: None)
    manifest = adapter["manifest"]
    version, path, alias = adapter["version"], adapter["path"], adapter["adapter_name"]
    candidate = f"{alias}-{version}"
    state = registry.deployments()
    previous = state.get("active")
    previous_path = str(registry.path_for(previous)) if previous else None
    smoke_cfg = manifest.get("smoke", {})
    prompt = config.smoke_prompt or smoke_cfg.get("prompt") or "Hello"
    max_tokens = config.smoke_max_tokens or smoke_cfg.get("max_tokens") or 16
    reference = None
    if config.require_reference_match and not config.smoke_prompt and not config.smoke_max_tokens:
        reference = smoke_cfg.get("reference_token_ids")
    eos_id = _eos_id(manifest)

    def fail(stage: str, reason: str, details: dict | None = None, server_stage: bool = True):
        gone = server_stage and not vllm.healthy()
        registry.record_deployment(version=version, status="rolled_back", stage=stage, reason=reason,
                                   active_after=previous, **({"server_gone": True} if gone else {}))
        metadata = {"stage": stage, "reason": reason, "still_active": previous or "",
                    "details": MetadataValue.json(details or {})}
        if gone:
            # nothing can be unloaded or restored on a dead server; a restarted one holds no runtime-loaded adapter
            raise VLLMGone(
                description=f"deployment of {candidate} failed at {stage}: the vLLM server at {vllm.base_url} went "
                            f"away during the deployment ({reason}); rolled back: the registry still names "
                            f"{'previous ' + previous if previous else 'no adapter'} as active and {version} is not "
                            f"deployed; a restarted server serves no adapter under {alias!r} until adapter_deployment "
                            "runs again", metadata=metadata)
        raise DeploymentFailed(
            description=f"deployment of {candidate} failed at {stage}: {reason}; rolled back, "
                        f"serving {'previous ' + previous if previous else 'no adapter'} under {alias!r}",
            metadata=metadata,
        )

    if not manifest.get("eval_gate", {}).get("passed"):
        fail("eval_gate", "the adapter did not pass the eval-loss gate", server_stage=False)
    if not manifest.get("task_gate", {}).get("passed", True):
        fail("task_gate", "the adapter did not beat the base on held-out grounded questions (task gate)",
             server_stage=False)
    unreachable = (f"vLLM server at {vllm.base_url} is not reachable; start one with `python -m resources.llm` or "
                   "set DOCPLATFORM_VLLM_URL; nothing was changed")
    if not vllm.healthy():
        raise VLLMGone(description=unreachable, metadata={"still_active": previous or ""})
    try:
        loaded = vllm.model_ids()
    except VLLMError as exc:
        raise VLLMGone(description=f"{unreachable} ({exc})", metadata={"still_active": previous or ""}) from exc

    def unload(name: str) -> None:
        # rollback steps must not be cut short by a server that went away mid-deployment
        try:
            vllm.unload_adapter(name)
        except VLLMError as exc:
            log(f"could not unload {name}: {exc}")

    if candidate in loaded:
        unload(candidate)
    # 1. load the candidate under its versioned name
    try:
        vllm.load_adapter(candidate, path)
    except VLLMError as exc:
        fail("load", str(exc))
    log(f"loaded {candidate} from {path}")
    fault_point("after_adapter_load")
    # 2. smoke completion on the candidate; a failure unloads it, the alias is untouched
    ok, details = _smoke(vllm, candidate, prompt, max_tokens, reference, eos_id)
    if not ok:
        unload(candidate)
        reason = details.get("error", "smoke completion failed")
        if "reference_token_ids" in details and smoke_cfg.get("reference_dtype", "float32") != "float32":
            reason += (f" (the reference was recorded in {smoke_cfg['reference_dtype']}: greedy tokens of another "
                       "runtime need not match exactly; set require_reference_match=false to check for a non-empty "
                       "completion only)")
        fail("smoke", reason, details)
    fault_point("before_alias_swap")
    # 3. swap the stable alias in place, smoke it again; restore the previous adapter on failure
    try:
        vllm.load_adapter(alias, path, inplace=alias in loaded)
        ok, alias_details = _smoke(vllm, alias, prompt, max_tokens, reference, eos_id)
    except VLLMError as exc:
        ok, alias_details = False, {"error": str(exc)}
    if not ok:
        unload(candidate)
        reason = alias_details.get("error", "alias smoke completion failed")
        if previous_path:
            try:
                vllm.load_adapter(alias, previous_path, inplace=True)
            except VLLMError as exc:
                log(f"could not restore {previous} under {alias}: {exc}")
                reason += f"; restoring {previous} under {alias!r} failed too: {exc}"
        else:
            unload(alias)
        fail("alias_swap", reason, alias_details)
    # 4. the previous versioned name is no longer needed
    if previous and previous != version and f"{alias}-{previous}" in loaded:
        unload(f"{alias}-{previous}")
    registry.record_deployment(version=version, status="deployed", previous=previous, served_as=[alias, candidate])
    registry.update_manifest(version, status="deployed")
    if previous and previous != version and (registry.path_for(previous) / "manifest.json").is_file():
        registry.update_manifest(previous, status="superseded", superseded_by=version)
    return {"version": version, "served_as": alias, "versioned_name": candidate, "previous": previous,
            "base_url": vllm.base_url, "smoke": details}


def _eos_id(manifest: dict) -> int | None:
    try:
        config = json.loads((Path(manifest["base_model"]["path"]) / "config.json").read_text())
        eos = config.get("eos_token_id")
        return eos[0] if isinstance(eos, list) else eos
    except (KeyError, OSError, ValueError):
        return None


