"""The prompt the LLM layer sends: the ontology in its own words, worked examples (the nearest labeled examples
from examples.jsonl, or one made from the ontology) each answered in the very JSON the model must write."""

from __future__ import annotations

import json

from assets.knowledge_graph.llm_schema import MAX_ATTRIBUTES, MAX_ENTITIES, MAX_RELATIONS
from assets.knowledge_graph.llm_validation import (
    INTEGER_DATATYPES,
    NUMERIC_DATATYPES,
    _class_list,
    _folded,
    validate_extraction,
)
from resources.ontology import Ontology
from resources.ontology_examples import LabeledExample, load_examples


FEW_SHOT = 3  # labeled examples per prompt: with a Text2KGBench ontology about 900 SmolLM2 tokens in all
PLACEHOLDER_NAMES = ("Alpha", "Beta", "Gamma", "Delta", "Epsilon", "Zeta", "Eta")


def _label(info) -> str:
    return info.label or info.name


def _other_labels(info, limit: int = 6) -> list[str]:
    seen = {_label(info).casefold()}
    out = []
    for label in info.labels:
        if label.casefold() not in seen:
            seen.add(label.casefold())
            out.append(label)
    return out[:limit]


def _leaf_fitting(ontology: Ontology, allowed: tuple[str, ...], avoid: str = "") -> str | None:
    """The most specific class that may stand where allowed is expected (for the worked example)."""
    candidates = [name for name in ontology.classes if ontology.fits(name, allowed) and name != avoid]
    if not candidates:
        return None
    return max(sorted(candidates), key=lambda name: len(ontology.classes[name].ancestors))


def _example_value(datatype: str) -> str:
    if datatype in INTEGER_DATATYPES:
        return "42"
    if datatype in NUMERIC_DATATYPES:
        return "4.2"
    if datatype == "boolean":
        return "true"
    if datatype == "date":
        return "2024-01-31"
    if datatype == "dateTime":
        return "2024-01-31T12:00:00"
    return "X1"


def worked_example(ontology: Ontology, max_relations: int = 3) -> tuple[str, dict] | None:
    """A short example text and its answer made from the ontology itself (placeholder names Alpha, Beta, ...)."""
    answer: dict = {"entities": [], "relations": [], "attributes": []}
    sentences: list[str] = []
    names = iter(PLACEHOLDER_NAMES)
    by_class: dict[str, str] = {}

    def entity(cls: str) -> str:
        if cls not in by_class:
            by_class[cls] = next(names)
            answer["entities"].append({"name": by_class[cls], "class": cls})
        return by_class[cls]

    for rel_id in sorted(ontology.relations):
        if len(answer["relations"]) >= max_relations or len(by_class) >= len(PLACEHOLDER_NAMES) - 1:
            break
        rel = ontology.relations[rel_id]
        source = _leaf_fitting(ontology, rel.domains)
        target = _leaf_fitting(ontology, rel.ranges, avoid=source or "")
        if not (source and target):
            continue
        src, tgt = entity(source), entity(target)
        label = _label(rel).lower()
        verb = next((p for p in rel.phrases if p.lower() == f"is {label}"), label)  # "is managed by"
        sentences.append(f"The {_label(ontology.classes[source]).lower()} {src} {verb} "
                         f"the {_label(ontology.classes[target]).lower()} {tgt}.")
        answer["relations"].append({"source": src, "relation": rel_id, "target": tgt})
    if not answer["entities"]:
        leaf = _leaf_fitting(ontology, ())
        if leaf is None:
            return None
        sentences.append(f"{entity(leaf)} is a {_label(ontology.classes[leaf]).lower()}.")
    for attr_id in sorted(ontology.attributes):
        attr = ontology.attributes[attr_id]
        holder = next((e for e in answer["entities"] if ontology.attribute_ok(attr_id, e["class"])), None)
        if holder:
            value = _example_value(attr.datatype)
            sentences.append(f"The {_label(attr).lower()} of {holder['name']} is {value}.")
            answer["attributes"] = [{"entity": holder["name"], "property": attr_id, "value": value}]
            break
    return " ".join(sentences), answer


def example_answer(example: LabeledExample, ontology: Ontology) -> dict | None:
    """A labeled example as the answer the model is asked to write: ends typed by the property's domain and range
    (the more specific class where two triples type one name), then validated like a model's answer, so that only
    what the schema and the validator accept (names and values spelled as in the text) is shown; None if nothing is."""
    classes: dict[str, str] = {}

    def typed(name: str, allowed: tuple[str, ...]) -> None:
        cls = next((c for c in allowed if c in ontology.classes), None) or _leaf_fitting(ontology, ())
        if cls is None:
            return
        previous = classes.get(name)
        if previous is None or (ontology.is_a(cls, previous) and cls != previous):
            classes[name] = cls

    answer: dict = {"entities": [], "relations": [], "attributes": []}
    for triple in example.triples:
        if triple.kind == "relation":
            rel = ontology.relations[triple.predicate]
            typed(triple.subject, rel.domains)
            typed(triple.object, rel.ranges)
            answer["relations"].append({"source": triple.subject, "relation": triple.predicate,
                                        "target": triple.object})
        else:
            attr = ontology.attributes[triple.predicate]
            typed(triple.subject, (attr.domain,) if attr.domain else ())
            answer["attributes"].append({"entity": triple.subject, "property": triple.predicate,
                                         "value": triple.object})
    answer["entities"] = [{"name": name, "class": cls} for name, cls in classes.items()]
    checked = validate_extraction(answer, ontology, {"doc_id": "examples.jsonl", "chunk_id": f"line {example.line}",
                                                     "text": example.text})
    return answer_from_facts(checked) if checked["relations"] or checked["attributes"] else None


