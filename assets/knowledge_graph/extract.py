"""Knowledge-graph extraction for one document: layers in, validated facts out. No Dagster needed:

    from assets.knowledge_graph.extract import extract_facts
    facts = extract_facts(chunks, ontology, elements=element_dicts)

Layers (each switchable in ExtractionConfig, each fact says which layer found it):
    structure   tables and key-value blocks (structure.py)
    sentences   English sentences: dependency paths scored zero-shot against the ontology (sentences.py)
    korean      Korean sentences: kiwipiepy morphology, particles and predicates (korean.py, korean_*.py)
    examples    relations and literals learned from the user's examples.jsonl, nearest-neighbour scored (examples.py)
    llm         a served model through the vLLM endpoint, JSON-schema constrained, cached per chunk (llm*.py)

Names are typed from evidence gathered over the whole document (mentions.py), resolved to canonical entities
(resolve.py), and every relation is checked against domain/range before it is kept; rejected facts are listed
with their chunk so the asset can report them.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field

from assets import _offline  # noqa: F401
from assets.knowledge_graph.mentions import (
    EVIDENCE_WEIGHT,
    HANGUL,
    Gazetteer,
    Mention,
    TypeVotes,
    find_mentions,
    lexicon_for,
    parse_english,
    prose,
    repeated_terms,
)
from assets.knowledge_graph.corpus import CORPUS_EVIDENCE, CorpusNames
from assets.knowledge_graph.embedding import embed
from assets.knowledge_graph.resolve import Resolver, is_numbered_short_form, without_article
from assets.knowledge_graph.scoring import scorer_for
from assets.knowledge_graph.sentences import (QUALIFIER, attribute_texts, predicate_phrases, sentence_attributes,
                                              sentence_relations, weak_typed)
from assets.knowledge_graph.structure import StructureExtractor, tables_and_blocks
from resources.ontology import Ontology, OntologyError, normalize_name
from resources.ontology_loading import load_ontology

LAYERS = ("structure", "sentences", "korean", "examples", "llm")
# Bump when extraction logic changes what facts a document yields: graph_facts' code_version.
# 9: a sentence relation between ends whose classes are only guessed (NER, an earlier relation) needs a clearer
# predicate; program lines are not parsed; a value is read by the words it hangs from too.
# 8: plain-text records (a bare key takes the list items below it, a '#' comment is a note, a titled record is
# about the title's name, a property of a subclass fits a row of its superclass)
EXTRACTOR_VERSION = "15"  # 15: glosses only in column lists, capitalised words with digits; 14: separators inside a cell's parentheses; 13: clauses with subjects of their own; 12: definite short forms; 11: delimited text tables, rows not of today, category columns; 10: a value belongs to its clause's subject; 7: a numbered short form types its full name; 6: a relation named after its range class is
# stated with its sibling; 5: values type their holder, dates read as one value (a number property takes none)
# an examples-layer reading this clear types its ends by the property, over the document's NER votes
EXAMPLES_OVERRIDE = 0.4
STRONG_EVIDENCE = {"known", "pattern", "keyword", "table", "header", "inner", "corpus"}


@dataclass
class ExtractionConfig:
    """Which layers run. The LLM layer needs a served model (vLLM, OpenAI-compatible) and is off by default."""

    structure: bool = True
    sentences: bool = True
    korean: bool = True
    examples: bool = True  # only acts when the ontology folder has an examples.jsonl
    llm: bool = False
    llm_url: str = ""
    llm_model: str = ""
    llm_timeout_s: float = 120.0


@dataclass
class _RawRelation:
    source: str
    source_label: str | None
    type: str
    target: str
    target_label: str | None
    chunk_id: str
    sentence: str
    layer: str
    score: float


@dataclass
class _Document:
    texts: list[str]  # chunk texts as the English pipeline reads them (tables taken out)
    docs: list = field(default_factory=list)
    mentions: list[list[Mention]] = field(default_factory=list)
    full_names: set[str] = field(default_factory=set)  # keys typed by their numbered short form ('Havell H-220')


def hangul_share(text: str) -> float:
    letters = [ch for ch in text if ch.isalpha()]
    return sum(1 for ch in letters if HANGUL.match(ch)) / len(letters) if letters else 0.0


def _chunk_locator(chunks: list[dict]):
    flat = [(c["chunk_id"], re.sub(r"\s+", " ", c["text"])) for c in chunks]

    def chunk_for(text: str) -> str:
        probe = re.sub(r"\s+", " ", text).strip()[:80]
        for chunk_id, body in flat:
            if probe and probe in body:
                return chunk_id
        words = probe.split()[:4]
        for chunk_id, body in flat:
            if words and all(w in body for w in words):
                return chunk_id
        return flat[0][0] if flat else ""

    return chunk_for


def _without(text: str, consumed: list[str]) -> str:
    """Chunk text less the tables/key-value blocks the structure layer read (their flattened cells are no prose).
    A piece goes only where it fills whole lines: a list item 'dsp-host-1' stays inside the sentence that names it."""
    for piece in consumed:
        words = piece.split()
        if len(piece.strip()) > 5:
            pattern = r"(?m)^[ \t]*" + r"\s+".join(map(re.escape, words)) + r"[ \t]*$"
            text = re.sub(pattern, "\n", text)
    return text


def type_full_names_by_short_forms(mentions_by_chunk: list[list[Mention]], votes: TypeVotes) -> set[str]:
    """'The Havell H-220, a narrow-body twinjet' says nothing of its class, 'the H-220 is manufactured by …' does: a
    numbered name said alone gives its class to the one untyped full name of the document that ends with it, so the
    resolver can merge the short form into it. Returns the keys of the full names so typed."""
    keys = {m.key for mentions in mentions_by_chunk for m in mentions}
    untyped = [k for k in keys if votes.label(k) is None]
    typed = set()
    for short in keys:
        label = votes.label(short)
        if label is None:
            continue
        longer = [k for k in untyped if is_numbered_short_form(short, k)]
        if len(longer) == 1:
            votes.add(longer[0], label, "relation")
            typed.add(longer[0])
    return typed


def _intrinsic_evidence(votes: TypeVotes, lexicon, surface: str) -> None:
    """Evidence a name carries by itself: known individual, name pattern, class word inside it."""
    key = normalize_name(surface)
    name, inner = lexicon.strip_class_words(surface)
    known = lexicon.known.get(key) or lexicon.known.get(normalize_name(name))
    if known:
        votes.add(key, known[0], "known")
    if lexicon.pattern_class(surface):
        votes.add(key, lexicon.pattern_class(surface), "pattern")
    for cls in inner:
        votes.add(key, cls, "keyword")
    for cls in lexicon.classes_in_identifier(surface):
        votes.add(key, cls, "inner")


def _type_of(votes: TypeVotes, lexicon):
    """surface -> its class so far, after voting the evidence the name carries by itself."""
    def type_of(surface: str) -> str | None:
        _intrinsic_evidence(votes, lexicon, surface)
        return votes.label(normalize_name(surface))

    type_of.guessed = lambda surface: votes.guessed(normalize_name(surface))  # its class rests only on guesses
    return type_of


def _read_structure(ontology, lexicon, scorer, votes: TypeVotes, tables, chunk_for, texts: list[str]):
    """The structure layer's output, its names' types voted into votes."""
    structure = StructureExtractor(ontology, lexicon, scorer, _type_of(votes, lexicon)).extract(
        tables, chunk_for, prose="\n".join(texts))
    for surface, _ in structure.names:
        _intrinsic_evidence(votes, lexicon, surface)  # a cell's own evidence ('customs-db') outweighs its header
    for surface, cls, evidence, _ in structure.typed_names:
        votes.add(normalize_name(surface), cls, evidence)
    return structure


def structure_names(chunks: list[dict], ontology: Ontology | None = None,
                    elements: list[dict] | None = None) -> dict[str, tuple[str, str]]:
    """key -> (class, surface) of the names one document's tables and records type by their words: what the
    document gives to CorpusNames. No sentence parsing."""
    ontology = ontology or load_ontology()
    tables = tables_and_blocks(elements, chunks)
    if not tables:
        return {}
    lexicon = lexicon_for(ontology)
    votes = TypeVotes(ontology, lexicon)
    structure = _read_structure(ontology, lexicon, scorer_for(ontology), votes, tables, _chunk_locator(chunks),
                                [c["text"] for c in chunks])
    names = {}
    for surface, _, evidence, _ in structure.typed_names:
        key = normalize_name(surface)
        if evidence in CORPUS_EVIDENCE and votes.label(key) and key not in names:
            names[key] = (votes.label(key), surface)
    return names


def extract_facts(chunks: list[dict], ontology: Ontology | None = None, elements: list[dict] | None = None,
                  config: ExtractionConfig | None = None, llm_extractor=None,
                  corpus_names: CorpusNames | None = None) -> dict:
    """Entities, relations and attributes of one document's chunks, each fact with its chunk and layer;
    corpus_names: the names the run's documents' tables typed (corpus.py), known to this document too."""
    ontology = ontology or load_ontology()
    config = config or ExtractionConfig()
    lexicon, scorer = lexicon_for(ontology), scorer_for(ontology)
    votes = TypeVotes(ontology, lexicon)
    resolver = Resolver(ontology, lexicon)
    doc_id = chunks[0]["doc_id"] if chunks else ""
    chunk_for = _chunk_locator(chunks)
    raw: list[_RawRelation] = []
    raw_attributes: list[dict] = []
    rejected: list[str] = []
    named: list[tuple[str | None, str, str, str]] = []  # (label hint, surface, chunk_id, evidence)
    timer = _LayerTimer()

    # structure first: which element texts it consumes, so prose parsing skips them
    with timer("structure"):
        tables = tables_and_blocks(elements, chunks) if config.structure else []
    with timer("parse"):
        consumed = [part for t in tables for part in t.parts]
        document = _Document(texts=[prose(_without(c["text"], consumed)) for c in chunks])
        document.docs = parse_english(document.texts)
        document.mentions = [find_mentions(doc, c["chunk_id"], lexicon) for doc, c in zip(document.docs, chunks)]
        for mentions in document.mentions:
            for mention in mentions:
                votes.add_mention(mention)
    if config.korean:
        with timer("korean"):
            _korean_typing(chunks, ontology, votes)

    type_of = _type_of(votes, lexicon)

    if tables:
        with timer("structure"):
            structure = _read_structure(ontology, lexicon, scorer, votes, tables, chunk_for, document.texts)
            for surface, cls, evidence, chunk_id in structure.typed_names:
                named.append((cls, surface, chunk_id, evidence))
            for rel in structure.relations:
                raw.append(_RawRelation(rel["source"], rel["source_label"], rel["type"], rel["target"],
                                        rel["target_label"], rel["chunk_id"], rel["sentence"], "structure",
                                        rel["score"]))
            raw_attributes.extend(structure.attributes)

    # names typed anywhere in the document are found bare in every chunk, and so are those the run's other
    # documents' tables typed (corpus.py)
    gazetteer = {}
    for key, (label, surface) in (corpus_names.found_in("\n".join(document.texts)) if corpus_names else {}).items():
        votes.add(key, label, "corpus")
        gazetteer[key] = surface
    for mentions in document.mentions:
        for m in mentions:
            if votes.label(m.key) and any(kind in STRONG_EVIDENCE for _, kind in m.evidence):
                gazetteer.setdefault(m.key, m.surface)
    for _, surface, _, _ in named:
        gazetteer.setdefault(normalize_name(surface), surface)
    for surface in repeated_terms(document.docs, lexicon).values():
        gazetteer.setdefault(normalize_name(surface), surface)
    finder = Gazetteer(gazetteer)
    for doc, mentions, chunk in zip(document.docs, document.mentions, chunks):
        mentions.extend(finder.mentions(doc, chunk["chunk_id"], mentions))
        mentions.sort(key=lambda m: m.start)
        for m in mentions:
            m.label, m.guessed = votes.label(m.key), votes.guessed(m.key)

    if config.sentences:
        with timer("sentences"):
            # two passes: a name typed only by a relation in pass 1 ('It is deployed on app-node-3') is typed in
            # pass 2
            english_mentions = [[m for m in mentions if hangul_share(doc[max(0, m.start - 3):m.end + 3].text) < 0.3]
                                for doc, mentions in zip(document.docs, document.mentions)]
            embed([p for doc, english in zip(document.docs, english_mentions)
                   for p in predicate_phrases(doc, english, ontology)])  # one batch for the document
            for final in (False, True):
                if final:
                    document.full_names = type_full_names_by_short_forms(document.mentions, votes)
                    for mentions in document.mentions:
                        for m in mentions:
                            m.label, m.guessed = votes.label(m.key), votes.guessed(m.key)
                    embed([t for doc, mentions in zip(document.docs, document.mentions)
                           for t in attribute_texts(doc, mentions, ontology)])
                for doc, mentions, english, chunk in zip(document.docs, document.mentions, english_mentions, chunks):
                    for found in sentence_relations(doc, english, ontology, scorer):
                        if hangul_share(found.sentence) >= 0.3:
                            continue
                        if not final:
                            if found.predicate == QUALIFIER:
                                continue  # 'Aldermoor, Valdoria' is read once the two names' classes are known
                            for end, label in ((found.source, ontology.relations[found.type].domain),
                                               (found.target, ontology.relations[found.type].range)):
                                if label and (end.label is None or weak_typed(end)):
                                    votes.add(end.key, label, "relation")
                            continue
                        raw.append(_RawRelation(found.source.surface, found.source.label, found.type,
                                                found.target.surface, found.target.label, chunk["chunk_id"],
                                                found.sentence, "sentence", found.score))
                    if final:
                        for mention, attribute, value, sentence, label in sentence_attributes(doc, mentions, ontology,
                                                                                               scorer):
                            if hangul_share(sentence) >= 0.3:
                                continue  # the English parse of a Korean sentence: the Korean layer reads it
                            raw_attributes.append({"entity": mention.surface, "entity_label": label,
                                                   "property": attribute, "value": value, "chunk_id": chunk["chunk_id"],
                                                   "sentence": sentence, "layer": "sentence"})

    if config.examples:
        with timer("examples"):
            relations_found, attributes_found = _examples_layer(document, chunks, ontology, votes)
            raw.extend(relations_found)
            raw_attributes.extend(attributes_found)

    if config.korean:
        with timer("korean"):
            raw.extend(_korean_layer(chunks, ontology, type_of, rejected, resolver))

    if config.llm:
        with timer("llm"):
            raw_llm, attrs_llm = _llm_layer(chunks, ontology, config, llm_extractor, votes, rejected)
            raw.extend(raw_llm)
            raw_attributes.extend(attrs_llm)

    with timer("assemble"):
        facts = _assemble(doc_id, ontology, resolver, votes, document, raw, raw_attributes, named, rejected)
    facts["seconds_by_layer"] = timer.rounded()
    return facts


class _LayerTimer:
    """Wall seconds spent per layer of one document (a layer may be entered more than once)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, layer: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[layer] += time.perf_counter() - started

    def rounded(self) -> dict[str, float]:
        return {layer: round(seconds, 4) for layer, seconds in self.seconds.items()}


