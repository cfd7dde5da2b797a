"""RAFT-style grounded examples (Zhang et al. 2024): a question, the gold chunk among retrieved distractors (a share
of examples without it), and an answer that cites the gold sources by number, in the ask path's prompt format.

Questions come from rules, no LLM: graph facts ("Which server does checkout-web run on?"), two-hop graph paths
("Which team manages the server that checkout-web runs on?") and the key sentence of a chunk. Distractors are the
chunks most similar to the question (the Milvus index when given, else word overlap over the corpus's chunks).
"""

import hashlib
import math
import re
from collections.abc import Callable

from assets.grounded_prompt import NO_ANSWER, format_context

CHUNK_ID_SEP = ","  # chunk_id of an example citing several chunks: "id1,id2" (ids are hex digests)

# relation type -> (question about {s}, answer phrase "{s} <verb> {t}", verb phrase for "the X that {s} <verb>")
_RELATIONS = {
    "RUNS_ON": ("Which {tl} does {s} run on?", "{s} runs on {t}", "runs on"),
    "DEPENDS_ON": ("What does {s} depend on?", "{s} depends on {t}", "depends on"),
    "MANAGED_BY": ("Which {tl} manages {s}?", "{s} is managed by {t}", "is managed by"),
    "OWNED_BY": ("Which {tl} owns {s}?", "{s} is owned by {t}", "is owned by"),
    "MAINTAINED_BY": ("Who maintains {s}?", "{s} is maintained by {t}", "is maintained by"),
    "PART_OF": ("What is {s} part of?", "{s} is part of {t}", "is part of"),
    "CONNECTS_TO": ("What does {s} connect to?", "{s} connects to {t}", "connects to"),
    "STORES_DATA_IN": ("Where does {s} store its data?", "{s} stores its data in {t}", "stores its data in"),
}
_GENERIC_CLASSES = {"entity", "thing", "technology", "software", "concept", "resource"}
_STOPWORDS = set("a an the of to in on for and or is are was were be by with at from as it its this that these those "
                 "which what who does do how when where why there their than then into over under after before".split())
_VERBISH = re.compile(r"\b(?:is|are|was|were|runs?|depends?|uses?|stores?|must|should|has|have|handles?|serves?|"
                      r"owns?|manages?|connects?|follows?|forbids?|answers?|requires?|keeps?|goes|go)\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?다요])\s+|\n+")
_WORD = re.compile(r"[0-9A-Za-z][0-9A-Za-z_.-]*[0-9A-Za-z]|[0-9A-Za-z]|[\uac00-\ud7a3]+")
_HANGUL = re.compile(r"[\uac00-\ud7a3]")

# ranked chunk ids for each question, best first (at most k each, never a gold chunk)
Retriever = Callable[[list[str], int, list[set[str]]], list[list[str]]]


def _unit(seed: int, *parts: str) -> float:
    digest = hashlib.sha256("\x00".join([str(seed), *parts]).encode()).hexdigest()[:12]
    return int(digest, 16) / float(1 << 48)


def _join(names: list[str]) -> str:
    names = sorted(dict.fromkeys(names))
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _class_word(label: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", label or "").replace("_", " ").lower().strip()


def _relation_question(rel_type: str, subject: str, target_label: str) -> tuple[str, str, str]:
    words = rel_type.replace("_", " ").lower()
    question, answer, verb = _RELATIONS.get(rel_type, ("Which {tl} does {s} " + words + "?", "{s} " + words + " {t}",
                                                       words))
    tl = _class_word(target_label)
    if not tl or tl in _GENERIC_CLASSES:
        question = question.replace("Which {tl} manages", "Who manages").replace("Which {tl} owns", "Who owns") \
            .replace("Which {tl}", "What")
    return question.format(s=subject, tl=tl), answer, verb


def _tokens(text: str) -> set[str]:
    return {w.casefold() for w in _WORD.findall(text or "")} - _STOPWORDS


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(1, len(a | b))


def lexical_retriever(chunks: list[dict]) -> Retriever:
    """Chunks ranked by shared words with the question (idf-weighted), a stand-in for the index's hybrid search."""
    ids = [c["chunk_id"] for c in chunks]
    token_sets = [_tokens(c.get("text", "")) for c in chunks]
    df: dict[str, int] = {}
    for tokens in token_sets:
        for token in tokens:
            df[token] = df.get(token, 0) + 1
    idf = {t: math.log(1 + len(chunks) / n) for t, n in df.items()}

    def retrieve(questions: list[str], k: int, exclude: list[set[str]]) -> list[list[str]]:
        out = []
        for question, excluded in zip(questions, exclude):
            q = _tokens(question)
            scored = sorted(((-sum(idf.get(t, 0.0) for t in q & tokens) / math.sqrt(1 + len(tokens)),
                              _unit(0, question, cid), cid) for cid, tokens in zip(ids, token_sets)
                             if cid not in excluded))
            out.append([cid for _, _, cid in scored[:k]])
        return out

    return retrieve


def key_sentences(text: str, limit: int = 1) -> list[str]:
    """The chunk's most informative sentences: 6-45 words, names and identifiers count most."""
    lines = [line.strip(" -*#\t") for line in (text or "").splitlines()]
    body = " ".join(lines[1:]) if len(lines) > 1 and len(lines[0]) <= 80 and not lines[0].endswith(".") else " ".join(lines)
    candidates = []
    for position, sentence in enumerate(s.strip() for s in _SENTENCE_END.split(body)):
        words = sentence.split()
        if not 6 <= len(words) <= 45 or "|" in sentence:
            continue
        names = sum(1 for w in words[1:] if w[:1].isupper() or any(c.isdigit() for c in w) or "-" in w.strip("-"))
        score = names + (2 if _HANGUL.search(sentence) else 0) + (1 if _VERBISH.search(sentence) else 0) - position * 0.1
        candidates.append((-score, position, sentence))
    return [s for _, _, s in sorted(candidates)[:limit]]


def _chunk_topic(chunk: dict) -> str:
    first = (chunk.get("text") or "").strip().splitlines()[0].strip(" #*-") if chunk.get("text") else ""
    if 3 <= len(first) <= 80 and not first.endswith("."):
        return first
    name = chunk["doc_id"].rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0].replace("-", " ").replace("_", " ")


