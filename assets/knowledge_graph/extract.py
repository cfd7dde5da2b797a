"""Knowledge-graph stage: ontology-guided extraction from chunks -> resolved entities and relations -> graph store.

Per document (same dynamic partitions as ingestion):
    graph_facts      spaCy (en_core_web_sm NER + an EntityRuler built from the ontology's labels, aliases,
                     name patterns and known individuals) finds typed mentions; a document-level gazetteer
                     finds the later bare mentions; relations come from the ontology's trigger phrases,
                     kept only when domain and range hold; entity resolution gives canonical ids.
                     Checks: SHACL conformance (pyshacl, inference none), domain/range.
    knowledge_graph  the document's facts replace its earlier ones in the graph store (ladybug or Neo4j).
                     Checks: no orphan nodes, every edge traceable to a chunk, store matches facts.
"""

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import lru_cache

from assets import _offline  # noqa: F401
from resources.ontology import Ontology, OntologyError, load_ontology, normalize_name


# Hyphen/underscore-joined identifiers (srv-db-01, billing-db) that spaCy's tokenizer splits apart.
_IDENT = re.compile(r"(?<![\w-])[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)+(?![\w-])")
_PROPER_WORD = r"^[A-Z][A-Za-z0-9]*$"
_LOWER_IDENT = r"^[a-z0-9]+(?:[-_][a-z0-9]+)+$"
# Tokens allowed between a trigger phrase and its object, or between coordinated mentions.
_FILLER = {"the", "a", "an", "its", "their", "our", "this", "that", "these", "those", "both", "each", "every", "all"}
_COORD = {",", "and", "or", "&", "as", "well", "plus"}
_PRONOUNS = {"it", "this", "they"}


# --------------------------------------------------------------------------------------------- spaCy pipeline

class _IdentifierMerger:
    """Merges the tokens of identifier-like names so that one token carries 'srv-db-01'."""

    def __init__(self, patterns: list[str]):
        self.patterns = [re.compile(p) for p in patterns]

    def __call__(self, doc):
        spans = []
        for match in _IDENT.finditer(doc.text):
            text = match.group(0)
            if any(ch.isdigit() for ch in text) or any(p.match(text) for p in self.patterns):
                span = doc.char_span(match.start(), match.end())
                if span is not None and len(span) > 1:
                    spans.append(span)
        if spans:
            with doc.retokenize() as retokenizer:
                for span in spans:
                    retokenizer.merge(span)
        return doc


def _register_merger():
    from spacy.language import Language

    if not Language.has_factory("kg_identifier_merger"):
        @Language.factory("kg_identifier_merger", default_config={"patterns": []})
        def make_identifier_merger(nlp, name, patterns):  # noqa: ARG001
            return _IdentifierMerger(patterns)


def _name_tokens(name: str) -> list[dict]:
    """Token pattern for a known name, tokenised the way the merger + tokenizer will see it."""
    if _IDENT.fullmatch(name):
        return [{"LOWER": name.lower()}]
    return [{"LOWER": part.lower()} for part in re.findall(r"[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*|[^\sA-Za-z0-9]", name)]


def ruler_patterns(ontology: Ontology) -> list[dict]:
    """EntityRuler patterns from the ontology: keyword introductions, name patterns, headwords, known names."""
    patterns = []
    for cls in ontology.extractable_classes:
        if cls.keywords and not cls.headwords:
            # "the application Billing Service", "the server srv-app-01": keyword + name (keyword trimmed later)
            patterns.append({"label": cls.name, "id": "intro", "pattern": [
                {"LOWER": {"IN": list(cls.keywords)}}, {"TEXT": {"REGEX": _PROPER_WORD}, "OP": "+"}]})
            patterns.append({"label": cls.name, "id": "intro", "pattern": [
                {"LOWER": {"IN": list(cls.keywords)}}, {"TEXT": {"REGEX": _LOWER_IDENT}}]})
        for regex in cls.name_patterns:
            patterns.append({"label": cls.name, "id": "name_pattern", "pattern": [{"TEXT": {"REGEX": regex}}]})
        if cls.headwords:
            # "Platform Team": capitalised non-stop words ending with the class' headword
            patterns.append({"label": cls.name, "id": "headword", "pattern": [
                {"TEXT": {"REGEX": _PROPER_WORD}, "IS_STOP": False, "OP": "+"},
                {"TEXT": {"IN": list(cls.headwords)}}]})
    for known in ontology.known_entities:
        for form in (known.name, *known.aliases):
            patterns.append({"label": known.label, "id": "known", "pattern": _name_tokens(form)})
    return patterns


