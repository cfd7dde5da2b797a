"""Knowledge-graph side of the ask path: entities named in a question, their neighbourhood and multi-hop paths.

Why: a question like "which applications run on servers managed by the Data Team?" is answered by a chain of facts
(Application -RUNS_ON-> Server -MANAGED_BY-> Team) that no single chunk states; the graph has it, with the chunk
that supports every hop. Entities are recognised by the names and aliases the graph holds (and the ontology's
known individuals, so "인프라팀" finds the Platform Team); Hangul forms match inside a word, since Korean particles
glue onto names ("결제팀이"). Paths are ranked by how many question entities they link and how many of the
classes the question speaks of ("applications", "servers", "서버") they pass through.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from resources.ontology import Ontology, normalize_name

_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_SEPARATORS = re.compile(r"[\s_\-]+")
_EDGE_CAP_PER_NODE = 60  # a hub (a team managing 500 servers) must not flood the prompt or the path search
_PATH_CAP = 2000


@dataclass
class QuestionEntity:
    id: str
    name: str
    label: str
    matched: str  # the surface form found in the question
    start: int
    end: int


@dataclass
class GraphPath:
    ids: list[str]
    names: list[str]
    relations: list[str]
    evidence: list[list[str]]  # chunk ids supporting each hop
    doc_ids: list[str]
    score: float = 0.0
    seeds: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The path as grounded_prompt writes graph facts: 'a -REL-> b -REL-> c'."""
        parts = [self.names[0]]
        for relation, name in zip(self.relations, self.names[1:]):
            parts.append(f"-{relation}-> {name}")
        return " ".join(parts)

    @property
    def chunk_ids(self) -> list[str]:
        return sorted({c for hop in self.evidence for c in hop})

    def to_dict(self) -> dict:
        return {"path": self.text, "ids": self.ids, "names": self.names, "relations": self.relations,
                "evidence": self.evidence, "doc_ids": self.doc_ids, "score": round(self.score, 3)}


def _form_pattern(form: str) -> re.Pattern | None:
    """A regex finding one name form in a question: separators flexible; ASCII forms bounded by non-word
    characters, Hangul forms matched inside words (particles follow them, compounds precede them)."""
    words = [w for w in _SEPARATORS.split(form.strip()) if w]
    if not words:
        return None
    if _HANGUL.search(form):
        body = r"[\s_\-]*".join(re.escape(w) for w in words)
        return re.compile(body, re.IGNORECASE)
    body = r"[\s_\-]+".join(re.escape(w) for w in words)
    return re.compile(rf"(?<![A-Za-z0-9_\-]){body}(?![A-Za-z0-9_])", re.IGNORECASE)


def entity_forms(entity: dict, ontology: Ontology) -> set[str]:
    """Name, aliases and the aliases of the known individual the entity is (by name), all surface forms."""
    forms = {entity.get("name") or "", *(entity.get("aliases") or [])}
    keys = {normalize_name(f) for f in forms if f}
    for known in ontology.known_entities:
        if keys & {normalize_name(f) for f in (known.name, *known.aliases)}:
            forms |= {known.name, *known.aliases}
    return {f for f in forms if f and len(normalize_name(f)) >= 2}


def recognize_entities(question: str, entities: list[dict], ontology: Ontology) -> list[QuestionEntity]:
    """Graph entities named in the question, longest match first; overlapping shorter matches dropped."""
    found: list[QuestionEntity] = []
    for entity in entities:
        best = None
        for form in entity_forms(entity, ontology):
            pattern = _form_pattern(form)
            if pattern is None:
                continue
            for match in pattern.finditer(question):
                if best is None or (match.end() - match.start()) > (best.end - best.start):
                    best = QuestionEntity(entity["id"], entity["name"], entity["label"], match.group(0),
                                          match.start(), match.end())
        if best:
            found.append(best)
    found.sort(key=lambda e: (-(e.end - e.start), e.start, e.id))
    kept: list[QuestionEntity] = []
    for candidate in found:
        inside = any(k.start <= candidate.start and candidate.end <= k.end and (k.end - k.start) > (candidate.end - candidate.start)
                     for k in kept)
        if not inside:
            kept.append(candidate)
    return sorted(kept, key=lambda e: (e.start, e.id))


