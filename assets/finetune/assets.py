"""The fine-tune stage's Dagster assets: thin wrappers over the plain modules of this package."""

import json
import os
import shutil
import tempfile
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    MetadataValue,
    Output,
    RetryRequested,
    asset,
)

from assets.finetune.dataset import InstructionDatasetConfig, _materialize_dataset, _mkdir
from assets.finetune.deploy import DeploymentConfig, VLLMGone, deploy_adapter
from assets.finetune.evaluate import eval_gate, gate_table
from assets.finetune.evaluate import task_gate as task_gate_verdict
from assets.finetune.train import LOSS_PLOT, LoraTrainingConfig, train_lora
from resources.embedder import Embedder
from resources.llm import AdapterRegistry, BaseModelFolder, VLLMServer, folder_fingerprint
from resources.milvus import MilvusStore

GROUP = "finetune"


@asset(
    group_name=GROUP,
    ins={
        # every document partition; partitions that failed (or were not extracted yet) are skipped
        "document_chunks": AssetIn(metadata={"allow_missing_partitions": True}),
        "graph_facts": AssetIn(metadata={"allow_missing_partitions": True}),
    },
    description="RAFT examples from every document's chunks and graph facts (question, gold chunk among distractors, "
                "cited answer): PII removed, deduplicated, split into train/eval by source chunk, saved with datasets.",
    check_specs=[
        AssetCheckSpec("dataset_schema_valid", asset="finetune_dataset", blocking=True,
                       description="Both splits present, non-empty, string columns id/instruction/input/output/..."),
        AssetCheckSpec("no_pii_remaining", asset="finetune_dataset", blocking=True,
                       description="No email, phone number, Korean resident registration number or Korean "
                                   "address left."),
        AssetCheckSpec("no_train_eval_leakage", asset="finetune_dataset", blocking=True,
                       description="No eval example, prompt or response identical to a train one."),
    ],
)
def finetune_dataset(context: AssetExecutionContext, config: InstructionDatasetConfig, document_chunks, graph_facts,
                     milvus: MilvusStore, embedder: Embedder):
    yield from _materialize_dataset(context, config, document_chunks, graph_facts, milvus, embedder)


