"""Runs the real jobs in-process against a temporary Dagster instance and real stores."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterInstance, build_sensor_context, instance_for_test

from pipelines.partitions import DOCUMENTS_PARTITIONS_NAME
from pipelines.definitions import build_defs
from pipelines.sensors import documents_folder_sensor
from resources import DocumentSource, MilvusStore
from resources.llm import free_port  # noqa: F401  (a free loopback port for servers that tests start)

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def failure_message(result) -> str:
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            data = event.step_failure_data
            parts = [data.user_failure_data.description if data.user_failure_data else None,
                     data.error.message if data.error else None]
            return " ".join(p for p in parts if p)
    return ""


@dataclass
class Platform:
    root: Path
    docs: Path
    instance: DagsterInstance
    defs: object
    milvus: MilvusStore
    cursor: str | None = None

    @classmethod
    @contextmanager
    def create(cls, tmp_path: Path, docs_dir: Path, **overrides):
        milvus = MilvusStore(uri=str(tmp_path / "milvus.db"))
        from resources.graph_store import GraphStore

        resources = {"documents": DocumentSource(root=str(docs_dir)), "milvus": milvus,
                     "graph_store": GraphStore(path=str(tmp_path / "graph.lbug"))} | overrides
        (tmp_path / "dagster").mkdir(exist_ok=True)
        with instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
            yield cls(tmp_path, docs_dir, instance, build_defs(**resources), milvus)

    @property
    def partitions(self) -> set[str]:
        return set(self.instance.get_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME))

    def add(self, *keys: str) -> None:
        self.instance.add_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME, list(keys))

    def ingest(self, key: str):
        job = self.defs.resolve_job_def("ingest_job")
        return job.execute_in_process(partition_key=key, instance=self.instance, raise_on_error=False, run_config=QUIET)

    def ingest_batch(self, keys: list[str]):
        """One run over the adjacent document partitions keys[0]..keys[-1] (as the sensor requests them)."""
        from pipelines.partitions import range_tags

        job = self.defs.resolve_job_def("ingest_job")
        return job.execute_in_process(tags=range_tags(keys[0], keys[-1]), instance=self.instance, raise_on_error=False,
                                      run_config=QUIET)

    def ingest_all(self) -> dict:
        from resources.documents import DocumentSource as _DS

        keys = sorted(_DS(root=str(self.docs)).scan())
        self.add(*[k for k in keys if k not in self.partitions])
        return {key: self.ingest(key) for key in keys}

    def tick(self):
        """One evaluation of the documents sensor; applies its partition requests and runs its runs."""
        resources = {"documents": DocumentSource(root=str(self.docs), scan_cache=str(self.root / "scan-cache.sqlite")),
                     "milvus": self.milvus, "embedder": self.defs.resources["embedder"]}
        context = build_sensor_context(instance=self.instance, cursor=self.cursor, resources=resources,
                                       definitions=self.defs)
        result = documents_folder_sensor(context)
        self.cursor = result.cursor
        for request in result.dynamic_partitions_requests or []:
            if type(request).__name__ == "AddDynamicPartitionsRequest":
                self.add(*request.partition_keys)
            else:
                for key in request.partition_keys:
                    self.instance.delete_dynamic_partition(DOCUMENTS_PARTITIONS_NAME, key)
        runs = []
        for request in result.run_requests or []:
            job = self.defs.resolve_job_def(request.job_name)
            config = dict(request.run_config or {}) | QUIET
            runs.append((request, job.execute_in_process(partition_key=request.partition_key, run_config=config,
                                                         tags=request.tags or None,
                                                         instance=self.instance, raise_on_error=False)))
        return result, runs

    def vectors(self, doc_id: str | None = None) -> list[dict]:
        with self.milvus.client() as client:
            if doc_id is None:
                return [{"count": self.milvus.count(client)}]
            return self.milvus.rows(client, doc_id, ["chunk_id", "doc_sha256", "text"])

    def count(self, doc_id: str | None = None) -> int:
        with self.milvus.client() as client:
            return self.milvus.count(client, doc_id)


def after_first_step_retry(instance, before: set, action, timeout_s: float, poll_s: float = 0.5) -> None:
    """Call action once a run not in before has a step up for retry (the fault was seen and retried), or at timeout:
    the tests restart a server or release a held store at that moment."""
    import time

    from dagster import DagsterEventType

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        for run in instance.get_runs(limit=3):
            if run.run_id not in before and instance.get_records_for_run(
                    run.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY).records:
                action()
                return
        time.sleep(poll_s)
    action()


def stop_process_group(proc, sig, timeout_s: float = 60) -> None:
    """Stop a server started with start_new_session=True: sig to its whole group, SIGKILL if it outlives timeout_s."""
    import os
    import signal
    import subprocess

    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
