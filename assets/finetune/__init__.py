"""Fine-tune stage: instruction dataset -> LoRA adapter (gates) -> vLLM deployment with rollback.

    pii         PII scrubbing (plain functions)
    raft        RAFT examples: questions from facts, graph paths and key sentences; gold among distractors
    dataset     PII scrubbing of the sources, dedup, leak-free train/eval split, saved with datasets
    train       LoRA training on TRL SFTTrainer (peft; unsloth on CUDA)
    evaluate    the gates deciding whether an adapter may be deployed
    deploy      vLLM load / smoke / alias swap / rollback
    assets      the thin Dagster assets: finetune_dataset, lora_adapter, adapter_deployment
    extraction  the extraction adapter's rows: examples.jsonl + trusted graph facts in the LLM layer's format
    extraction_assets  extraction_dataset -> extraction_adapter -> extraction_adapter_deployment

This module re-exports what pipelines/ and the tests import.
"""

from assets import _offline  # noqa: F401
from assets.finetune.assets import GROUP, adapter_deployment, finetune_assets, finetune_dataset, lora_adapter
from assets.finetune.dataset import (
    COLUMNS,
    InstructionDatasetConfig,
    _materialize_dataset,
    build_instruction_examples,
    example_key,
    leakage,
    schema_problems,
    source_chunks,
)
from assets.finetune.extraction_assets import (
    extraction_adapter,
    extraction_adapter_deployment,
    extraction_assets,
    extraction_dataset,
)
from assets.finetune.deploy import DeploymentConfig, DeploymentFailed, deploy_adapter
from assets.finetune.evaluate import eval_gate
from assets.finetune.pii import find_pii, scrub_pii
from assets.finetune.train import LoraTrainingConfig, choose_backend, greedy_reference, train_lora
from resources.llm import VLLMError

__all__ = [
    "COLUMNS", "GROUP", "extraction_adapter", "extraction_adapter_deployment", "extraction_assets",
    "extraction_dataset", "DeploymentConfig", "DeploymentFailed", "InstructionDatasetConfig", "LoraTrainingConfig",
    "VLLMError", "_materialize_dataset", "adapter_deployment", "build_instruction_examples", "choose_backend",
    "deploy_adapter", "eval_gate", "example_key", "find_pii", "finetune_assets", "finetune_dataset",
    "greedy_reference", "leakage", "lora_adapter", "schema_problems", "scrub_pii", "source_chunks", "train_lora",
]