def answer_from_facts(facts: dict) -> dict:
    """validate_extraction's output (or any entities/relations/attributes) in the model's answer format, bounded
    like the schema: the JSON a worked example or a training target shows."""
    return {"entities": [{"name": e["name"], "class": e["label"]} for e in facts["entities"]][:MAX_ENTITIES],
            "relations": [{"source": r["source"], "relation": r["type"], "target": r["target"]}
                          for r in facts["relations"]][:MAX_RELATIONS],
            "attributes": [{"entity": a["entity"], "property": a["property"], "value": a["value"]}
                           for a in facts["attributes"]][:MAX_ATTRIBUTES]}


_ANSWERED: dict[tuple[str, str], list[tuple[str, dict]]] = {}


def answered_examples(ontology: Ontology) -> list[tuple[str, dict]]:
    """(text, answer) for every usable line of the ontology's examples.jsonl (memoised per file and ontology)."""
    examples = load_examples(ontology)
    if not examples:
        return []
    key = (examples.fingerprint, ontology.fingerprint)
    if key not in _ANSWERED:
        if len(_ANSWERED) > 8:
            _ANSWERED.clear()
        pairs = [(e.text, example_answer(e, ontology)) for e in examples.examples]
        _ANSWERED[key] = [(text, answer) for text, answer in pairs if answer is not None]
    return _ANSWERED[key]


def few_shot_examples(ontology: Ontology, text: str, k: int = FEW_SHOT) -> list[tuple[str, dict]]:
    """The k labeled examples most similar to text (MiniLM cosine), least similar first so that the nearest one
    stands next to the chunk; an example whose text is the chunk's own is never shown (no answer given away)."""
    from assets.knowledge_graph.embedding import embed

    pool = [(t, a) for t, a in answered_examples(ontology) if _folded(t) != _folded(text)] if k > 0 else []
    if not pool:
        return []
    scores = embed([t for t, _ in pool]) @ embed([text.strip()])[0]
    nearest = sorted(range(len(pool)), key=lambda i: (-float(scores[i]), i))[:k]
    return [pool[i] for i in reversed(nearest)]


def ontology_instructions(ontology: Ontology) -> str:
    """What to extract, in the ontology's own words: classes, relations as Domain --label--> Range, attributes."""
    lines = ["Extract the named things in the text and the facts the text states about them, as JSON.",
             "", "Classes (the \"class\" of an entity):"]
    for name in sorted(ontology.classes):
        info = ontology.classes[name]
        also = _other_labels(info)
        lines.append(f"- {name}: {_label(info)}" + (f" (also: {', '.join(also)})" if also else "")
                     + (f". {info.comment}" if info.comment else ""))
    if ontology.relations:
        lines += ["", "Relations (\"relation\" from a source entity to a target entity, as Source --label--> Target):"]
        for rel_id in sorted(ontology.relations):
            rel = ontology.relations[rel_id]
            domains = rel.domains
            ranges = rel.ranges
            lines.append(f"- {rel_id}: {_class_list(ontology, domains)} --{_label(rel)}--> {_class_list(ontology, ranges)}"
                         + (f". {rel.comment}" if rel.comment else ""))
    if ontology.attributes:
        lines += ["", "Attributes (\"property\" of an entity, with its value):"]
        for attr_id in sorted(ontology.attributes):
            attr = ontology.attributes[attr_id]
            lines.append(f"- {attr_id} ({attr.datatype or 'string'}) of {attr.domain or 'any class'}"
                         + (f". {attr.comment}" if attr.comment else ""))
    lines += ["", "Rules: copy every name and value exactly as it is written in the text. Every source, target and "
                  "entity of a relation or attribute must also be listed in \"entities\". Use the most specific class. "
                  "Only state what the text says; leave a list empty when the text says nothing of that kind."]
    return "\n".join(lines)


def compact_json(value) -> str:
    """JSON the way the grammar makes the model write it (no spaces)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _worked_examples(ontology: Ontology, text: str, few_shot: int) -> list[tuple[str, dict]]:
    """The labeled examples nearest to text, or (without examples.jsonl) the one made from the ontology."""
    examples = few_shot_examples(ontology, text, few_shot) if few_shot > 0 else []
    if examples:
        return examples
    example = worked_example(ontology)
    return [example] if example else []


def extraction_prompt(ontology: Ontology, text: str, few_shot: int = FEW_SHOT) -> str:
    """The whole instruction for one chunk as plain text (for /v1/completions): ontology, examples, the text."""
    lines = [ontology_instructions(ontology)]
    for example_text, answer in _worked_examples(ontology, text, few_shot):
        lines += ["", "Example", f"Text: {example_text}", f"JSON: {compact_json(answer)}"]
    lines += ["", f"Text: {text.strip()}", "JSON:"]
    return "\n".join(lines)


def extraction_messages(ontology: Ontology, text: str, few_shot: int = FEW_SHOT) -> list[dict]:
    """The same as chat turns (for /v1/chat/completions): each example is a finished exchange before the chunk.

    Measured with SmolLM2-135M: as a separate turn the example's names are copied far less than inline. The
    extraction adapter is trained on exactly these messages (assets/finetune/extraction.py)."""
    messages = [{"role": "system", "content": ontology_instructions(ontology)}]
    for example_text, answer in _worked_examples(ontology, text, few_shot):
        messages += [{"role": "user", "content": f"Text: {example_text}"},
                     {"role": "assistant", "content": compact_json(answer)}]
    return messages + [{"role": "user", "content": f"Text: {text.strip()}"}]