def train_and_publish(context: AssetExecutionContext, config: LoraTrainingConfig, dataset: dict,
                      base_model: BaseModelFolder, registry: AdapterRegistry, messages_of=None, task_gate: bool = True):
    """Train on dataset (finetune_dataset's record) and publish the adapter with its manifest in registry; the
    answer adapter and the extraction adapter share it. Returns {"path", "manifest", "metrics", "scores" (task
    gate), "passed" (eval gate), "task_passed", "task_reasons", "plot" (loss curves, base64 PNG)}."""
    base = base_model.resolve()
    demo = base_model.is_demo
    if demo:
        context.log.warning(f"base model is the TINY DEMO Llama (random weights) at {base}: "
                            "set DOCPLATFORM_BASE_MODEL to a real local model folder")
    staging_root = _mkdir(registry.family_dir)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=staging_root))
    extra = {"messages_of": messages_of} if messages_of else {}
    try:
        metrics = train_lora(base, dataset["path"], config, staging, log=context.log.info, task_gate=task_gate,
                             **extra)
        passed = eval_gate(metrics["base_eval_loss"], metrics["eval_loss"], config.min_eval_loss_improvement)
        scores = metrics["task_gate"]
        if task_gate:
            task_passed, task_reasons = task_gate_verdict(scores["base"], scores["adapter"],
                                                          config.task_gate_min_margin)
        else:
            task_passed, task_reasons = True, ["no task gate for this adapter: the eval-loss gate decides"]
        plot = metrics.pop("loss_plot_png_base64")
        manifest = {
            "base_model": {"path": str(base), "fingerprint": folder_fingerprint(base), "tiny_demo": demo},
            "dataset": {"path": dataset["path"], "fingerprint": dataset["fingerprint"],
                        "train_rows": dataset["train_rows"], "eval_rows": dataset["eval_rows"]},
            "hyperparameters": config.model_dump(),
            "metrics": {k: v for k, v in metrics.items() if k not in ("smoke", "task_gate")},
            "smoke": metrics["smoke"],
            "eval_gate": {"passed": passed, "base_eval_loss": metrics["base_eval_loss"],
                          "eval_loss": metrics["eval_loss"], "min_improvement": config.min_eval_loss_improvement},
            "task_gate": {"passed": task_passed, "reasons": task_reasons, "min_margin": config.task_gate_min_margin,
                          "base": scores["base"], "adapter": scores["adapter"]},
            "loss_plot": LOSS_PLOT,
            "status": "candidate" if passed and task_passed else "rejected",
            "dagster_run_id": context.run_id,
        }
        path = registry.publish(staging, manifest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    manifest = json.loads((path / "manifest.json").read_text())
    return {"path": path, "manifest": manifest, "metrics": metrics, "scores": scores, "passed": passed,
            "task_passed": task_passed, "task_reasons": task_reasons, "plot": plot}


@asset(
    group_name=GROUP,
    description="LoRA adapter trained with TRL SFTTrainer + peft (unsloth on CUDA) on the instruction dataset; published as a new "
                "version in the adapter registry with a manifest (base model, dataset, hyperparameters, losses).",
    check_specs=[AssetCheckSpec("eval_loss_improves_over_base", asset="lora_adapter", blocking=True,
                                description="Eval loss with the adapter must be lower than the base model's; "
                                            "otherwise nothing downstream (deployment) runs."),
                 AssetCheckSpec("task_gate_beats_base", asset="lora_adapter", blocking=True,
                                description="On held-out grounded questions (greedy, HF) the adapter must beat the "
                                            "base on answer token-F1 and citation accuracy (exact match not worse); "
                                            "otherwise nothing is deployed.")],
)
def lora_adapter(context: AssetExecutionContext, config: LoraTrainingConfig, finetune_dataset: dict,
                 base_model: BaseModelFolder, adapter_registry: AdapterRegistry):
    published = train_and_publish(context, config, finetune_dataset, base_model, adapter_registry)
    path, manifest, metrics, scores = (published[k] for k in ("path", "manifest", "metrics", "scores"))
    passed, task_passed, task_reasons, plot = (published[k] for k in ("passed", "task_passed", "task_reasons", "plot"))
    improvement = metrics["base_eval_loss"] - metrics["eval_loss"]
    yield Output(
        {"version": manifest["version"], "path": str(path), "adapter_name": adapter_registry.name, "manifest": manifest},
        metadata={"version": manifest["version"], "path": str(path), "backend": metrics["backend"],
                  "base_model": manifest["base_model"]["path"], "tiny_demo_base_model": manifest["base_model"]["tiny_demo"],
                  "base_eval_loss": metrics["base_eval_loss"], "eval_loss": metrics["eval_loss"],
                  "steps": metrics["steps"], "train_seconds": metrics["train_seconds"],
                  "seconds_per_step": metrics["seconds_per_step"], "trainer": metrics["trainer"],
                  "loss_curves": MetadataValue.md(f"![train and eval loss](data:image/png;base64,{plot})\n\n"
                                                  f"`{path / LOSS_PLOT}`"),
                  "task_gate": MetadataValue.md(gate_table(scores["base"], scores["adapter"])),
                  "hyperparameters": MetadataValue.json(config.model_dump())},
    )
    yield AssetCheckResult(
        check_name="eval_loss_improves_over_base", passed=passed, severity=AssetCheckSeverity.ERROR,
        metadata={"base_eval_loss": metrics["base_eval_loss"], "adapter_eval_loss": metrics["eval_loss"],
                  "improvement": improvement, "min_improvement": config.min_eval_loss_improvement,
                  "version": manifest["version"]},
    )
    yield AssetCheckResult(
        check_name="task_gate_beats_base", passed=task_passed, severity=AssetCheckSeverity.ERROR,
        metadata={"table": MetadataValue.md(gate_table(scores["base"], scores["adapter"])),
                  "reasons": MetadataValue.json(task_reasons), "min_margin": config.task_gate_min_margin,
                  "examples": MetadataValue.json(scores["examples"]), "version": manifest["version"]},
    )



# adapter_deployment re-runs its step this often when the vLLM server is down or dies mid-deployment,
# waiting backoff * 2**n seconds between tries (a restarted vLLM pod needs minutes to load its model)
DEPLOY_STEP_RETRIES = int(os.environ.get("DOCPLATFORM_DEPLOY_STEP_RETRIES", "3"))
DEPLOY_STEP_BACKOFF_S = float(os.environ.get("DOCPLATFORM_DEPLOY_STEP_BACKOFF_S", "30"))


@asset(
    group_name=GROUP,
    description="The adapter served by vLLM: dynamic /v1/load_lora_adapter, greedy smoke completion, in-place swap "
                "of the served alias; rollback to the previous adapter on any failure.",
    check_specs=[AssetCheckSpec("smoke_completion_matches_reference", asset="adapter_deployment")],
)
def adapter_deployment(context: AssetExecutionContext, config: DeploymentConfig, lora_adapter: dict,
                       vllm: VLLMServer, adapter_registry: AdapterRegistry):
    yield from deploy_with_retries(context, config, lora_adapter, vllm, adapter_registry)


def deploy_with_retries(context: AssetExecutionContext, config: DeploymentConfig, adapter: dict, vllm: VLLMServer,
                        registry: AdapterRegistry):
    """deploy_adapter, its step retried while the server is gone; the Output and the smoke check (both adapters)."""
    try:
        record = deploy_adapter(vllm, registry, adapter, config, log=context.log.info)
    except VLLMGone as exc:
        # server down or killed mid-deployment (already recorded as rolled back, nothing deployed): a restarted
        # server (a Kubernetes pod comes back by itself) gets the deployment on a later try of this step
        if context.retry_number >= DEPLOY_STEP_RETRIES:
            raise VLLMGone(description=f"{exc.description} (gave up after {DEPLOY_STEP_RETRIES + 1} tries of this "
                                       "step)", metadata=exc.metadata) from exc
        wait = DEPLOY_STEP_BACKOFF_S * 2 ** context.retry_number
        context.log.warning(f"{exc.description}; retry {context.retry_number + 1}/{DEPLOY_STEP_RETRIES} in {wait:g} s")
        raise RetryRequested(max_retries=DEPLOY_STEP_RETRIES, seconds_to_wait=wait) from exc
    yield Output(record, metadata={"version": record["version"], "served_as": record["served_as"],
                                   "previous": record["previous"] or "", "base_url": record["base_url"],
                                   "smoke_text": record["smoke"]["text"]})
    yield AssetCheckResult(check_name="smoke_completion_matches_reference", passed=True,
                           metadata={"token_ids": MetadataValue.json(record["smoke"]["token_ids"])})


finetune_assets = [finetune_dataset, lora_adapter, adapter_deployment]