def ms_per_chunk_by_layer(documents_facts, chunk_count: int) -> dict[str, float]:
    """Where extraction time goes: each layer's milliseconds per chunk over several documents' facts."""
    total: dict[str, float] = defaultdict(float)
    for facts in documents_facts:
        for layer, seconds in facts.get("seconds_by_layer", {}).items():
            total[layer] += seconds
    return {layer: round(1000 * seconds / max(chunk_count, 1), 2) for layer, seconds in sorted(total.items())}


def silent_on_relations(facts: dict) -> bool:
    """Entities named together in one chunk, yet not one relation: the document has relation-bearing text the
    extractor (or the ontology) could not read."""
    if facts.get("relations"):
        return False
    per_chunk = Counter(cid for e in facts.get("entities", []) for cid in e.get("chunk_ids", []))
    return any(count >= 2 for count in per_chunk.values())


def _z_to_unit(z: float) -> float:
    """The Korean layer's z-score as a (0, 1) score like the other layers' (logistic: the 0.5 threshold -> 0.62)."""
    return 1.0 / (1.0 + math.exp(-z))


def _korean_typing(chunks, ontology, votes) -> None:
    """Names a Korean copula sentence types ("payments-gw는 … 서비스입니다"): a class-word vote, as for "the X service"."""
    try:
        from assets.knowledge_graph import korean_mentions
    except ImportError:
        return
    for chunk in chunks:
        if korean_mentions.is_korean(chunk["text"]):
            for surface, cls in korean_mentions.korean_copula_types(chunk["text"], ontology):
                votes.add(normalize_name(surface), cls, "keyword")