def mentioned_classes(question: str, ontology: Ontology) -> set[str]:
    """Classes the question speaks of by a class word ('applications', 'servers', '서버', 'team')."""
    text = question.casefold()
    out = set()
    for name, info in ontology.classes.items():
        words = {w.casefold() for w in (*info.keywords, *info.labels, info.label, info.local_name)
                 if w and (len(w) >= 2 or _HANGUL.search(w))}
        for word in words:
            if _HANGUL.search(word):
                hit = word in text
            else:
                hit = re.search(rf"(?<![a-z0-9]){re.escape(word)}(e?s)?(?![a-z0-9])", text) is not None
            if hit:
                out.add(name)
                break
    return out


_RELATION_STOPWORDS = {"is", "are", "by", "on", "to", "from", "the", "a", "an", "of", "in", "with"}


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if len(word) >= 4 and word[-1] == word[-2] and word[-1] not in "aeiou":
        word = word[:-1]  # running -> run
    return word[:-1] if word.endswith("e") and len(word) >= 4 else word  # manage -> manag


def mentioned_relations(question: str, ontology: Ontology) -> set[str]:
    """Relations the question speaks of by one of their words ('managed', 'runs', 'depend', '관리')."""
    stems = {_stem(w) for w in re.findall(r"[a-z]+", question.casefold())}
    text = question.casefold()
    out = set()
    for name, info in ontology.relations.items():
        for phrase in (*info.labels, info.label, *info.phrases, *info.inverse_phrases):
            phrase = (phrase or "").casefold()
            if _HANGUL.search(phrase):
                if phrase in text:
                    out.add(name)
                continue
            tokens = [t for t in re.findall(r"[a-z]+", phrase) if t not in _RELATION_STOPWORDS and len(t) >= 3]
            if tokens and all(_stem(t) in stems for t in tokens):
                out.add(name)
    return out


class GraphContext:
    """Entity look-up and edge expansion over an open graph backend (resources.graph_store.GraphBackend)."""

    def __init__(self, backend):
        self.backend = backend
        self.ontology: Ontology = backend.ontology

    def all_entities(self) -> list[dict]:
        return self.backend._read("MATCH (e:Entity) RETURN e.id AS id, e.label AS label, e.name AS name, "
                                  "e.aliases AS aliases, e.classes AS classes")

    def edges_touching(self, ids: list[str]) -> list[dict]:
        """Fact edges with an end among ids: {source, target, type, chunk_id, doc_id, names, classes}."""
        if not ids:
            return []
        rows = []
        for rel_type in sorted(self.ontology.relations):
            rows += [dict(r, type=rel_type) for r in self.backend._read(
                f"MATCH (s:Entity)-[r:{self.backend._rel_type(rel_type)}]->(t:Entity) "
                "WHERE s.id IN $ids OR t.id IN $ids "
                "RETURN s.id AS source, s.name AS source_name, s.classes AS source_classes, "
                "t.id AS target, t.name AS target_name, t.classes AS target_classes, "
                "r.chunk_id AS chunk_id, r.doc_id AS doc_id", {"ids": list(ids)})]
        return rows