@lru_cache(maxsize=4)
def _pipeline(directory: str, fingerprint: str):
    import spacy

    ontology = load_ontology(directory)
    _register_merger()
    nlp = spacy.load("en_core_web_sm")
    name_patterns = [p for c in ontology.classes.values() for p in c.name_patterns]
    nlp.add_pipe("kg_identifier_merger", first=True, config={"patterns": name_patterns})
    ruler = nlp.add_pipe("entity_ruler", before="ner", config={"overwrite_ents": True})
    ruler.add_patterns(ruler_patterns(ontology))
    return nlp


def nlp_for(ontology: Ontology):
    """The spaCy pipeline for this ontology (built once per ontology content)."""
    return _pipeline(str(ontology.directory), ontology.fingerprint)


# --------------------------------------------------------------------------------------------- resolution

normalize = normalize_name


class Resolver:
    """Canonical ids: ontology label + normalised canonical name; known individuals' aliases map to them."""

    def __init__(self, ontology: Ontology):
        self.ontology = ontology
        self.known: dict[tuple[str, str], str] = {}
        for known in ontology.known_entities:
            for form in (known.name, *known.aliases):
                self.known[(known.label, normalize(form))] = known.name

    def canonical_name(self, label: str, surface: str) -> str:
        return self.known.get((label, normalize(surface)), surface)

    def is_known(self, label: str, surface: str) -> bool:
        return (label, normalize(surface)) in self.known

    def entity_id(self, label: str, canonical: str) -> str:
        return f"{label}:{normalize(canonical)}"


@dataclass
class Mention:
    label: str
    surface: str
    start: int  # token offsets in the chunk's Doc
    end: int
    chunk_id: str
    entity_id: str = ""


def _clean_surface(span, cls_keywords: set[str]) -> tuple[int, int]:
    """Trim a leading article and the class keyword of an introduction ('the application X' -> 'X')."""
    start, end = span.start, span.end
    doc = span.doc
    while end - start > 1 and (doc[start].lower_ in _FILLER or doc[start].lower_ in cls_keywords):
        start += 1
    return start, end


def _typed_mentions(doc, ontology: Ontology, chunk_id: str) -> list[Mention]:
    mentions = []
    for ent in doc.ents:
        label = ent.label_
        cls = ontology.classes.get(label)
        if cls is None:
            # spaCy NER label (ORG...): accepted for a class that declares it, when the headword fits
            candidates = [c for c in ontology.extractable_classes if label in c.ner_labels]
            words = [t for t in ent if t.lower_ not in _FILLER]
            cls = next((c for c in candidates if words and words[-1].text in c.headwords), None)
            if cls is None:
                continue
        start, end = _clean_surface(ent, set(cls.keywords))
        surface = doc[start:end].text.strip()
        if surface and not surface.lower() in cls.keywords:
            mentions.append(Mention(cls.name, surface, start, end, chunk_id))
    return mentions


def _gazetteer_matcher(vocab, known_forms: dict[str, tuple[str, list[str]]]):
    """One phrase matcher (token sequences, case-insensitive) for the whole document; None when it has no names.

    Built once, not per chunk, and hash-based: a per-chunk token Matcher made long documents quadratic."""
    from spacy.matcher import PhraseMatcher
    from spacy.tokens import Doc

    if not known_forms:
        return None
    matcher = PhraseMatcher(vocab, attr="LOWER")
    for key, (label, tokens) in known_forms.items():
        matcher.add(f"{label}|{key}", [Doc(vocab, words=tokens)])
    return matcher