def _korean_layer(chunks, ontology, type_of, rejected, resolver=None) -> list[_RawRelation]:
    try:
        from assets.knowledge_graph import korean, korean_mentions
        korean.korean_relations  # noqa: B018
    except (ImportError, AttributeError) as exc:  # kiwipiepy missing: say so, extract the rest
        rejected.append(f"korean layer unavailable: {exc}")
        return []
    out = []
    for chunk in chunks:
        if resolver is not None and korean_mentions.is_korean(chunk["text"]):
            for alias, name, _ in korean_mentions.korean_appositions(chunk["text"], ontology):
                resolver.add_apposition(alias, name)  # "주문 서비스(order-api)": one entity, both names
    for chunk in chunks:
        if not korean_mentions.is_korean(chunk["text"]):
            continue
        for rel in korean.korean_relations(chunk["text"], chunk["chunk_id"], ontology, type_of):
            out.append(_RawRelation(rel["source"], rel.get("source_label"), rel["type"], rel["target"],
                                    rel.get("target_label"), chunk["chunk_id"], rel.get("sentence", ""), "korean",
                                    _z_to_unit(float(rel.get("score", 0.0)))))
    return out


def _examples_layer(document: _Document, chunks, ontology, votes) -> tuple[list[_RawRelation], list[dict]]:
    """Facts by nearest labeled example (nothing without an examples.jsonl); their ends are typed by the property's
    domain and range, as strongly as a relation the sentence layer read."""
    from assets.knowledge_graph.examples import extract_with_examples, model_for

    model = model_for(ontology)
    if model is None:
        return [], []
    relations, attributes = [], []
    for doc, chunk in zip(document.docs, chunks):
        if hangul_share(chunk["text"]) >= 0.3:
            continue
        found, literals = extract_with_examples(model, doc, chunk["chunk_id"])
        for rel in found:
            for end, label in ((rel["source"], rel["source_label"]), (rel["target"], rel["target_label"])):
                if label:
                    votes.add(normalize_name(end), label, "relation", weight=2.0 * rel["score"])
            relations.append(_RawRelation(rel["source"], rel["source_label"], rel["type"], rel["target"],
                                          rel["target_label"], rel["chunk_id"], rel["sentence"], "examples",
                                          rel["score"]))
        for attr in literals:
            if attr["entity_label"]:
                votes.add(normalize_name(attr["entity"]), attr["entity_label"], "relation", weight=attr["score"])
            attributes.append(attr)
    return relations, attributes


