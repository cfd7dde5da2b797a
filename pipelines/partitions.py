"""Partitioning shared by every per-document stage: one dynamic partition per document."""

from dagster import DynamicPartitionsDefinition

DOCUMENTS_PARTITIONS_NAME = "documents"
documents_partitions = DynamicPartitionsDefinition(name=DOCUMENTS_PARTITIONS_NAME)
