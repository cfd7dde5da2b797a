"""Entity resolution: one canonical entity per thing a document names, every merge explainable.

    known individuals   the ontology's individuals anchor names: any label or alias maps to the canonical name
    class words         'Fraud Ops team' = 'Fraud Ops', 'the billing database' = 'billing', '인프라팀' = '인프라'
    normalisation       case, punctuation, articles: 'order api' = 'Order API' = 'order-api'
    similarity          within one class, near-identical names (ratio >= SIMILARITY) of one document merge
    short forms         'the H-340' after 'Havell H-340' (a numbered name said without its maker)
    acronyms            'the U.S.' after 'the United States' (the initials of one longer name of the class)

Ids are '<Class>:<key>' where the key is the normalised name without class words, so the same thing named
differently in two documents gets one id. Aliases keep where each came from (reason), and since the graph stores
them per document, a merge is undone when the document that caused it leaves.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter, defaultdict

from assets.knowledge_graph.mentions import HANGUL, ClassLexicon
from resources.ontology import Ontology, normalize_name

SIMILARITY = 0.92


_IDENTIFIER = re.compile(r"[\w.]*\d[\w.-]*|[\w.]+(?:[-_][\w.]+)+")


def is_numbered_short_form(short_key: str, full_key: str) -> bool:
    """Whether a normalised name is the numbered end of a longer one: 'h-340' of 'havell-h-340'."""
    return bool(re.search(r"\d", short_key)) and full_key.endswith("-" + short_key)


_INITIALS_SKIP = {"of", "the", "and", "for", "de", "la", "&"}


def without_article(text: str) -> str:
    """'the U.S.' -> 'U.S.': a leading English article is no part of a name."""
    return re.sub(r"^(the|a|an)\s+", "", text, flags=re.IGNORECASE)


def acronym_letters(surface: str) -> str | None:
    """'U.S.' / 'US' / 'the NHS' -> 'us' / 'us' / 'nhs'; None for a name that is no acronym (2-6 capitals)."""
    text = without_article(surface.strip())
    if re.fullmatch(r"(?:[A-Z]\.){2,6}|[A-Z]{2,6}", text):
        return text.replace(".", "").lower()
    return None


def initials(surface: str) -> str | None:
    """'United States' -> 'us', 'National Health Service' -> 'nhs': the first letters of a capitalised multi-word
    name's words (small words skipped); None for one word."""
    words = [w for w in re.split(r"[\s\-]+", without_article(surface.strip())) if w and w.lower() not in _INITIALS_SKIP]
    if len(words) < 2 or not all(w[0].isupper() for w in words):
        return None
    return "".join(w[0] for w in words).lower()