def _llm_layer(chunks, ontology, config, extractor, votes, rejected):
    from assets.knowledge_graph.llm import LLMExtractor

    if extractor is None:
        kwargs = {"timeout_s": config.llm_timeout_s}
        if not config.examples:  # no examples layer: no labeled examples in the prompt either
            kwargs["few_shot"] = 0
        if config.llm_url:
            kwargs["base_url"] = config.llm_url
        if config.llm_model:
            kwargs["model"] = config.llm_model
        extractor = LLMExtractor(**kwargs)
    relations, attributes = [], []
    for chunk in chunks:
        answer = extractor.extract_chunk(chunk, ontology)
        rejected.extend(answer.get("rejected", []))
        labels = {}
        for entity in answer.get("entities", []):
            labels[entity["name"]] = entity["label"]
            votes.add(normalize_name(entity["name"]), entity["label"], "relation")
        for rel in answer.get("relations", []):
            relations.append(_RawRelation(rel["source"], labels.get(rel["source"]), rel["type"], rel["target"],
                                          labels.get(rel["target"]), chunk["chunk_id"], chunk["text"][:300], "llm", 1.0))
        for attr in answer.get("attributes", []):
            attributes.append({"entity": attr["entity"], "entity_label": labels.get(attr["entity"]),
                               "property": attr["property"], "value": attr["value"], "chunk_id": chunk["chunk_id"],
                               "sentence": chunk["text"][:300], "layer": "llm"})
    return relations, attributes


