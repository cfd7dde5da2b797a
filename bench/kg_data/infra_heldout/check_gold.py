"""Validate the held-out knowledge-graph gold set against its ontology and its documents.

Run from the repo root: python bench/kg_data/infra_heldout/check_gold.py [--set-dir bench/kg_data/infra_dev2]
The set is only useful if every gold fact is a legal triple of the ontology, is stated in a document that
exists, and the multi-hop answers follow from the gold facts; this script (and tests/test_heldout_gold.py)
refuses a gold file that drifts from any of that.
"""

import argparse
import json
import sys
from pathlib import Path

import rdflib
from rdflib.namespace import OWL, RDF, RDFS

SET_DIR = Path("bench/kg_data/infra_heldout")
ONTOLOGY = Path("ontology_schemas/infrastructure.ttl")
KNOWN_ENTITIES = Path("ontology_schemas/known_entities.ttl")
ALLOWED_SUFFIXES = {".md", ".txt", ".html"}


def load_ontology_terms(path: Path = ONTOLOGY) -> tuple[dict, dict]:
    """Classes with all their superclasses ({local: {local, ...}}) and relations ({local: (domain, range)})."""
    graph = rdflib.Graph().parse(str(path), format="turtle")
    local = lambda uri: str(uri).rsplit("#", 1)[-1].rsplit("/", 1)[-1]
    classes = {c for c in graph.subjects(RDF.type, OWL.Class)}
    ancestors = {}
    for cls in classes:
        seen = set(graph.transitive_objects(cls, RDFS.subClassOf))
        ancestors[local(cls)] = {local(c) for c in seen}
    relations = {}
    for prop in graph.subjects(RDF.type, OWL.ObjectProperty):
        domain, range_ = graph.value(prop, RDFS.domain), graph.value(prop, RDFS.range)
        if domain is None or range_ is None:
            continue  # provenance annotations such as kg:mentionedIn
        relations[local(prop)] = (local(domain), local(range_))
    return ancestors, relations


def known_entity_labels(path: Path = KNOWN_ENTITIES) -> set[str]:
    graph = rdflib.Graph().parse(str(path), format="turtle")
    return {str(label).lower() for label in graph.objects(None, RDFS.label)}


def follow_hops(relations: dict, classes: dict, start: str, hops: list, end: str, transitive: set) -> list[str]:
    """Entities of class start whose chain of (relation, class) hops reaches end; transitive relations closed."""
    edges = {}
    for relation, pairs in relations.items():
        adjacency = {}
        for source, target in pairs:
            adjacency.setdefault(source, set()).add(target)
        if relation in transitive:
            for source in list(adjacency):
                frontier, reached = list(adjacency[source]), set()
                while frontier:
                    node = frontier.pop()
                    if node not in reached:
                        reached.add(node)
                        frontier.extend(adjacency.get(node, ()))
                adjacency[source] = reached
        edges[relation] = adjacency

    def reach(node, remaining):
        if not remaining:
            return {node}
        (relation, cls), rest = remaining[0], remaining[1:]
        found = set()
        for target in edges.get(relation, {}).get(node, ()):
            if classes.get(target) == cls:
                found |= reach(target, rest)
        return found

    return sorted(name for name, cls in classes.items() if cls == start and end in reach(name, hops))


