"""deploy/: the production topology's configs load and say what the README says (validated here, not run here)."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"


@pytest.mark.parametrize("path", [REPO / "dagster.yaml", REPO / "dagster.postgres.yaml", DEPLOY / "dagster" / "dagster.yaml"])
def test_instance_files_pass_dagsters_schema_and_their_classes_config(tmp_path, path, monkeypatch):
    from dagster._config import process_config, resolve_to_config_type
    from dagster._core.instance.config import dagster_instance_config
    from dagster._serdes import ConfigurableClass
    import importlib

    shutil.copy(path, tmp_path / "dagster.yaml")
    for var in ("DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_HOST", "DAGSTER_PG_DB", "DAGSTER_PG_PORT",
                "DOCPLATFORM_IMAGE"):
        monkeypatch.setenv(var, "5432" if var.endswith("PORT") else "x")
    config, _ = dagster_instance_config(str(tmp_path))  # the instance schema (raises on unknown or mistyped keys)
    # each configurable class (storage, coordinator, launcher) validates its own config block
    for section in ("run_coordinator", "run_launcher"):
        if section in config:
            cls = getattr(importlib.import_module(config[section]["module"]), config[section]["class"])
            assert issubclass(cls, ConfigurableClass)
            result = process_config(resolve_to_config_type(cls.config_type()), config[section].get("config") or {})
            assert result.success, (section, [e.message for e in result.errors])
    limits = {(l["key"], l["value"]): l["limit"] for l in config["run_coordinator"]["config"]["tag_concurrency_limits"]}
    assert limits[("docplatform/stage", "finetune")] == 1
    assert config["run_retries"]["enabled"] and config["run_retries"]["max_retries"] >= 1
    if "storage" in config:
        assert set(config["storage"]) == {"postgres"}


def test_production_instance_launches_runs_on_kubernetes():
    config = yaml.safe_load((DEPLOY / "dagster" / "dagster.yaml").read_text())
    assert (config["run_launcher"]["module"], config["run_launcher"]["class"]) == ("dagster_k8s", "K8sRunLauncher")
    assert config["run_monitoring"]["enabled"]


def _manifests(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if doc]


def test_kubernetes_manifests_describe_the_topology():
    dagster = {d["metadata"]["name"]: d for d in _manifests("dagster.yaml")}
    assert dagster["dagster-daemon"]["spec"]["replicas"] == 1  # one daemon per instance
    daemon = dagster["dagster-daemon"]["spec"]["template"]["spec"]["containers"][0]
    assert daemon["command"][:2] == ["dagster-daemon", "run"]
    web = dagster["dagster-webserver"]["spec"]["template"]["spec"]["containers"][0]
    assert web["command"][0] == "dagster-webserver"
    env = dagster["docplatform-env"]["data"]
    assert env["DOCPLATFORM_MILVUS_URI"].startswith("http://") and env["DOCPLATFORM_GRAPH_BACKEND"] == "neo4j"
    exporter = dagster["docplatform-metrics"]["spec"]["template"]["spec"]["containers"][0]
    assert exporter["command"] == ["python", "-m", "pipelines.metrics", "--port", "9108"]

    vllm = {d["kind"]: d for d in _manifests("vllm.yaml")}
    container = vllm["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    tp = int(args[args.index("--tensor-parallel-size") + 1])
    assert tp > 1 and container["resources"]["limits"]["nvidia.com/gpu"] == tp
    assert "--enable-lora" in args and int(args[args.index("--max-loras") + 1]) >= 2
    assert {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"} in container["env"]

    milvus = yaml.safe_load((DEPLOY / "k8s" / "milvus-values.yaml").read_text())
    assert milvus["cluster"]["enabled"] and milvus["queryNode"]["replicas"] >= 2
    neo4j = yaml.safe_load((DEPLOY / "k8s" / "neo4j-values.yaml").read_text())
    assert neo4j["neo4j"]["name"] == "neo4j"


def test_grafana_dashboard_queries_the_exported_metrics():
    dashboard = json.loads((DEPLOY / "grafana" / "docplatform-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in ("docplatform_documents_processed_total", "docplatform_chunks_processed_total",
                   "docplatform_failures_total", "docplatform_ingestion_lag_seconds", "docplatform_index_vectors",
                   "docplatform_graph_entities", "docplatform_adapter_served", "vllm:"):
        assert metric in exprs, metric
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert {job["job_name"] for job in scrape["scrape_configs"]} == {"docplatform", "vllm"}