_PREDICATE_START = {"is", "are", "was", "were", "be", "been", "being", "has", "have", "had", "does", "did", "will",
                    "would", "can", "could", "should", "may", "might", "must"}
_FUNCTION_WORDS = {"on", "in", "at", "of", "for", "to", "by", "with", "from", "and", "or", "the", "a", "an", "it",
                   "its", "this", "that", "these", "those", "they", "them", "he", "she", "his", "her", "their"}


def not_a_name(surface: str, lexicon) -> str | None:
    """Why a relation's end is no entity name, or None: a value ('06-09-2006', '35.1'), a predicate phrase a layer
    took for a name ('is preceded by the album'), function words ('on'), or a bare class word ('the record label',
    'year'): whatever layer proposed it."""
    text = without_article(surface.strip().lower())
    words = text.split()
    if not words or all(w in _FUNCTION_WORDS for w in words):
        return "function words"
    if re.fullmatch(r"[\d\s.,:/+\-]+", text) and not re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", text):
        return "a value (a number or date)"
    if words[0] in _PREDICATE_START:
        return "a predicate phrase"
    keywords = lexicon.keyword_classes
    if text in keywords or (text.endswith("s") and text[:-1] in keywords):
        return "a class word"
    return None


def _assemble(doc_id, ontology, resolver, votes, document, raw, raw_attributes, named, rejected) -> dict:
    """Final labels, resolution, domain/range, dedup: the facts as graph_facts stores them."""
    def final_label(surface: str, hint: str | None) -> str | None:
        label = votes.label(normalize_name(surface))
        if label is None:
            return hint if hint in ontology.classes and hint not in votes.roots else None
        if hint and ontology.is_a(hint, label) and hint != label:
            return hint
        return label

    kept_named: list[tuple[str, str, str]] = []
    relations: list[tuple] = []
    for rel in raw:
        source_label = final_label(rel.source, rel.source_label)
        target_label = final_label(rel.target, rel.target_label)
        if (rel.layer == "examples" and rel.score >= EXAMPLES_OVERRIDE and rel.type in ontology.relations
                and rel.source_label and rel.target_label
                and not (source_label and target_label and
                         ontology.domain_range_ok(rel.type, source_label, target_label))
                and ontology.domain_range_ok(rel.type, rel.source_label, rel.target_label)):
            # the user's own examples put these names in these roles: the property's classes, though the
            # document's other evidence (NER: 'Auron' reads as a person) votes otherwise
            source_label, target_label = rel.source_label, rel.target_label
        if source_label is None or target_label is None:
            rejected.append(f"{rel.chunk_id}: {rel.source} -{rel.type}-> {rel.target} ({rel.layer}): untyped end")
            continue
        if rel.type not in ontology.relations or not ontology.domain_range_ok(rel.type, source_label, target_label):
            rejected.append(f"{rel.chunk_id}: {rel.source} ({source_label}) -{rel.type}-> {rel.target} "
                            f"({target_label}) ({rel.layer}): breaks domain/range")
            continue
        if normalize_name(rel.source) == normalize_name(rel.target):
            continue
        why = not_a_name(rel.source, resolver.lexicon) or not_a_name(rel.target, resolver.lexicon)
        if why:
            rejected.append(f"{rel.chunk_id}: {rel.source} -{rel.type}-> {rel.target} ({rel.layer}): an end is {why}")
            continue
        kept_named += [(source_label, rel.source, rel.chunk_id), (target_label, rel.target, rel.chunk_id)]
        relations.append((rel, source_label, target_label))
    attributes = []
    for attr in raw_attributes:
        label = final_label(attr["entity"], attr.get("entity_label"))
        if (attr["layer"] == "examples" and attr.get("entity_label") and attr.get("score", 0.0) >= EXAMPLES_OVERRIDE and
                (label is None or not ontology.attribute_ok(attr["property"], label))):
            label = attr["entity_label"]  # as for relations: the examples' roles over the document's NER votes
        if label is None or not ontology.attribute_ok(attr["property"], label):
            rejected.append(f"{attr['chunk_id']}: {attr['entity']}.{attr['property']} = {attr['value']!r} "
                            f"({attr['layer']}): entity untyped or outside the property's domain")
            continue
        kept_named.append((label, attr["entity"], attr["chunk_id"]))
        attributes.append((attr, label))
    # strongly typed mentions are entities even without a relation (a server list, a team page)
    for mentions in document.mentions:
        for m in mentions:
            if m.label and (any(k in STRONG_EVIDENCE for _, k in m.evidence) or m.key in document.full_names or
                            votes.votes[m.key][m.label] >= EVIDENCE_WEIGHT["inner"]):
                kept_named.append((m.label, m.surface, m.chunk_id))
    for hint, surface, chunk_id, evidence in named:
        label = final_label(surface, hint)
        if label and evidence in STRONG_EVIDENCE:
            kept_named.append((label, surface, chunk_id))

    # 'Havell H-340' is also said 'the H-340': the numbered last word alone names the same thing
    short_forms = {}
    for label, surface, _ in kept_named:
        words = surface.split()
        if len(words) > 1 and re.search(r"\d", words[-1]) and re.search(r"[A-Za-z]", words[-1]):
            short_forms.setdefault(normalize_name(words[-1]), label)
    for mentions in document.mentions:
        for m in mentions:
            if m.key in short_forms and (m.label is None or m.label == short_forms[m.key]):
                kept_named.append((short_forms[m.key], m.surface, m.chunk_id))
    ids, entities = resolver.resolve(kept_named)
    out_relations, seen = [], set()
    for rel, source_label, target_label in relations:
        source, target = ids[(source_label, rel.source)], ids[(target_label, rel.target)]
        key = (source, rel.type, target, rel.chunk_id, rel.layer)
        if source == target or key in seen:
            continue
        seen.add(key)
        out_relations.append({"source": source, "type": rel.type, "target": target, "chunk_id": rel.chunk_id,
                              "sentence": rel.sentence, "layer": rel.layer, "score": round(float(rel.score), 3)})
    out_attributes, seen_attr = [], set()
    for attr, label in attributes:
        entity = ids[(label, attr["entity"])]
        key = (entity, attr["property"], attr["value"], attr["chunk_id"])
        if key in seen_attr:
            continue
        seen_attr.add(key)
        out_attributes.append({"entity": entity, "property": attr["property"], "value": str(attr["value"]),
                               "chunk_id": attr["chunk_id"], "sentence": attr["sentence"], "layer": attr["layer"]})
    return {
        "doc_id": doc_id,
        "entities": [dict(e, aliases=sorted(e["aliases"])) for e in sorted(entities.values(), key=lambda e: e["id"])],
        "relations": out_relations,
        "attributes": out_attributes,
        "rejected": rejected,
    }


__all__ = ["EXTRACTOR_VERSION", "ExtractionConfig", "LAYERS", "OntologyError", "Resolver", "extract_facts",
           "ms_per_chunk_by_layer", "silent_on_relations"]
