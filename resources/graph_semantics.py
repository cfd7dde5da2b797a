"""The ontology's relation semantics applied to graph facts at query time: what follows from the stored edges.

Why: the graph stores what documents state ("Customer Portal depends on Billing Service", "Billing Service depends
on billing-db"); a question about what the portal depends on "directly or indirectly" needs what follows from the
ontology's axioms. Five are honoured, as OWL 2 RL's rules for them read (prp-spo1, prp-inv1/2, prp-symp, prp-trp,
cax-sco):

    rdfs:subPropertyOf      a P b, P ⊑ Q            =>  a Q b
    owl:inverseOf           a P b, P inverseOf Q    =>  b Q a
    owl:SymmetricProperty   a P b, P symmetric      =>  b P a
    owl:TransitiveProperty  a P b, b P c, P trans.  =>  a P c
    rdfs:subClassOf         x a C, C ⊑ D            =>  x a D      (ClassInfo.ancestors)

Every inferred edge names its rule and the asserted edges it rests on (`via`), and carries their chunk ids and
document ids: provenance survives inference, so a caller's document prefixes can be applied to inferred facts too
(an inferred fact is visible only if every asserted edge under it is). The graph path search (assets/ask/graph.py)
and the RDF view for SPARQL (resources/rdf_view.py) both infer through this module.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field

from resources.ontology import Ontology

RULE_SUBPROPERTY = "rdfs:subPropertyOf"
RULE_INVERSE = "owl:inverseOf"
RULE_SYMMETRIC = "owl:SymmetricProperty"
RULE_TRANSITIVE = "owl:TransitiveProperty"
CLOSURE_CAP = 200_000  # inferred transitive edges at most (a dense graph's closure grows with the square)


@dataclass
class Edge:
    """One fact between two entities, asserted (via empty) or inferred (rule and the asserted edges under it)."""
    source: str
    type: str
    target: str
    chunks: set[str] = field(default_factory=set)
    docs: set[str] = field(default_factory=set)
    rule: str = ""
    via: tuple["Edge", ...] = ()  # asserted edges only, in chain order

    @property
    def key(self) -> tuple[str, str, str]:
        return self.source, self.type, self.target

    @property
    def inferred(self) -> bool:
        return bool(self.rule)

    @property
    def asserted_edges(self) -> tuple["Edge", ...]:
        return self.via if self.inferred else (self,)


def _derived(source: str, rel_type: str, target: str, rule: str, under: list[Edge]) -> Edge:
    via = tuple(a for e in under for a in e.asserted_edges)
    return Edge(source, rel_type, target, chunks={c for a in via for c in a.chunks},
                docs={d for a in via for d in a.docs}, rule=rule, via=via)


def _one_step(edge: Edge, ontology: Ontology, wanted: set[str] | None) -> list[Edge]:
    """Sub-property, inverse and symmetric consequences of one edge (super-properties only those wanted)."""
    info = ontology.relations.get(edge.type)
    if info is None:
        return []
    out = []
    for parent in info.super_properties:
        if wanted is None or parent in wanted:
            out.append(_derived(edge.source, parent, edge.target, RULE_SUBPROPERTY, [edge]))
    if info.inverse_of:
        out.append(_derived(edge.target, info.inverse_of, edge.source, RULE_INVERSE, [edge]))
    if info.symmetric:
        out.append(_derived(edge.target, edge.type, edge.source, RULE_SYMMETRIC, [edge]))
    return out


def transitive_types(ontology: Ontology) -> dict[str, set[str]]:
    """Each transitive relation and the relations whose edges count as its edges (itself and its sub-properties)."""
    out = {}
    for name, info in ontology.relations.items():
        if info.transitive:
            out[name] = {name} | {sub for sub, other in ontology.relations.items() if name in other.super_properties}
    return out


def _closure(edges: dict[tuple, Edge], rel_type: str, members: set[str], starts: set[str] | None) -> list[Edge]:
    """a T c for every chain a T b ... T c of two or more edges (shortest chain as provenance); from starts only
    (both directions) when given."""
    forward: dict[str, list[Edge]] = defaultdict(list)
    backward: dict[str, list[Edge]] = defaultdict(list)
    for edge in edges.values():
        if edge.type in members:
            forward[edge.source].append(edge)
            backward[edge.target].append(edge)
    def chains_from(start: str, forwards: bool) -> dict[str, list[Edge]]:
        """Shortest chain (breadth first) between start and every node it reaches (forwards) or that reaches it,
        the edges in chain order."""
        steps = forward if forwards else backward
        chain_to = {start: []}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for edge in sorted(steps[node], key=lambda e: e.key):
                other = edge.target if forwards else edge.source
                if other not in chain_to:
                    chain_to[other] = chain_to[node] + [edge] if forwards else [edge] + chain_to[node]
                    queue.append(other)
        return {node: chain for node, chain in chain_to.items() if len(chain) >= 2}

    out: list[Edge] = []
    for origin in sorted(set(forward) if starts is None else (starts & set(forward))):
        out += [_derived(origin, rel_type, end, RULE_TRANSITIVE, chain)
                for end, chain in sorted(chains_from(origin, True).items()) if end != origin]
        if len(out) >= CLOSURE_CAP:
            return out[:CLOSURE_CAP]
    for end in sorted(starts & set(backward)) if starts is not None else ():  # chains ending at a start
        out += [_derived(origin, rel_type, end, RULE_TRANSITIVE, chain)
                for origin, chain in sorted(chains_from(end, False).items())
                if origin != end and origin not in starts]
    return out[:CLOSURE_CAP]


def infer_edges(asserted: list[Edge], ontology: Ontology, *, wanted_relations: set[str] | None = None,
                closure_from: set[str] | None = None) -> list[Edge]:
    """The edges that follow from asserted ones (asserted edges themselves are not repeated).

    wanted_relations: derive super-property edges only for these (None = all); closure_from: transitive chains only
    from or to these nodes (None = the whole closure). An inferred edge equal to an asserted one is dropped: the
    document states it. Rules run to a fixpoint (at most a few rounds: each round adds longer derivations)."""
    known: dict[tuple, Edge] = {e.key: e for e in asserted}
    inferred: dict[tuple, Edge] = {}
    transitive = transitive_types(ontology)
    pending = list(asserted)
    for _round in range(4):
        fresh: list[Edge] = []
        for edge in pending:
            for new in _one_step(edge, ontology, wanted_relations):
                if new.key not in known:
                    known[new.key] = inferred[new.key] = new
                    fresh.append(new)
        for rel_type, members in sorted(transitive.items()):
            for new in _closure(known, rel_type, members, closure_from):
                if new.key not in known:
                    known[new.key] = inferred[new.key] = new
                    fresh.append(new)
        if not fresh:
            break
        pending = fresh
    return sorted(inferred.values(), key=lambda e: e.key)


def explain(edge: Edge, names: dict[str, str]) -> str:
    """An inferred edge's derivation in words: 'DEPENDS_ON is transitive: a -DEPENDS_ON-> b -DEPENDS_ON-> c'."""
    def chain(edges) -> str:
        parts = [names.get(edges[0].source, edges[0].source)]
        for e in edges:
            parts.append(f"-{e.type}-> {names.get(e.target, e.target)}")
        return " ".join(parts)

    if not edge.inferred:
        return ""
    under = edge.via
    if edge.rule == RULE_TRANSITIVE:
        return f"{edge.type} is transitive: {chain(under)}"
    if edge.rule == RULE_INVERSE:
        return f"{edge.type} is the inverse of {under[0].type}: {chain(under)}"
    if edge.rule == RULE_SYMMETRIC:
        return f"{edge.type} is symmetric: {chain(under)}"
    return f"{under[0].type} is a sub-property of {edge.type}: {chain(under)}"