def _gazetteer_mentions(doc, matcher, taken: list[Mention], chunk_id: str):
    """Bare mentions of names this document introduced elsewhere ('depends on Billing Service')."""
    if matcher is None:
        return []
    occupied = {i for m in taken for i in range(m.start, m.end)}
    found = []
    for match_id, start, end in sorted(matcher(doc), key=lambda m: (m[1], -(m[2] - m[1]))):
        if any(i in occupied for i in range(start, end)):
            continue
        label = doc.vocab.strings[match_id].split("|", 1)[0]
        found.append(Mention(label, doc[start:end].text, start, end, chunk_id))
        occupied.update(range(start, end))
    return found


# --------------------------------------------------------------------------------------------- relations

def _trigger_matcher(nlp, ontology: Ontology):
    from spacy.matcher import Matcher

    matcher = Matcher(nlp.vocab)
    for rel in ontology.relations.values():
        for inverse, phrases in ((False, rel.phrases), (True, rel.inverse_phrases)):
            if phrases:
                matcher.add(f"{rel.name}|{int(inverse)}", [[{"LOWER": w} for w in p.lower().split()] for p in phrases])
    return matcher


def _gap_ok(doc, start: int, end: int, allowed: set[str], keywords: set[str], limit: int = 4) -> bool:
    """Only articles, class keywords, adjectives (and, between coordinated names, commas/and/or) in between."""
    gap = doc[start:end]
    return len(gap) <= limit and all(t.lower_ in allowed or t.lower_ in keywords or t.pos_ == "ADJ" for t in gap)


def _relations_in_chunk(doc, mentions: list[Mention], ontology: Ontology, matcher, chunk_id: str) -> list[dict]:
    keywords = {k for c in ontology.classes.values() for k in c.keywords}
    triggers = []
    for match_id, start, end in matcher(doc):
        rel_name, inverse = doc.vocab.strings[match_id].split("|")
        triggers.append((start, end, rel_name, inverse == "1"))
    # the longest trigger wins where several overlap ("is managed by" over "managed by")
    triggers.sort(key=lambda t: (t[0], -(t[1] - t[0])))
    kept, last_end = [], -1
    for trig in triggers:
        if trig[0] >= last_end:
            kept.append(trig)
            last_end = trig[1]
    occupied = {i for m in mentions for i in range(m.start, m.end)}
    kept = [t for t in kept if not any(i in occupied for i in range(t[0], t[1]))]

    relations = []
    last_subject: Mention | None = None
    for sent in doc.sents:
        in_sent = sorted((m for m in mentions if m.start >= sent.start and m.end <= sent.end), key=lambda m: m.start)
        trigs = [t for t in kept if t[0] >= sent.start and t[1] <= sent.end]
        taken_as_object: set[int] = set()
        for index, (t_start, t_end, rel_name, inverse) in enumerate(trigs):
            rel = ontology.relations[rel_name]
            left_class, right_class = (rel.range, rel.domain) if inverse else (rel.domain, rel.range)
            next_trigger = trigs[index + 1][0] if index + 1 < len(trigs) else sent.end
            # subject side: nearest earlier mention of the right class not already an object, plus its coordinates
            left = [m for m in in_sent if m.end <= t_start and id(m) not in taken_as_object]
            subjects: list[Mention] = []
            for m in reversed(left):
                if ontology.is_a(m.label, left_class):
                    subjects = [m]
                    break
            if subjects:
                for m in reversed([x for x in left if x.end <= subjects[0].start]):
                    if ontology.is_a(m.label, left_class) and _gap_ok(doc, m.end, subjects[-1].start, _FILLER | _COORD, keywords):
                        subjects.append(m)
                    else:
                        break
            elif last_subject is not None and ontology.is_a(last_subject.label, left_class) and any(
                    t.lower_ in _PRONOUNS and t.pos_ == "PRON" for t in doc[max(sent.start, t_start - 3):t_start]):
                subjects = [last_subject]  # "It runs on srv-app-02": the previous sentence's subject
            # object side: first mention after the trigger (only fillers between), plus coordinated ones
            right = [m for m in in_sent if m.start >= t_end and m.end <= next_trigger]
            objects: list[Mention] = []
            cursor = t_end
            for m in right:
                allowed = _FILLER if not objects else _FILLER | _COORD
                if not ontology.is_a(m.label, right_class) or not _gap_ok(doc, cursor, m.start, allowed, keywords):
                    break
                objects.append(m)
                cursor = m.end
            for m in objects:
                taken_as_object.add(id(m))
            for subj in subjects:
                for obj in objects:
                    source, target = (obj, subj) if inverse else (subj, obj)
                    if source.entity_id == target.entity_id:
                        continue
                    relations.append({"source": source.entity_id, "type": rel_name, "target": target.entity_id,
                                      "chunk_id": chunk_id, "sentence": sent.text.strip()})
            if subjects:
                last_subject = subjects[0] if not inverse or not objects else objects[0]
        sent_subjects = [m for m in in_sent if id(m) not in taken_as_object]
        if sent_subjects:
            last_subject = sent_subjects[0]
    return relations


