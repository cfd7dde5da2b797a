"""Sensor: keeps the document partitions in step with the documents folder."""


import hashlib
import json

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from pipelines.partitions import DOCUMENTS_PARTITIONS_NAME, documents_partitions
from pipelines.jobs import ingest_job, purge_documents_job
from resources.documents import DocumentSource


def plan_changes(previous: dict[str, str], current: dict[str, str], partitions: set[str]):
    """(to_ingest, to_delete) from the last seen {key: sha256}, the folder now, and the registered partitions."""
    to_ingest = sorted(k for k, sha in current.items() if k not in partitions or previous.get(k) != sha)
    to_delete = sorted((partitions | set(previous)) - set(current))
    return to_ingest, to_delete


@sensor(
    jobs=[ingest_job, purge_documents_job],
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Adds/removes document partitions and requests runs when files are added, changed or deleted.",
)
def documents_folder_sensor(context: SensorEvaluationContext, documents: DocumentSource):
    seen = json.loads(context.cursor) if context.cursor else {}
    scanned = documents.scan(known=seen)
    previous = {key: state["sha256"] for key, state in seen.items()}
    current = {key: doc.sha256 for key, doc in scanned.items()}
    cursor = json.dumps({key: {"sha256": d.sha256, "size": d.size, "mtime_ns": d.mtime_ns} for key, d in scanned.items()})
    partitions = set(context.instance.get_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME))
    to_ingest, to_delete = plan_changes(previous, current, partitions)
    if not to_ingest and not to_delete:
        return SensorResult(skip_reason=SkipReason("no document added, changed or deleted"), cursor=cursor)
    run_requests = [
        RunRequest(job_name=ingest_job.name, partition_key=key, run_key=f"{key}@{current[key]}@{scanned[key].mtime_ns}", tags={"doc_sha256": current[key]})
        for key in to_ingest
    ]
    dynamic_requests = []
    new_keys = [k for k in to_ingest if k not in partitions]
    if new_keys:
        dynamic_requests.append(documents_partitions.build_add_request(new_keys))
    if to_delete:
        gone = [k for k in to_delete if k in partitions]
        if gone:
            dynamic_requests.append(documents_partitions.build_delete_request(gone))
        run_requests.append(
            RunRequest(
                job_name=purge_documents_job.name,
                run_key="purge:" + hashlib.sha256(json.dumps([to_delete, current], sort_keys=True).encode()).hexdigest()[:16],
                run_config=purge_run_config(to_delete),
            )
        )
    return SensorResult(run_requests=run_requests, dynamic_partitions_requests=dynamic_requests, cursor=cursor)


def purge_run_config(doc_ids: list[str]) -> dict:
    """Every op of the purge job takes the same list of deleted document ids."""
    return {"ops": {node.name: {"config": {"doc_ids": doc_ids}} for node in purge_documents_job.graph.nodes}}