class Resolver:
    def __init__(self, ontology: Ontology, lexicon: ClassLexicon):
        self.ontology = ontology
        self.lexicon = lexicon
        self.known: dict[tuple[str, str], str] = {}
        self.appositions: dict[str, str] = {}  # this document's "Hangul name(latin-name)" pairs
        for known in ontology.known_entities:
            for form in (known.name, *known.aliases):
                for label in ontology.classes[known.label].ancestors:
                    self.known.setdefault((label, self.key(known.label, form)), known.name)
                    self.known.setdefault((label, normalize_name(form)), known.name)

    def add_apposition(self, alias: str, name: str) -> None:
        """A document said both names of one thing ("주문 서비스(order-api)"): the alias resolves to the name."""
        self.appositions[normalize_name(alias)] = name

    def key(self, label: str, surface: str) -> str:
        """Normalised name less the class words of its own class ('Platform Team' -> 'platform')."""
        stripped, classes = self.lexicon.strip_class_words(surface)
        if classes and not any(self.ontology.is_a(label, c) or self.ontology.is_a(c, label) for c in classes):
            stripped = surface
        key = normalize_name(stripped) or normalize_name(surface)
        if HANGUL.search(key):
            for keyword in sorted(self.lexicon.keyword_classes, key=len, reverse=True):
                classes = self.lexicon.keyword_classes[keyword]
                if HANGUL.search(keyword) and key.endswith(keyword) and len(key) > len(keyword) and any(
                        self.ontology.is_a(label, c) for c in classes):
                    key = key[: -len(keyword)].strip("-")
                    break
        return key

    def canonical_known(self, label: str, surface: str) -> str | None:
        return self.known.get((label, self.key(label, surface))) or self.known.get((label, normalize_name(surface)))

    def _names_with_class_word(self, surface: str) -> bool:
        """A class word that is part of the name ('Platform Team'), not one around an identifier ('the server
        srv-app-02 host', 'billing-db database'): there the bare identifier is the better name."""
        stripped, classes = self.lexicon.strip_class_words(surface)
        return bool(classes) and not _IDENTIFIER.fullmatch(normalize_name(stripped))

    def entity_id(self, label: str, canonical: str) -> str:
        return f"{label}:{self.key(label, canonical)}"

    def resolve(self, named: list[tuple[str, str, str]]) -> tuple[dict[tuple[str, str], str], dict[str, dict]]:
        """named: (label, surface, chunk_id) of every mention kept. Returns ((label, surface) -> entity id,
        entities by id with name, aliases (and why each merged) and chunk ids)."""
        groups: dict[tuple[str, str], Counter] = defaultdict(Counter)
        reasons: dict[tuple[str, str], str] = {}
        for label, surface, _ in named:
            named_as = self.appositions.get(normalize_name(surface))
            known = self.canonical_known(label, surface) or (named_as and self.canonical_known(label, named_as))
            anchor = (label, self.key(label, known or named_as or surface))
            groups[anchor][surface] += 1
            if known:
                reasons[(label, surface)] = "known individual"
            elif named_as:
                reasons[(label, surface)] = "apposition"
            elif normalize_name(surface) != anchor[1]:
                reasons[(label, surface)] = "class word"
        # near-identical names of one class merge into the more frequent one ('Billing Servce' -> 'Billing Service')
        merged_into: dict[tuple[str, str], tuple[str, str]] = {}
        by_label: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for anchor in groups:
            by_label[anchor[0]].append(anchor)
        for label, anchors in by_label.items():
            anchors.sort(key=lambda a: (-sum(groups[a].values()), a[1]))
            for i, small in enumerate(anchors):
                # a model number said alone ('the H-340') is the full name said before ('Havell H-340') when only
                # one full name of the class ends with it
                longer = [a for a in anchors if a != small and is_numbered_short_form(small[1], a[1])]
                if len(longer) == 1 and longer[0] not in merged_into:
                    merged_into[small] = longer[0]
                    for surface in groups[small]:
                        reasons[(label, surface)] = "short form"
                    continue
                # 'the U.S.' after 'the United States': the initials of one longer name of the class
                letters = {acronym_letters(surface) for surface in groups[small]} - {None}
                spelled = [a for a in anchors if a != small and any(initials(s) in letters for s in groups[a])]
                if len(letters) == 1 and len(spelled) == 1 and spelled[0] not in merged_into:
                    merged_into[small] = spelled[0]
                    for surface in groups[small]:
                        reasons[(label, surface)] = "acronym"
                    continue
                for big in anchors[:i]:
                    if big in merged_into or len(small[1]) < 6 or re.findall(r"\d+", small[1]) != re.findall(r"\d+", big[1]):
                        continue  # 'service10' is not a typo of 'service1', nor 'app-node-3' of 'app-node-4'
                    ratio = difflib.SequenceMatcher(None, small[1], big[1]).ratio()
                    if ratio >= SIMILARITY:
                        merged_into[small] = big
                        for surface in groups[small]:
                            reasons[(label, surface)] = f"similar name ({ratio:.2f})"
                        break
        for small, big in merged_into.items():
            groups[big].update(groups.pop(small))
        ids: dict[tuple[str, str], str] = {}
        entities: dict[str, dict] = {}
        for (label, key), surfaces in groups.items():
            known = next((self.canonical_known(label, s) for s in surfaces if self.canonical_known(label, s)), None)
            # the full proper name ('Norvik International Airport', 'Platform Team') over a shortened one, then the
            # most frequent, capitalised, shortest form
            full = [s for s in surfaces if reasons.get((label, s)) not in ("short form", "acronym")] or list(surfaces)
            name = known or max(full, key=lambda s: (self._names_with_class_word(s), surfaces[s],
                                                     s != s.lower(), -len(s), s))
            entity_id = f"{label}:{key}"
            entities[entity_id] = {"id": entity_id, "label": label, "name": name, "aliases": set(), "chunk_ids": [],
                                   "merges": {}}
            for surface in surfaces:
                ids[(label, surface)] = entity_id
        for label, surface, chunk_id in named:
            anchor_id = ids.get((label, surface))
            if anchor_id is None:
                continue
            entity = entities[anchor_id]
            if surface != entity["name"]:
                entity["aliases"].add(surface)
                entity["merges"][surface] = reasons.get((label, surface), "same normalised name")
            if chunk_id not in entity["chunk_ids"]:
                entity["chunk_ids"].append(chunk_id)
        return ids, entities