_KO_SUBJECT_WORD = re.compile(r"^(.+?)(?:은|는|이|가|에는|에서는)$")


def _korean_subject(sentence: str) -> str:
    """The sentence's topic/subject phrase: its first words up to one ending in a topic or subject particle
    ("배송 추적 서비스(shipping-tracker)는 ..." -> "배송 추적 서비스(shipping-tracker)"), else ""."""
    words = sentence.split()
    for i, word in enumerate(words[:4]):
        match = _KO_SUBJECT_WORD.match(word)
        if match:
            return " ".join(words[:i] + [match.group(1)])
    return ""


def _chunk_question(chunk: dict, sentence: str) -> str:
    topic = _chunk_topic(chunk)
    title = chunk["doc_id"].rsplit("/", 1)[-1].rsplit(".", 1)[0].replace("-", " ").replace("_", " ")
    if _HANGUL.search(sentence):
        # the sentence's own subject makes the question point at one sentence (a chunk holds several)
        return f"{title} 문서에 따르면 {_korean_subject(sentence) or topic}에 대해 무엇이라고 하나요?"
    verb = _VERBISH.search(sentence)
    subject = sentence[:verb.start()].strip(" ,") if verb else ""
    if subject and 1 <= len(subject.split()) <= 6 and subject.casefold() not in ("it", "they", "this", "there"):
        if subject.split()[0].lower() in ("the", "every", "each", "all", "our"):
            subject = subject[0].lower() + subject[1:]
        return f"What does the {title} document say about {subject}?"
    return f"What does the {title} document say about {topic.lower()}?"


def question_items(chunks: list[dict], facts: list[dict], max_multihop: int = 200,
                   sentences_per_chunk: int = 2) -> list[dict]:
    """Questions with their answer template, gold chunk ids and graph paths (before contexts are assembled).

    An answer template holds {cite:<chunk_id>} markers that become [n] once the context's order is known."""
    chunk_ids = {c["chunk_id"] for c in chunks}
    entities: dict[str, dict] = {}
    for doc in facts:
        for entity in doc.get("entities") or []:
            entities.setdefault(entity["id"], entity)
    edges: dict[tuple[str, str], dict] = {}
    for doc in facts:
        for rel in doc.get("relations") or []:
            if rel.get("source") not in entities or rel.get("target") not in entities:
                continue
            if not rel.get("chunk_id") or rel["chunk_id"] not in chunk_ids:
                continue  # no gold passage to cite
            group = edges.setdefault((rel["source"], rel["type"]), {"targets": {}, "doc_id": doc.get("doc_id", "")})
            group["targets"].setdefault(rel["target"], rel["chunk_id"])
    items = []
    for (source_id, rel_type), group in sorted(edges.items()):
        source = entities[source_id]
        targets = sorted(group["targets"].items(), key=lambda kv: entities[kv[0]]["name"])
        target_label = entities[targets[0][0]].get("label", "") if len({entities[t].get("label") for t, _ in targets}) == 1 else ""
        question, answer, _ = _relation_question(rel_type, source["name"], target_label)
        parts = [answer.format(s=source["name"], t=entities[t]["name"]) + f" {{cite:{c}}}" for t, c in targets[:4]]
        items.append({"question": question, "answer": "; ".join(parts) + ".", "gold": [c for _, c in targets[:4]],
                      "graph_paths": [], "source": "raft_fact", "doc_id": group["doc_id"]})
    # two hops: A -R1-> B -R2-> C, grouped by (A, R1, R2)
    hops: dict[tuple[str, str, str], list] = {}
    for (a, r1), first in sorted(edges.items()):
        for b, c1 in sorted(first["targets"].items()):
            for (b2, r2), second in sorted(edges.items()):
                if b2 != b:
                    continue
                for c, c2 in sorted(second["targets"].items()):
                    if c not in (a, b):
                        hops.setdefault((a, r1, r2), []).append((b, c1, c, c2))
    for (a, r1, r2), chains in sorted(hops.items())[:max_multihop]:
        chains = chains[:3]
        name = entities[a]["name"]
        b_label = _class_word(entities[chains[0][0]].get("label", "")) or "entity"
        _, _, verb1 = _relation_question(r1, name, "")
        inner = f"the {b_label} that {name} {verb1}"
        question, answer2, _ = _relation_question(r2, inner, entities[chains[0][2]].get("label", ""))
        _, answer1, _ = _relation_question(r1, name, "")
        parts, paths = [], []
        for b, c1, c, c2 in chains:
            b_name, c_name = entities[b]["name"], entities[c]["name"]
            parts.append(answer1.format(s=name, t=b_name) + f" {{cite:{c1}}}, and "
                         + answer2.format(s=b_name, t=c_name) + f" {{cite:{c2}}}")
            paths.append(f"{name} -{r1}-> {b_name} -{r2}-> {c_name}")
        items.append({"question": question[0].upper() + question[1:], "answer": "; ".join(parts) + ".",
                      "gold": list(dict.fromkeys(x for _, c1, _, c2 in chains for x in (c1, c2))),
                      "graph_paths": paths, "source": "raft_multihop", "doc_id": edges[(a, r1)]["doc_id"]})
    for chunk in chunks:
        asked = set()
        for sentence in key_sentences(chunk.get("text", ""), sentences_per_chunk):
            question = _chunk_question(chunk, sentence)
            if question in asked:  # one question, one answer: a second sentence needs a question of its own
                continue
            asked.add(question)
            items.append({"question": question, "answer": f"{sentence.rstrip('.')} "
                          f"{{cite:{chunk['chunk_id']}}}.", "gold": [chunk["chunk_id"]], "graph_paths": [],
                          "source": "raft_chunk", "doc_id": chunk["doc_id"]})
    return items


