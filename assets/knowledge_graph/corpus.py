"""Names the corpus's tables and records type, known to every document of the run.

A CMDB export types 'slotbook' as an Application and 'Havell H-220' as an AircraftModel; a chat log or a
press release that says 'slotbook writes to slotbook-db' or 'flies the Havell H-220' gives the name no type of
its own (lower case, or an ORG to NER). Per-document evidence cannot type it, so extraction also reads the names
that any document's structure layer typed (table cells and record values under a class or relation header),
found in the document's text as whole words: evidence kind 'corpus', weaker than the document's own tables.

Only the structure layer feeds it: it needs no sentence parsing (a pre-pass over a run's documents costs a few
ms a document) and its types come from the words of the user's own tables, not from guesses.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

from resources.ontology import normalize_name

# the evidence a structure-typed name needs to be a corpus name (a cell typed only by its column's relation is not)
CORPUS_EVIDENCE = {"table", "header", "keyword", "known", "pattern", "inner", "relation"}


class CorpusNames:
    """key -> (class, surface) of the names typed by the documents' tables and records; one compiled pattern
    finds them in a text (whole words, any case, longest first)."""

    def __init__(self, names: dict[str, tuple[str, str]] | None = None):
        self.names = dict(names or {})
        surfaces = sorted({surface for _, surface in self.names.values()}, key=lambda n: (-len(n), n))
        self._pattern = re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(s) for s in surfaces) + r")(?![\w-])",
                                   re.IGNORECASE) if surfaces else None

    def __len__(self) -> int:
        return len(self.names)

    def found_in(self, text: str) -> dict[str, tuple[str, str]]:
        """The corpus names the text says: key -> (class, surface)."""
        if self._pattern is None:
            return {}
        keys = {normalize_name(m.group(0)) for m in self._pattern.finditer(text)}
        return {key: self.names[key] for key in keys if key in self.names}

    @classmethod
    def merged(cls, per_document: list[dict[str, tuple[str, str]]]) -> "CorpusNames":
        """One class per name: the class most documents gave it; a name the documents split evenly is left out."""
        labels: dict[str, Counter] = defaultdict(Counter)
        surfaces: dict[str, str] = {}
        for names in per_document:
            for key, (label, surface) in names.items():
                labels[key][label] += 1
                surfaces.setdefault(key, surface)
        merged = {}
        for key, counts in labels.items():
            (best, n), *rest = counts.most_common(2) + [(None, 0)]
            if n > rest[0][1]:
                merged[key] = (best, surfaces[key])
        return cls(merged)
