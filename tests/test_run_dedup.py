"""Overlapping requests for the same change, run by a real `dagster-daemon run` on the repository's dagster.yaml:
the documents sensor (evaluated by the daemon), the nightly schedule (its function evaluated here, at the moment the
sensor's run waits in the queue) and a manual request (as the UI's Materialize submits it) all ask for one new
document. The queued run coordinator starts them one after the other (embedded-store tag limit), so their writes never
interleave; the first indexes the document, the later ones find it indexed with the same content and stage
fingerprint and do no work (raw_documents skips it, every later step is skipped), reported in the run's metadata."""

import os
import shutil
import signal
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter, build_schedule_context
from dagster._core.run_coordinator import SubmitRunContext
from dagster._core.storage.tags import RUN_KEY_TAG, SCHEDULE_NAME_TAG

from assets.batches import UNCHANGED_TAG
from assets.ingestion import GRAPH_PENDING
from pipelines.definitions import defs
from pipelines.schedules import nightly_reindex_schedule
from resources import DocumentSource, Embedder, MilvusStore
from resources.graph_store import GraphStore
from tests.platform_harness import stop_process_group

REPO = Path(__file__).resolve().parent.parent
DOC = "oncall-handbook.txt"


def _submit(instance, like, tags: dict):
    """A queued ingest_job run for DOC in the daemon's code location (the origin of the sensor's run)."""
    job = defs.resolve_job_def("ingest_job")
    run = instance.create_run_for_job(job, tags=dict(job.tags) | {"dagster/partition": DOC} | tags,
                                      remote_job_origin=like.remote_job_origin, job_code_origin=like.job_code_origin)
    return instance.run_coordinator.submit_run(SubmitRunContext(run, workspace=None))


def _wait(predicate, timeout: float, what: str, log: Path):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n{log.read_text()[-4000:]}")


def _events(instance, run_id: str, event_type) -> list:
    return [r.event_log_entry for r in instance.get_records_for_run(run_id, of_type=event_type).records]


