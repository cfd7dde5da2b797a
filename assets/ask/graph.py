"""Knowledge-graph side of the ask path: entities named in a question, their neighbourhood and multi-hop paths.

Why: a question like "which applications run on servers managed by the Data Team?" is answered by a chain of facts
(Application -RUNS_ON-> Server -MANAGED_BY-> Team) that no single chunk states; the graph has it, with the chunk
that supports every hop. Entities are recognised by the names and aliases the graph holds (and the ontology's
known individuals, so "인프라팀" finds the Platform Team); Hangul forms match inside a word, since Korean particles
glue onto names ("결제팀이"). Paths are ranked by how many question entities they link and how many of the
classes the question speaks of ("applications", "servers", "서버") they pass through.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field

from resources.graph_semantics import Edge, explain, infer_edges, transitive_types
from resources.ontology import Ontology, normalize_name

_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_SEPARATORS = re.compile(r"[\s_\-]+")
_EDGE_CAP_PER_NODE = 60  # a hub (a team managing 500 servers) must not flood the prompt or the path search
_PATH_CAP = 2000
_CLASS_SEED_CAP = 30  # starting entities for a question that names classes only
_CLOSURE_NODE_CAP = 2000  # entities a transitive relation is followed through from the question's entities


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
    # per hop: {source, type, target, inferred, rule, explanation, via: [asserted hops {source, type, target, evidence}]}
    hops: list[dict] = field(default_factory=list)
    chunk_docs: dict[str, str] = field(default_factory=dict)  # the document of each evidence chunk (access checks)

    @property
    def text(self) -> str:
        """The path as grounded_prompt writes graph facts: 'a -REL-> b -REL-> c', inferred hops explained after it
        ('(DEPENDS_ON is transitive: a -DEPENDS_ON-> x -DEPENDS_ON-> b)')."""
        parts = [self.names[0]]
        for relation, name in zip(self.relations, self.names[1:]):
            parts.append(f"-{relation}-> {name}")
        why = [hop["explanation"] for hop in self.hops if hop.get("inferred")]
        return " ".join(parts) + (f" ({'; '.join(why)})" if why else "")

    @property
    def inferred(self) -> bool:
        return any(hop.get("inferred") for hop in self.hops)

    @property
    def chunk_ids(self) -> list[str]:
        return sorted({c for hop in self.evidence for c in hop})

    def to_dict(self) -> dict:
        return {"path": self.text, "ids": self.ids, "names": self.names, "relations": self.relations,
                "evidence": self.evidence, "doc_ids": self.doc_ids, "score": round(self.score, 3),
                "inferred": self.inferred, "hops": self.hops}


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
    """Entity look-up and edge expansion over an open graph backend (resources.graph_backend.GraphBackend)."""

    def __init__(self, backend):
        self.backend = backend
        self.ontology: Ontology = backend.ontology

    def all_entities(self) -> list[dict]:
        return self.backend._read("MATCH (e:Entity) RETURN e.id AS id, e.label AS label, e.name AS name, "
                                  "e.aliases AS aliases, e.classes AS classes")

    def edges_touching(self, ids: list[str], types: set[str] | None = None) -> list[dict]:
        """Fact edges with an end among ids (of the relation types given, else all):
        {source, target, type, chunk_id, doc_id, source_name, target_name, source_label, target_label, classes}."""
        if not ids:
            return []
        rows = []
        for rel_type in sorted(self.ontology.relations if types is None else types & set(self.ontology.relations)):
            rows += [dict(r, type=rel_type) for r in self.backend._read(
                f"MATCH (s:Entity)-[r:{self.backend._rel_type(rel_type)}]->(t:Entity) "
                "WHERE s.id IN $ids OR t.id IN $ids "
                "RETURN s.id AS source, s.name AS source_name, s.classes AS source_classes, s.label AS source_label, "
                "t.id AS target, t.name AS target_name, t.classes AS target_classes, t.label AS target_label, "
                "r.chunk_id AS chunk_id, r.doc_id AS doc_id", {"ids": list(ids)})]
        return rows


class SchemaGraph:
    """The ontology's classes linked by its relations (domain - range, either way): how far a class is from the
    classes a question asks about, so the path search only walks edges that can still reach one within the bound."""

    def __init__(self, ontology: Ontology, semantics: bool = True):
        self.ontology, self.semantics = ontology, semantics
        names = sorted(ontology.classes)
        self.adjacent: dict[str, set[str]] = {c: set() for c in names}
        for rel in ontology.relations.values():
            sources = [c for c in names if self._fits(c, rel.domains)]
            targets = [c for c in names if self._fits(c, rel.ranges)]
            for a in sources:
                for b in targets:
                    self.adjacent[a].add(b)
                    self.adjacent[b].add(a)

    def _fits(self, label: str, allowed: tuple[str, ...]) -> bool:
        return not allowed or any(self.is_a(label, a) for a in allowed)

    def is_a(self, label: str, cls: str) -> bool:
        """rdfs:subClassOf honoured (semantics) or the class itself only."""
        return self.ontology.is_a(label, cls) if self.semantics else label == cls

    def classes_of(self, label: str) -> set[str]:
        info = self.ontology.classes.get(label)
        if info is None:
            return set()
        return set(info.ancestors) if self.semantics else {label}

    def distance_to(self, wanted: set[str]) -> dict[str, int]:
        """Schema hops from each class to the nearest class that is (a subclass of) one of wanted."""
        dist = {c: 0 for c in self.adjacent if any(self.is_a(c, w) for w in wanted)}
        queue = list(dist)
        while queue:
            current = queue.pop(0)
            for other in sorted(self.adjacent[current]):
                if other not in dist:
                    dist[other] = dist[current] + 1
                    queue.append(other)
        return dist


def class_members(graph: GraphContext, schema: SchemaGraph, classes: set[str]) -> list[QuestionEntity]:
    """The entities of the least populated of classes (subclasses counted), at most _CLASS_SEED_CAP of them."""
    rows = graph.all_entities()
    members = {c: sorted((r for r in rows if schema.is_a(r["label"], c)), key=lambda r: r["id"]) for c in sorted(classes)}
    members = {c: m for c, m in members.items() if m}
    if not members:
        return []
    fewest = min(members.values(), key=len)
    return [QuestionEntity(r["id"], r["name"], r["label"], "", -1, -1) for r in fewest[:_CLASS_SEED_CAP]]


def _mask_entities(question: str, entities: list[QuestionEntity]) -> str:
    masked = question
    for entity in sorted(entities, key=lambda e: -e.start):
        masked = masked[: entity.start] + " " * (entity.end - entity.start) + masked[entity.end:]
    return masked


def expand(question: str, graph: GraphContext, max_hops: float = 2, max_paths: int = 8,
           entities: list[QuestionEntity] | None = None, *, semantics: bool = True,
           ) -> tuple[list[QuestionEntity], list[GraphPath]]:
    """The question's entities and the best directed paths through at least one of them.

    max_hops is a cost bound, not a hop limit: every fact on a path costs one, asserted or inferred, and an inferred
    transitive fact stands for a chain of any length (Customer Portal -DEPENDS_ON-> billing-db resting on two or
    twenty asserted hops). With semantics the ontology's axioms apply (resources.graph_semantics); without, only
    the stored edges and each entity's own class count (for comparison)."""
    if entities is None:
        entities = recognize_entities(question, graph.all_entities(), graph.ontology)
    ontology = graph.ontology
    bound = float(max_hops)
    schema = SchemaGraph(ontology, semantics)
    # class and relation words count outside the entity names ('billing-db' is no mention of databases)
    masked = _mask_entities(question, entities)
    wanted_classes = mentioned_classes(masked, ontology)
    wanted_relations = mentioned_relations(masked, ontology)
    starts = list(entities)
    between_classes = not entities and len(wanted_classes) >= 2
    if between_classes:
        # "which applications depend on databases?": no entity named, so the walk starts from the members of the
        # named class with the fewest members, and a path must link two of the named classes
        starts = class_members(graph, schema, wanted_classes)
    seeds = {e.id for e in starts}
    if not seeds:
        return entities, []
    # the schema steers the walk: once the question names classes, a node is worth reaching only if the walk to it
    # passed one of them, or its class can still lead (within the bound) to one or to a class of a named entity
    seed_labels = {e.label for e in starts}
    distance = schema.distance_to(wanted_classes | seed_labels) if wanted_classes else None

    asserted: dict[tuple[str, str, str], Edge] = {}
    names: dict[str, str] = {e.id: e.name for e in starts}
    labels: dict[str, str] = {e.id: e.label for e in starts}
    per_node: dict[str, int] = defaultdict(int)
    chunk_docs: dict[str, str] = {}
    is_wanted = lambda label: any(schema.is_a(label, w) for w in wanted_classes)  # noqa: E731
    on_wanted: dict[str, bool] = {e.id: is_wanted(e.label) for e in starts}  # reached through a wanted class

    def take(rows, depth_of_new: int | None) -> set[str]:
        """Merge rows into asserted edges (caps per node, schema pruning); the nodes they reach."""
        reached = set()
        for row in sorted(rows, key=lambda r: (r["source"], r["type"], r["target"], r["chunk_id"] or "")):
            names.setdefault(row["source"], row["source_name"])
            names.setdefault(row["target"], row["target_name"])
            labels.setdefault(row["source"], row.get("source_label") or "")
            labels.setdefault(row["target"], row.get("target_label") or "")
            key = (row["source"], row["type"], row["target"])
            if key not in asserted:
                if distance is not None and depth_of_new is not None:
                    ends = [n for n in key[::2] if n not in depth]
                    came_through_wanted = any(on_wanted.get(n) for n in key[::2] if n in depth)
                    if not came_through_wanted and any(distance.get(labels[n], 10 ** 6) > bound - depth_of_new
                                                       for n in ends):
                        continue
                if per_node[row["source"]] >= _EDGE_CAP_PER_NODE or per_node[row["target"]] >= _EDGE_CAP_PER_NODE:
                    continue
                per_node[row["source"]] += 1
                per_node[row["target"]] += 1
                asserted[key] = Edge(row["source"], row["type"], row["target"])
            asserted[key].chunks.add(row["chunk_id"])
            asserted[key].docs.add(row["doc_id"])
            chunk_docs[row["chunk_id"]] = row["doc_id"]
            reached |= {row["source"], row["target"]}
            through = any(on_wanted.get(n) for n in key[::2] if n in depth)
            for node in key[::2]:
                on_wanted[node] = on_wanted.get(node, False) or through or is_wanted(labels[node])
        return reached

    depth: dict[str, int] = {s: 0 for s in seeds}
    closure_ends: set[str] = set()
    if semantics:
        # transitive relations are followed to their end, whatever the bound: the closure is one fact
        # (forwards from the question's entities and backwards to them: what they depend on, what depends on them)
        members = set().union(set(), *transitive_types(ontology).values())
        forward, backward, ahead, behind = set(seeds), set(seeds), set(seeds), set(seeds)
        while members and (forward or backward) and len(ahead | behind) < _CLOSURE_NODE_CAP:
            rows = [r for r in graph.edges_touching(sorted(forward | backward), members)
                    if r["source"] in forward or r["target"] in backward]
            take(rows, None)
            forward = {r["target"] for r in rows if r["source"] in forward} - ahead
            backward = {r["source"] for r in rows if r["target"] in backward} - behind
            ahead, behind = ahead | forward, behind | backward
        closure_ends = (ahead | behind) - seeds
    frontier = set(seeds)
    for layer in range(max(1, math.ceil(bound))):
        if layer + 1 > bound:
            break
        reached = take(graph.edges_touching(sorted(frontier)), layer + 1)
        new = {n for n in reached if n not in depth}
        if layer == 0:
            new |= {n for n in closure_ends if n not in depth}
        for node in new:
            depth[node] = layer + 1
        frontier = new
        if not frontier:
            break
    # keep the transitive edges the layers did not reach only as material for the closure
    reachable = {key: e for key, e in asserted.items() if e.source in depth or e.target in depth}
    edges: list[Edge] = list(asserted.values())
    inferred = infer_edges(edges, ontology, wanted_relations=wanted_relations, closure_from=seeds) if semantics else []
    usable = list(reachable.values()) + [e for e in inferred if e.source in depth and e.target in depth]
    outgoing: dict[str, list[Edge]] = defaultdict(list)
    for edge in usable:
        outgoing[edge.source].append(edge)

    # every directed chain within the cost bound without a repeated node
    chains: list[list[Edge]] = []
    stack = [[edge] for edge in sorted(usable, key=lambda e: (e.key, e.rule))]
    while stack and len(chains) < _PATH_CAP:
        chain = stack.pop()
        chains.append(chain)
        if len(chain) + 1 <= bound:
            visited = {chain[0].source, *(e.target for e in chain)}
            stack.extend(chain + [nxt] for nxt in outgoing[chain[-1].target] if nxt.target not in visited)

    def relation_words_hit(edge: Edge) -> set[str]:
        types = {edge.type}
        if semantics and edge.type in ontology.relations:
            types |= set(ontology.relations[edge.type].super_properties)
        return types & wanted_relations

    paths = []
    for chain in chains:
        ids = [chain[0].source, *(e.target for e in chain)]
        on_path = [s for s in ids if s in seeds]
        if not on_path:
            continue
        classes = [schema.classes_of(labels.get(n, "")) for n in ids]
        class_hits = len({c for node in classes for c in node & wanted_classes})
        if between_classes and class_hits < 2:
            continue
        # seeds at the ends of a path are what the question links; a wanted class at the far end is the asked-for thing
        ends = sum(1 for s in (ids[0], ids[-1]) if s in seeds)
        linked = len(on_path)
        if between_classes:  # the starts are only members of a named class: one is as good as two
            linked, ends = 1, min(ends, 1)
        relation_hits = len(set().union(*(relation_words_hit(e) for e in chain)))
        inferred_hops = sum(1 for e in chain if e.inferred)
        score = (3.0 * linked + 1.0 * ends + 1.5 * class_hits + 1.0 * relation_hits - 0.1 * len(chain)
                 - 0.3 * inferred_hops)
        hops = [{"source": e.source, "type": e.type, "target": e.target, "inferred": e.inferred, "rule": e.rule,
                 "explanation": explain(e, names),
                 "via": [{"source": a.source, "type": a.type, "target": a.target, "evidence": sorted(a.chunks)}
                         for a in e.via]} for e in chain]
        paths.append(GraphPath(ids=ids, names=[names.get(n, n) for n in ids], relations=[e.type for e in chain],
                               evidence=[sorted(e.chunks) for e in chain],
                               doc_ids=sorted({d for e in chain for d in e.docs}), score=score, seeds=on_path,
                               hops=hops, chunk_docs={c: chunk_docs[c] for e in chain for c in e.chunks}))
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
