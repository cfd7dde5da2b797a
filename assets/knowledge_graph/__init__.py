"""Knowledge-graph stage: ontology-guided extraction (plain modules, testable without Dagster) and thin assets.

    extract     orchestrates the layers for one document's chunks -> entities, relations, attributes
    assets      graph_facts / knowledge_graph assets and the purge op
"""

from assets.knowledge_graph.assets import (
    domain_range_violations,
    graph_facts,
    knowledge_graph,
    knowledge_graph_assets,
    purge_document_graph,
)
from assets.knowledge_graph.extract import Resolver, extract_facts

__all__ = ["Resolver", "domain_range_violations", "extract_facts", "graph_facts", "knowledge_graph",
           "knowledge_graph_assets", "purge_document_graph"]