@pytest.mark.slow
def test_daemon_serialises_sensor_nightly_and_manual_runs_and_later_ones_do_nothing(tmp_path):
    home, data, docs = tmp_path / "home", tmp_path / "data", tmp_path / "docs"
    home.mkdir(), docs.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    shutil.copy(REPO / "sample_corpus" / DOC, docs / DOC)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCPLATFORM_")} | {
        "DAGSTER_HOME": str(home), "DOCPLATFORM_DATA_DIR": str(data), "DOCPLATFORM_DOCUMENTS_DIR": str(docs)}
    log = tmp_path / "daemon.log"
    daemon = subprocess.Popen(["dagster-daemon", "run", "-w", str(REPO / "workspace.yaml")], cwd=REPO, env=env,
                              stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    milvus = MilvusStore(uri=str(data / "milvus.db"))
    try:
        with DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
            # 1. the daemon's first sensor tick registers the document and queues its run
            sensor_run = _wait(lambda: next(iter(instance.get_runs(RunsFilter(job_name="ingest_job"))), None), 240,
                               "the sensor's run", log)
            assert sensor_run.tags["trigger"] == "documents_sensor"
            assert sensor_run.tags.get("dagster/partition") == DOC
            # 2. meanwhile the nightly fires: the document is not indexed yet, so it asks for it too (its own run key)
            context = build_schedule_context(
                instance=instance, scheduled_execution_time=datetime(2026, 12, 6, 2, tzinfo=timezone.utc),
                resources={"documents": DocumentSource(root=str(docs)), "milvus": milvus, "embedder": Embedder()})
            requests = list(nightly_reindex_schedule(context))
            assert [r.partition_key for r in requests] == [DOC], requests
            nightly = _submit(instance, sensor_run, dict(requests[0].tags) | {
                RUN_KEY_TAG: requests[0].run_key, SCHEDULE_NAME_TAG: "nightly_reindex_schedule"})
            # 3. and an operator materializes the same partition by hand
            manual = _submit(instance, sensor_run, {"trigger": "manual"})
            assert {nightly.status, manual.status} == {DagsterRunStatus.QUEUED}
            assert not instance.get_run_by_id(sensor_run.run_id).is_finished  # an equal run is queued or running
            ids = [sensor_run.run_id, nightly.run_id, manual.run_id]

            records = _wait(lambda: (rs := instance.get_run_records(RunsFilter(run_ids=ids)))
                            and all(r.dagster_run.is_finished for r in rs) and rs, 420, "the three runs", log)
            by_id = {r.dagster_run.run_id: r for r in records}
            for record in records:
                run_id = record.dagster_run.run_id
                failed_checks = [e.dagster_event.event_specific_data.check_name
                                 for e in _events(instance, run_id, DagsterEventType.ASSET_CHECK_EVALUATION)
                                 if not e.dagster_event.event_specific_data.passed]
                step_errors = [e.dagster_event.step_key + ": " + str(e.dagster_event.event_specific_data.error)[:1500]
                               for e in _events(instance, run_id, DagsterEventType.STEP_FAILURE)]
                assert record.dagster_run.status == DagsterRunStatus.SUCCESS, (
                    f"run {run_id} ({record.dagster_run.tags.get('dagster/sensor_name') or 'queued by the test'}) "
                    f"{record.dagster_run.status}; failed checks {failed_checks}; step errors {step_errors}\n"
                    f"{log.read_text()[-3000:]}")
            # never interleaved: each run started after the previous one ended, oldest first (the queue is FIFO)
            spans = sorted((by_id[i].start_time, by_id[i].end_time, i) for i in ids)
            assert [i for _, _, i in spans] == ids
            for (_, end, _), (start, _, _) in zip(spans, spans[1:]):
                assert end <= start, spans
            assert len(instance.get_runs(RunsFilter(job_name="ingest_job"))) == 3  # the sensor asked once only

            # the sensor's run indexed the document ...
            first = {e.dagster_event.asset_key: e.dagster_event.step_materialization_data.materialization.metadata
                     for e in _events(instance, sensor_run.run_id, DagsterEventType.ASSET_MATERIALIZATION)}
            assert first[AssetKey("chunk_vectors")]["newly_embedded"].value > 0
            assert AssetKey("documents_indexed") in first
            # ... the nightly's and the manual run found it indexed and did nothing: no step after raw_documents ran
            for run_id in ids[1:]:
                run = instance.get_run_by_id(run_id)
                assert run.tags[UNCHANGED_TAG] == f'["{DOC}"]'
                assert _events(instance, run_id, DagsterEventType.ASSET_MATERIALIZATION) == []
                skipped = {e.step_key for e in _events(instance, run_id, DagsterEventType.STEP_SKIPPED)}
                assert {"parsed_elements", "chunk_vectors", "knowledge_graph", "documents_indexed"} <= skipped
                assert not _events(instance, run_id, DagsterEventType.STEP_START) or {
                    e.step_key for e in _events(instance, run_id, DagsterEventType.STEP_START)} == {"raw_documents"}
                observed = [e.dagster_event.asset_observation_data.asset_observation
                            for e in _events(instance, run_id, DagsterEventType.ASSET_OBSERVATION)]
                assert [(o.partition, o.metadata["status"].value) for o in observed] == [(DOC, "unchanged")]
    finally:
        stop_process_group(daemon, signal.SIGTERM)

    # one run's worth of index: the document's chunks once, its state final, its facts in the graph
    state = milvus.document_states()[DOC]
    assert not state["fingerprint"].startswith(GRAPH_PENDING)
    with milvus.client() as client:
        assert milvus.count(client, DOC) == state["chunks"] > 0
    with GraphStore(path=str(data / "graph.lbug")).session() as graph:
        assert graph.document_facts(DOC)["entities"]