# --------------------------------------------------------------------------------------------- extraction

def extract_facts(chunks: list[dict], ontology: Ontology | None = None) -> dict:
    """graph_facts for one document's chunks: {"doc_id", "entities": [...], "relations": [...]}."""
    ontology = ontology or load_ontology()
    nlp = nlp_for(ontology)
    resolver = Resolver(ontology)
    doc_id = chunks[0]["doc_id"] if chunks else ""
    docs = list(nlp.pipe([c["text"] for c in chunks], batch_size=32))

    # pass 1: typed mentions (ruler + NER); pass 2: the document's own names found bare
    per_chunk = [_typed_mentions(doc, ontology, c["chunk_id"]) for doc, c in zip(docs, chunks)]
    votes: dict[str, Counter] = defaultdict(Counter)
    token_forms: dict[str, list[str]] = {}
    for doc, mentions in zip(docs, per_chunk):
        for m in mentions:
            key = normalize(m.surface)
            votes[key][m.label] += 1
            token_forms.setdefault(key, [t.lower_ for t in doc[m.start:m.end]])
    known_forms = {key: (counter.most_common(1)[0][0], token_forms[key]) for key, counter in votes.items() if key}
    gazetteer = _gazetteer_matcher(nlp.vocab, known_forms)
    for doc, mentions, chunk in zip(docs, per_chunk, chunks):
        mentions.extend(_gazetteer_mentions(doc, gazetteer, mentions, chunk["chunk_id"]))
        mentions.sort(key=lambda m: m.start)

    # resolution: canonical name per (label, key); the most frequent capitalised surface form wins
    surfaces: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for mentions in per_chunk:
        for m in mentions:
            canonical = resolver.canonical_name(m.label, m.surface)
            surfaces[(m.label, normalize(canonical))][m.surface] += 1
    entities: dict[str, dict] = {}
    for mentions in per_chunk:
        for m in mentions:
            canonical = resolver.canonical_name(m.label, m.surface)
            group = surfaces[(m.label, normalize(canonical))]
            if not resolver.is_known(m.label, m.surface):  # not a known individual: the best surface form seen
                canonical = max(group, key=lambda s: (group[s], s != s.lower(), -len(s), s))
            m.entity_id = resolver.entity_id(m.label, canonical)
            entity = entities.setdefault(m.entity_id, {"id": m.entity_id, "label": m.label, "name": canonical,
                                                       "aliases": set(), "chunk_ids": []})
            if m.surface != entity["name"]:
                entity["aliases"].add(m.surface)
            if m.chunk_id not in entity["chunk_ids"]:
                entity["chunk_ids"].append(m.chunk_id)

    matcher = _trigger_matcher(nlp, ontology)
    relations, seen = [], set()
    for doc, mentions, chunk in zip(docs, per_chunk, chunks):
        for rel in _relations_in_chunk(doc, mentions, ontology, matcher, chunk["chunk_id"]):
            key = (rel["source"], rel["type"], rel["target"], rel["chunk_id"])
            if key not in seen:
                seen.add(key)
                relations.append(rel)
    return {
        "doc_id": doc_id,
        "entities": [dict(e, aliases=sorted(e["aliases"])) for e in sorted(entities.values(), key=lambda e: e["id"])],
        "relations": relations,
    }