def expand(question: str, graph: GraphContext, max_hops: int = 2, max_paths: int = 8,
           entities: list[QuestionEntity] | None = None) -> tuple[list[QuestionEntity], list[GraphPath]]:
    """The question's entities and the best directed paths (1..max_hops edges) through at least one of them."""
    if entities is None:
        entities = recognize_entities(question, graph.all_entities(), graph.ontology)
    seeds = {e.id for e in entities}
    if not seeds:
        return entities, []
    # gather the edges within max_hops of the seeds, merging parallel edges (one per supporting chunk)
    edges: dict[tuple[str, str, str], dict] = {}
    frontier, seen = set(seeds), set(seeds)
    for _ in range(max_hops):
        per_node: dict[str, int] = defaultdict(int)
        new_nodes = set()
        for row in sorted(graph.edges_touching(sorted(frontier)), key=lambda r: (r["source"], r["type"], r["target"])):
            key = (row["source"], row["type"], row["target"])
            if key not in edges:
                if per_node[row["source"]] >= _EDGE_CAP_PER_NODE or per_node[row["target"]] >= _EDGE_CAP_PER_NODE:
                    continue
                per_node[row["source"]] += 1
                per_node[row["target"]] += 1
                edges[key] = {"source": row["source"], "target": row["target"], "type": row["type"],
                              "names": (row["source_name"], row["target_name"]),
                              "classes": (set(row["source_classes"] or []), set(row["target_classes"] or [])),
                              "chunks": set(), "docs": set()}
            edges[key]["chunks"].add(row["chunk_id"])
            edges[key]["docs"].add(row["doc_id"])
            new_nodes |= {row["source"], row["target"]}
        frontier = new_nodes - seen
        seen |= new_nodes
        if not frontier:
            break
    outgoing: dict[str, list[dict]] = defaultdict(list)
    for edge in edges.values():
        outgoing[edge["source"]].append(edge)

    # every directed chain of 1..max_hops edges without a repeated node
    chains: list[list[dict]] = []
    stack = [[edge] for edge in edges.values()]
    while stack and len(chains) < _PATH_CAP:
        chain = stack.pop()
        chains.append(chain)
        if len(chain) < max_hops:
            visited = {chain[0]["source"], *(e["target"] for e in chain)}
            stack.extend(chain + [nxt] for nxt in outgoing[chain[-1]["target"]] if nxt["target"] not in visited)

    # class and relation words count outside the entity names ('billing-db' is no mention of databases)
    masked = question
    for entity in sorted(entities, key=lambda e: -e.start):
        masked = masked[: entity.start] + " " * (entity.end - entity.start) + masked[entity.end:]
    wanted_classes = mentioned_classes(masked, graph.ontology)
    wanted_relations = mentioned_relations(masked, graph.ontology)
    paths = []
    for chain in chains:
        ids = [chain[0]["source"], *(e["target"] for e in chain)]
        on_path = [s for s in ids if s in seeds]
        if not on_path:
            continue
        classes = [chain[0]["classes"][0], *(e["classes"][1] for e in chain)]
        class_hits = len({c for node in classes for c in node & wanted_classes})
        # seeds at the ends of a path are what the question links; a wanted class at the far end is the asked-for thing
        ends = sum(1 for s in (ids[0], ids[-1]) if s in seeds)
        relation_hits = len({e["type"] for e in chain} & wanted_relations)
        score = 3.0 * len(on_path) + 1.0 * ends + 1.5 * class_hits + 1.0 * relation_hits - 0.1 * len(chain)
        paths.append(GraphPath(ids=ids, names=[chain[0]["names"][0], *(e["names"][1] for e in chain)],
                               relations=[e["type"] for e in chain], evidence=[sorted(e["chunks"]) for e in chain],
                               doc_ids=sorted({d for e in chain for d in e["docs"]}), score=score, seeds=on_path))
    paths.sort(key=lambda p: (-p.score, p.text))
    chosen: list[GraphPath] = []
    for path in paths:
        # a chain already contained in a chosen longer chain adds nothing to the prompt
        if any(_is_subchain(path, other) for other in chosen):
            continue
        chosen.append(path)
        if len(chosen) >= max_paths:
            break
    return entities, chosen


def _is_subchain(short: GraphPath, long: GraphPath) -> bool:
    n = len(short.relations)
    if n >= len(long.relations):
        return False
    for offset in range(len(long.relations) - n + 1):
        if long.ids[offset:offset + n + 1] == short.ids and long.relations[offset:offset + n] == short.relations:
            return True
    return False