def raft_examples(chunks: list[dict], facts: list[dict], num_distractors: int = 2, no_gold_share: float = 0.1,
                  seed: int = 0, retriever: Retriever | None = None, max_multihop: int = 200,
                  sentences_per_chunk: int = 2) -> list[dict]:
    """Rows (instruction = question, input = numbered context, output = cited answer, citations = gold numbers)."""
    by_id = {c["chunk_id"]: c for c in chunks}
    chunks = list(by_id.values())  # a chunk listed twice is one passage
    items = question_items(chunks, facts, max_multihop, sentences_per_chunk)
    if not items:
        return []
    retrieve = retriever or lexical_retriever(chunks)
    ranked = retrieve([i["question"] for i in items], num_distractors + 4, [set(i["gold"]) for i in items])
    rows = []
    for item, candidates in zip(items, ranked):
        gold_tokens = [_tokens(by_id[g]["text"]) for g in item["gold"]]
        # a near-copy of a gold passage (the same paragraph in two documents) is no distractor: it holds the answer
        distractors = [c for c in candidates if c in by_id and c not in item["gold"]
                       and all(_jaccard(_tokens(by_id[c]["text"]), g) < 0.6 for g in gold_tokens)][:num_distractors]
        no_gold = bool(distractors) and _unit(seed, "no-gold", item["question"], *item["gold"]) < no_gold_share
        context = distractors if no_gold else distractors + item["gold"]
        context = sorted(context, key=lambda cid: _unit(seed, "order", item["question"], cid))
        if not context:
            continue
        number = {cid: n for n, cid in enumerate(context, 1)}
        sources = [{"text": by_id[cid]["text"], "doc_id": by_id[cid]["doc_id"], "seq": by_id[cid].get("seq")}
                   for cid in context]
        if no_gold:
            output, citations, paths = NO_ANSWER, [], []
        else:
            output = re.sub(r"\{cite:([^}]+)\}", lambda m: f"[{number[m.group(1)]}]", item["answer"])
            citations, paths = sorted({number[c] for c in item["gold"]}), item["graph_paths"]
        rows.append({"instruction": item["question"], "input": format_context(sources, paths), "output": output,
                     "source": item["source"] + ("_no_gold" if no_gold else ""), "doc_id": item["doc_id"],
                     "chunk_id": CHUNK_ID_SEP.join(item["gold"]), "citations": ",".join(map(str, citations))})
    return rows


def index_retriever(milvus, embedder) -> Retriever:
    """Distractors from the Milvus index (dense search over all indexed chunks), batched question encoding."""

    def retrieve(questions: list[str], k: int, exclude: list[set[str]]) -> list[list[str]]:
        vectors = embedder.encode(questions)
        out = []
        with milvus.client() as client:
            for vector, excluded in zip(vectors, exclude):
                hits = milvus.search(client, vector.tolist(), limit=k + len(excluded))
                out.append([h["chunk_id"] for h in hits if h["chunk_id"] not in excluded][:k])
        return out

    return retrieve
