"""The self-improving extraction path as Dagster assets: extraction_dataset -> extraction_adapter ->
extraction_adapter_deployment. Thin wrappers over assets/finetune/extraction.py and the shared trainer/deployer;
once deployed, the LLM extraction layer asks the adapter by its served alias (llm.deployed_extraction_model)."""

from dagster import AssetCheckResult, AssetCheckSpec, AssetExecutionContext, AssetIn, Failure, MetadataValue, Output, asset

from assets.finetune.assets import deploy_with_retries, train_and_publish
from assets.finetune.dataset import save_splits
from assets.finetune.deploy import DeploymentConfig
from assets.finetune.extraction import (
    COLUMNS,
    ExtractionDatasetConfig,
    ExtractionTrainingConfig,
    extraction_rows,
    row_messages,
    row_problems,
    split_leakage,
    split_rows,
)
from assets.finetune.train import LOSS_PLOT
from resources.llm import AdapterRegistry, BaseModelFolder, VLLMServer
from resources.milvus import default_data_dir
from resources.ontology_loading import load_ontology

EXTRACTION_GROUP = "extraction_finetune"


def _by_partition(value, is_single) -> list:
    if value is None:
        return []
    return [value] if is_single(value) else [value[key] for key in sorted(value) if value[key]]


@asset(
    group_name=EXTRACTION_GROUP,
    ins={"document_chunks": AssetIn(metadata={"allow_missing_partitions": True}),
         "graph_facts": AssetIn(metadata={"allow_missing_partitions": True})},
    description="Prompt -> JSON answer pairs in the LLM extraction layer's exact format: the ontology folder's "
                "examples.jsonl plus, per chunk, the graph's high-confidence facts of SHACL-conforming documents; "
                "split into train/eval by text, saved with datasets.",
    check_specs=[
        AssetCheckSpec("answers_valid", asset="extraction_dataset", blocking=True,
                       description="Every answer passes the LLM layer's own validation whole (ontology ids, "
                                   "domain/range, names spelled as in the text) and the prompt ends with its text."),
        AssetCheckSpec("no_train_eval_leakage", asset="extraction_dataset", blocking=True,
                       description="No eval text or prompt identical to a train one."),
    ],
)
def extraction_dataset(context: AssetExecutionContext, config: ExtractionDatasetConfig, document_chunks, graph_facts):
    ontology = load_ontology()
    chunks = [row for part in _by_partition(document_chunks, lambda v: isinstance(v, list)) for row in part]
    facts = _by_partition(graph_facts, lambda v: isinstance(v, dict) and "entities" in v)
    rows, stats = extraction_rows(ontology, chunks, facts, config)
    train, evals = split_rows(rows, config.eval_fraction, config.seed)
    if not train or not evals:
        raise Failure(description=f"too few extraction rows for a train/eval split (train={len(train)}, "
                                  f"eval={len(evals)}): add labeled lines to examples.jsonl beside the ontology "
                                  f"({ontology.directory}) or extract more documents",
                      metadata={"stats": MetadataValue.json(stats)})
    target, fingerprint = save_splits(train, evals, COLUMNS, default_data_dir() / "finetune" / "extraction_datasets")
    problems = row_problems(rows, ontology)
    leaks = split_leakage(train, evals)
    yield Output({"path": str(target), "fingerprint": fingerprint, "train_rows": len(train), "eval_rows": len(evals),
                  "ontology_fingerprint": ontology.fingerprint},
                 metadata={"path": str(target), "fingerprint": fingerprint, "train_rows": len(train),
                           "eval_rows": len(evals), "stats": MetadataValue.json(stats),
                           "preview": MetadataValue.md(f"`{train[0]['text'][:200]}`\n\n`{train[0]['output'][:400]}`")})
    yield AssetCheckResult(check_name="answers_valid", passed=not problems,
                           metadata={"problems": MetadataValue.json(problems[:50])})
    yield AssetCheckResult(check_name="no_train_eval_leakage", passed=not any(leaks.values()),
                           metadata={"leaks": MetadataValue.json(leaks)})


@asset(
    group_name=EXTRACTION_GROUP,
    description="Extraction LoRA adapter (TRL SFTTrainer + peft; unsloth on CUDA) on extraction_dataset, published in "
                "the extraction adapter registry with its manifest.",
    check_specs=[AssetCheckSpec("eval_loss_improves_over_base", asset="extraction_adapter", blocking=True,
                                description="Eval loss on held-out texts with the adapter must be below the base "
                                            "model's; otherwise nothing is deployed.")],
)
def extraction_adapter(context: AssetExecutionContext, config: ExtractionTrainingConfig, extraction_dataset: dict,
                       base_model: BaseModelFolder, extraction_adapter_registry: AdapterRegistry):
    registry = extraction_adapter_registry
    published = train_and_publish(context, config, extraction_dataset, base_model, registry,
                                  messages_of=row_messages, task_gate=False)
    path, manifest, metrics, passed, plot = (published[k] for k in ("path", "manifest", "metrics", "passed", "plot"))
    yield Output(
        {"version": manifest["version"], "path": str(path), "adapter_name": registry.name, "manifest": manifest},
        metadata={"version": manifest["version"], "path": str(path), "backend": metrics["backend"],
                  "base_eval_loss": metrics["base_eval_loss"], "eval_loss": metrics["eval_loss"],
                  "steps": metrics["steps"], "train_seconds": metrics["train_seconds"],
                  "train_examples": metrics["train_examples"], "left_out_too_long": metrics["left_out_too_long"],
                  "loss_curves": MetadataValue.md(f"![train and eval loss](data:image/png;base64,{plot})\n\n"
                                                  f"`{path / LOSS_PLOT}`")},
    )
    yield AssetCheckResult(check_name="eval_loss_improves_over_base", passed=passed,
                           metadata={"base_eval_loss": metrics["base_eval_loss"],
                                     "adapter_eval_loss": metrics["eval_loss"], "version": manifest["version"]})


@asset(
    group_name=EXTRACTION_GROUP,
    description="The extraction adapter served by vLLM under the registry's alias (load, greedy smoke against the "
                "training-time reference, alias swap, rollback on failure); the LLM layer then asks it.",
    check_specs=[AssetCheckSpec("smoke_completion_matches_reference", asset="extraction_adapter_deployment")],
)
def extraction_adapter_deployment(context: AssetExecutionContext, config: DeploymentConfig, extraction_adapter: dict,
                                  vllm: VLLMServer, extraction_adapter_registry: AdapterRegistry):
    yield from deploy_with_retries(context, config, extraction_adapter, vllm, extraction_adapter_registry)


extraction_assets = [extraction_dataset, extraction_adapter, extraction_adapter_deployment]
