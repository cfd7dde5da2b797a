"""Dagster ConfigurableResources shared by every stage."""

from resources.documents import DocumentSource
from resources.embedder import Embedder
from resources.milvus import MilvusStore

__all__ = ["DocumentSource", "Embedder", "MilvusStore"]