def check(set_dir: Path = SET_DIR, ontology: Path = ONTOLOGY) -> tuple[list[str], dict]:
    """Problems found (empty when the gold is consistent) and the set's counts."""
    problems = []
    gold = json.loads((set_dir / "gold.json").read_text(encoding="utf-8"))
    ancestors, declared = load_ontology_terms(ontology)
    transitive = {"DEPENDS_ON"}  # declared owl:TransitiveProperty; answers must hold with and without closure
    for key in ("about", "relations", "must_not", "multi_hop", "entity_classes", "by_document"):
        if key not in gold:
            problems.append(f"gold.json lacks key {key!r}")
    relations, classes = gold["relations"], gold["entity_classes"]

    docs_dir = set_dir / "docs"
    documents = sorted(p for p in docs_dir.iterdir() if p.is_file())
    for path in documents:
        if path.suffix not in ALLOWED_SUFFIXES:
            problems.append(f"{path.name}: only {sorted(ALLOWED_SUFFIXES)} documents belong in the set")
    texts = {p.name: p.read_text(encoding="utf-8").lower() for p in documents}
    all_text = "\n".join(texts.values())

    for cls in set(classes.values()):
        if cls not in ancestors:
            problems.append(f"entity_classes uses {cls!r}, not a class of {ontology}")
    gold_names = {name for pairs in relations.values() for pair in pairs for name in pair}
    for name in sorted(gold_names - set(classes)):
        problems.append(f"{name!r} is in relations but has no entity_classes entry")
    for name in sorted(set(classes) - gold_names):
        problems.append(f"{name!r} has a class but takes part in no gold relation")

    for relation, pairs in relations.items():
        if relation not in declared:
            problems.append(f"relation {relation!r} is not declared in {ontology}")
            continue
        domain, range_ = declared[relation]
        for source, target in pairs:
            if domain not in ancestors.get(classes.get(source), {None}):
                problems.append(f"{relation}({source}, {target}): {source} is {classes.get(source)}, domain is {domain}")
            if range_ not in ancestors.get(classes.get(target), {None}):
                problems.append(f"{relation}({source}, {target}): {target} is {classes.get(target)}, range is {range_}")
        if len({tuple(p) for p in pairs}) != len(pairs):
            problems.append(f"{relation} lists a pair twice")

    union = {}
    for filename, facts in gold["by_document"].items():
        if filename not in texts:
            problems.append(f"by_document names {filename!r}, which is not in {docs_dir}")
            continue
        for relation, pairs in facts.items():
            for source, target in pairs:
                union.setdefault(relation, set()).add((source, target))
    gold_set = {relation: {tuple(p) for p in pairs} for relation, pairs in relations.items()}
    if {r: s for r, s in union.items() if s} != {r: s for r, s in gold_set.items() if s}:
        for relation in sorted(set(union) | set(gold_set)):
            extra = union.get(relation, set()) - gold_set.get(relation, set())
            missing = gold_set.get(relation, set()) - union.get(relation, set())
            if extra:
                problems.append(f"by_document has {relation} {sorted(extra)} not in relations")
            if missing:
                problems.append(f"relations has {relation} {sorted(missing)} that no document states")

    for name in sorted(gold_names):
        if name.lower() not in all_text:
            problems.append(f"gold entity {name!r} occurs in no document")
    known = known_entity_labels()
    reused = {n for n in gold_names if n.lower() in known}
    if reused:
        problems.append(f"names reused from known_entities.ttl: {sorted(reused)}")

    for item in gold["must_not"]:
        relation, source, target, why = item
        if relation not in declared:
            problems.append(f"must_not relation {relation!r} is not declared")
        if (source, target) in gold_set.get(relation, set()):
            problems.append(f"must_not {relation}({source}, {target}) is also a gold relation")
        for name in (source, target):
            if name.lower() not in all_text:
                problems.append(f"must_not names {name!r}, which no document mentions")
        if not why.strip():
            problems.append(f"must_not {relation}({source}, {target}) gives no reason")

    for item in gold["multi_hop"]:
        for relation, cls in item["hops"]:
            if relation not in declared or cls not in ancestors:
                problems.append(f"{item['q']!r}: hop ({relation}, {cls}) is not in the ontology")
        if item["start"] not in ancestors:
            problems.append(f"{item['q']!r}: start class {item['start']!r} is not in the ontology")
        if item["answer"] != sorted(item["answer"]) or not item["answer"]:
            problems.append(f"{item['q']!r}: answer must be a non-empty sorted list")
        for closure in (set(), transitive):
            derived = follow_hops(relations, classes, item["start"], item["hops"], item["end"], closure)
            if derived != item["answer"]:
                mode = "transitive DEPENDS_ON" if closure else "direct edges"
                problems.append(f"{item['q']!r}: answer {item['answer']} but gold ({mode}) gives {derived}")

    korean = [name for name, text in texts.items() if any("\uac00" <= ch <= "\ud7a3" for ch in text)
              and sum("\uac00" <= ch <= "\ud7a3" for ch in text) > 200]
    korean_facts = {(r, tuple(p)) for name in korean for r, pairs in gold["by_document"].get(name, {}).items()
                    for p in pairs}
    counts = {
        "documents": len(documents),
        "relations": sum(len(p) for p in relations.values()),
        "korean_documents": len(korean),
        "relations_stated_in_korean_documents": len(korean_facts),
        "must_not": len(gold["must_not"]),
        "multi_hop": len(gold["multi_hop"]),
    }
    return problems, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Validate a knowledge-graph gold set against the ontology.")
    parser.add_argument("--set-dir", type=Path, default=SET_DIR, help=f"the set's folder (default {SET_DIR})")
    problems, counts = check(parser.parse_args(argv).set_dir)
    for problem in problems:
        print("PROBLEM:", problem)
    print(json.dumps(counts, ensure_ascii=False))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
