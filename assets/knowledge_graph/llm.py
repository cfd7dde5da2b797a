"""LLM extraction layer: a served model (vLLM's OpenAI-compatible endpoint) reads one chunk and answers in JSON.

Why each piece exists:
- the prompt and the JSON schema are derived from the ontology, so another ontology needs no code change, and the
  schema (class/relation/attribute ids as enums, bounded lists and strings) lets vLLM constrain decoding so that a
  small model's answer always parses and cannot run forever; on vLLM the schema goes as a whitespace-free grammar
  (schema_grammar) whose names and values are spans of the chunk (candidate_names), so no name can be invented;
- every answer is validated again here (known ids, domain/range with the classes the answer gave, names and values
  that really occur in the chunk), because a constrained answer can still be wrong: invalid items are reported in
  "rejected" with the document and chunk, never raised;
- answers are cached in SQLite per (chunk text hash, ontology fingerprint, served model identity, prompt version,
  examples file), so an unchanged chunk is never sent twice, across runs and processes;
- with an examples.jsonl beside the ontology, the k labeled examples nearest to the chunk (MiniLM cosine) are the
  worked examples, each answered in the very JSON the model must write (few_shot_examples): a user's own sentences
  teach a small model far more than the placeholder example made from the ontology;
- when the fine-tune stage has deployed an extraction adapter (extraction_adapter_deployment), the layer asks it
  by its served alias instead of the base model (deployed_extraction_model).

    from assets.knowledge_graph.llm import extractor_from_env
    facts = extractor_from_env().extract_chunk({"doc_id": "a.md", "chunk_id": "c1", "text": "..."}, ontology)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import time
import unicodedata
from datetime import date, datetime, timezone
from pathlib import Path

from resources.llm import AdapterRegistry, default_vllm_url
from resources.milvus import default_data_dir
from resources.ontology import Ontology, attribute_identifier, normalize_name, relation_identifier
from resources.ontology_examples import LabeledExample, load_examples

# Bump when the prompt, the schema or the decoding request changes: answers cached for the old prompt are not reused.
PROMPT_VERSION = "kg-llm-3"  # 3: the nearest labeled examples as worked examples
FEW_SHOT = 3  # labeled examples per prompt: with a Text2KGBench ontology about 900 SmolLM2 tokens in all
EXTRACTION_ADAPTER_NAME = os.environ.get("DOCPLATFORM_EXTRACTION_ADAPTER", "docplatform-extraction")
MAX_ENTITIES = 12
MAX_RELATIONS = 12
MAX_ATTRIBUTES = 8
MAX_NAME_CHARS = 80
MAX_VALUE_CHARS = 60
MAX_SPAN_WORDS = 5
PLACEHOLDER_NAMES = ("Alpha", "Beta", "Gamma", "Delta", "Epsilon", "Zeta", "Eta")
MAX_CANDIDATES = 6000
SPAN_BREAKS = ".,;:!?"
SPAN_PUNCTUATION = " .,;:!?()[]{}<>\"'`"
NUMERIC_DATATYPES = {"integer", "int", "long", "short", "nonNegativeInteger", "positiveInteger", "decimal", "float",
                     "double"}
INTEGER_DATATYPES = {"integer", "int", "long", "short", "nonNegativeInteger", "positiveInteger"}


class LLMUnavailableError(RuntimeError):
    """The LLM server could not be reached, timed out or refused the request (names the URL and the chunk)."""


def default_llm_model() -> str:
    """Served model name for extraction; empty = the base model the server lists (not a LoRA alias)."""
    return os.environ.get("DOCPLATFORM_KG_LLM_MODEL", "")


def extraction_adapter_registry() -> AdapterRegistry:
    """The registry family of extraction adapters (the fine-tune stage's extraction_adapter publishes there)."""
    return AdapterRegistry(name=EXTRACTION_ADAPTER_NAME)


def deployed_extraction_model() -> str:
    """The extraction adapter's served alias when one is deployed (registry's deployments.json), else ""."""
    try:
        active = extraction_adapter_registry().deployments().get("active")
    except (OSError, ValueError):
        return ""
    return EXTRACTION_ADAPTER_NAME if active else ""


def default_llm_cache_path() -> Path:
    return Path(os.environ.get("DOCPLATFORM_KG_LLM_CACHE", default_data_dir() / "kg_llm_cache.sqlite"))


def chunk_label(chunk: dict) -> str:
    return f"document {chunk.get('doc_id', '?')!r} chunk {chunk.get('chunk_id', '?')!r}"


# ---------------------------------------------------------------------------------------------- schema and prompt

def _array(items: dict, max_items: int) -> dict:
    return {"type": "array", "maxItems": max_items, "items": items}


def _string(max_chars: int) -> dict:
    return {"type": "string", "minLength": 1, "maxLength": max_chars}


def _object(properties: dict) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def candidate_names(text: str, max_words: int = MAX_SPAN_WORDS, limit: int = MAX_CANDIDATES) -> list[str]:
    """Every run of 1..max_words words of the text, trimmed of punctuation: the only names an answer may use.

    Constraining names (and attribute values) to spans of the chunk means even a tiny model cannot invent a name;
    an empty list (text too long for a grammar of its spans) means names stay free strings, checked afterwards."""
    words = text.split()
    spans: dict[str, None] = {}
    for start in range(len(words)):
        for size in range(1, max_words + 1):
            if start + size > len(words):
                break
            span = " ".join(words[start:start + size]).strip(SPAN_PUNCTUATION)
            if span and len(span) <= MAX_NAME_CHARS:
                spans[span] = None
                if len(spans) > limit:
                    return []
            if words[start + size - 1][-1] in SPAN_BREAKS:
                break  # a name does not run on past a comma or the end of a sentence
    return list(spans)


def extraction_schema(ontology: Ontology, names: list[str] | None = None, max_entities: int = MAX_ENTITIES,
                      max_relations: int = MAX_RELATIONS, max_attributes: int = MAX_ATTRIBUTES) -> dict:
    """JSON schema of an answer: the ontology's ids as enums, every list and string bounded.

    names (see candidate_names): when given, names and attribute values must be one of them."""
    classes, relations, attributes = sorted(ontology.classes), sorted(ontology.relations), sorted(ontology.attributes)
    name = {"type": "string", "enum": list(names)} if names else _string(MAX_NAME_CHARS)
    value = {"type": "string", "enum": list(names)} if names else _string(MAX_VALUE_CHARS)
    entity = _object({"name": name, "class": {"type": "string", "enum": classes}})
    relation = _object({"source": name, "relation": {"type": "string", "enum": relations}, "target": name})
    attribute = _object({"entity": name, "property": {"type": "string", "enum": attributes}, "value": value})
    # an empty enum is not a valid schema: an ontology without relations/attributes gets lists that must stay empty
    return _object({
        "entities": _array(entity, max_entities) if classes else {"type": "array", "maxItems": 0},
        "relations": _array(relation, max_relations) if relations else {"type": "array", "maxItems": 0},
        "attributes": _array(attribute, max_attributes) if attributes else {"type": "array", "maxItems": 0},
    })


def _ebnf_literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def schema_grammar(schema: dict) -> str:
    """The schema as a compact EBNF grammar (no free whitespace, fixed key order) for vLLM's grammar decoding.

    vLLM's per-request JSON-schema decoding lets the model emit unlimited whitespace (only a server flag turns that
    off), which a small model uses until max_tokens; this grammar is the same schema without that freedom."""
    rules: dict[str, str] = {}
    named: dict[str, str] = {}  # rule body -> rule name: the chunk's span list appears once, not five times

    def rule(node: dict, name: str) -> str:
        kind = node.get("type")
        if "enum" in node:
            body = " | ".join(_ebnf_literal(json.dumps(v, ensure_ascii=False)) for v in node["enum"])
        elif kind == "string":
            low, high = node.get("minLength", 0), node.get("maxLength")
            repeat = f"{{{low},{high}}}" if high is not None else ("+" if low else "*")
            body = f'"\\"" json_char{repeat} "\\""'
        elif kind == "array":
            limit = node.get("maxItems")
            if limit == 0 or "items" not in node:
                body = '"[]"'
            else:
                item = rule(node["items"], name + "_item")
                more = f"{{0,{limit - 1}}}" if limit is not None else "*"
                body = f'"[" ( {item} ( "," {item} ){more} )? "]"'
        elif kind == "object":
            parts = []
            for index, (key, child) in enumerate(node["properties"].items()):
                prefix = ("{" if index == 0 else ",") + json.dumps(key) + ":"
                parts.append(f"{_ebnf_literal(prefix)} {rule(child, f'{name}_{key}')}")
            body = " ".join(parts) + ' "}"' if parts else '"{}"'
        else:
            raise ValueError(f"schema_grammar: unsupported schema node {node!r}")
        if body in named and name != "root":
            return named[body]
        named[body] = name
        rules[name] = body
        return name

    rule(schema, "root")
    rules["json_char"] = '[^"\\\\\\x00-\\x1f] | "\\\\" ["\\\\/bfnrt]'
    return "\n".join(f"{name} ::= {body}" for name, body in rules.items()) + "\n"


def _class_list(ontology: Ontology, ids) -> str:
    return " or ".join(ids) if ids else "anything"


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


# ---------------------------------------------------------------------------------------------- validation

def _folded(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).casefold().strip()


def _resolve_id(value, known: dict, to_identifier) -> str | None:
    """The ontology id an answer names: the id itself, or the property's local name in any naming style."""
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    if value in known:
        return value
    ident = to_identifier(value)
    return ident if ident in known else None


def _value_fits(datatype: str, value: str) -> bool:
    try:
        if datatype in INTEGER_DATATYPES:
            int(value.replace(",", ""))
        elif datatype in NUMERIC_DATATYPES:
            float(value.replace(",", ""))
        elif datatype == "boolean":
            return value.lower() in {"true", "false", "yes", "no"}
        elif datatype == "date":
            date.fromisoformat(value)
        elif datatype == "dateTime":
            datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _items(answer: dict, key: str, where: str, rejected: list[str]) -> list:
    items = answer.get(key, [])
    if not isinstance(items, list):
        rejected.append(f"{where}: {key!r} in the model's answer is not a list: {str(items)[:200]!r}")
        return []
    return items


def validate_extraction(answer: str | dict, ontology: Ontology, chunk: dict) -> dict:
    """Keep only answer items valid against the ontology and the chunk text; say why each other item was dropped."""
    where = chunk_label(chunk)
    result: dict = {"entities": [], "relations": [], "attributes": [], "rejected": []}
    rejected = result["rejected"]
    if isinstance(answer, str):
        try:
            answer = json.loads(answer)
        except ValueError as exc:
            rejected.append(f"{where}: the model's answer is not valid JSON ({exc}): {answer[:200]!r}")
            return result
    if not isinstance(answer, dict):
        rejected.append(f"{where}: the model's answer is not a JSON object: {str(answer)[:200]!r}")
        return result
    text = _folded(chunk.get("text", ""))

    kept: dict[str, dict] = {}  # normalized name -> {"name", "label"}
    for item in _items(answer, "entities", where, rejected):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name.strip():
            rejected.append(f"{where}: entity without a name: {str(item)[:200]!r}")
            continue
        name, cls = name.strip(), item.get("class", item.get("label"))
        if cls not in ontology.classes:
            rejected.append(f"{where}: entity {name!r} has class {cls!r}, which is not a class of the ontology")
            continue
        if _folded(name) not in text:
            rejected.append(f"{where}: entity {name!r} does not occur in the chunk text (dropped as hallucinated)")
            continue
        key = normalize_name(name) or name.casefold()
        if key in kept:
            previous = kept[key]["label"]
            if previous != cls and ontology.is_a(cls, previous):
                kept[key]["label"] = cls  # the more specific class wins
            elif previous != cls and not ontology.is_a(previous, cls):
                rejected.append(f"{where}: entity {name!r} given two unrelated classes {previous!r} and {cls!r}; "
                                f"kept {previous!r}")
            continue
        kept[key] = {"name": name, "label": cls}
    result["entities"] = list(kept.values())

    def entity_for(name, role: str, what: str) -> dict | None:
        found = kept.get(normalize_name(name) or name.casefold()) if isinstance(name, str) and name.strip() else None
        if found is None:
            rejected.append(f"{where}: {what}: {role} {name!r} is not a kept entity of the answer")
        return found

    seen_relations = set()
    for item in _items(answer, "relations", where, rejected):
        if not isinstance(item, dict):
            rejected.append(f"{where}: relation is not an object: {str(item)[:200]!r}")
            continue
        what = f"relation {item.get('source')!r} -{item.get('relation', item.get('type'))}-> {item.get('target')!r}"
        named = item.get("relation", item.get("type"))
        rel_id = _resolve_id(named, ontology.relations, relation_identifier)
        if rel_id is None:
            rejected.append(f"{where}: {what}: {named!r} is not a relation of the ontology")
            continue
        source, target = entity_for(item.get("source"), "source", what), entity_for(item.get("target"), "target", what)
        if source is None or target is None:
            continue
        if source is target:
            rejected.append(f"{where}: {what}: source and target are the same entity")
            continue
        if not ontology.domain_range_ok(rel_id, source["label"], target["label"]):
            rel = ontology.relations[rel_id]
            domains = rel.domains
            ranges = rel.ranges
            rejected.append(f"{where}: {what}: {source['label']} -> {target['label']} violates the domain/range of "
                            f"{rel_id} ({_class_list(ontology, domains)} -> {_class_list(ontology, ranges)})")
            continue
        key = (source["name"], rel_id, target["name"])
        if key not in seen_relations:
            seen_relations.add(key)
            result["relations"].append({"source": source["name"], "type": rel_id, "target": target["name"]})

    seen_attributes = set()
    for item in _items(answer, "attributes", where, rejected):
        if not isinstance(item, dict):
            rejected.append(f"{where}: attribute is not an object: {str(item)[:200]!r}")
            continue
        what = f"attribute {item.get('property')!r} of {item.get('entity')!r}"
        attr_id = _resolve_id(item.get("property"), ontology.attributes, attribute_identifier)
        if attr_id is None:
            rejected.append(f"{where}: {what}: {item.get('property')!r} is not an attribute of the ontology")
            continue
        holder = entity_for(item.get("entity"), "entity", what)
        if holder is None:
            continue
        if not ontology.attribute_ok(attr_id, holder["label"]):
            rejected.append(f"{where}: {what}: a {holder['label']} cannot have {attr_id} "
                            f"(domain {ontology.attributes[attr_id].domain})")
            continue
        value = item.get("value")
        value = str(value).strip() if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""
        if not value:
            rejected.append(f"{where}: {what}: no value")
            continue
        if _folded(value) not in text:
            rejected.append(f"{where}: {what}: value {value!r} does not occur in the chunk text (dropped as hallucinated)")
            continue
        datatype = ontology.attributes[attr_id].datatype
        if not _value_fits(datatype, value):
            rejected.append(f"{where}: {what}: value {value!r} is not a valid {datatype}")
            continue
        key = (holder["name"], attr_id, value)
        if key not in seen_attributes:
            seen_attributes.add(key)
            result["attributes"].append({"entity": holder["name"], "property": attr_id, "value": value})
    result["rejected"] = list(dict.fromkeys(rejected))  # a model repeating itself is reported once
    return result


# ---------------------------------------------------------------------------------------------- cache

class ExtractionCache:
    """Raw model answers in SQLite (WAL), one row per cache key; every call opens its own connection (process-safe)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS llm_answers (key TEXT PRIMARY KEY, chunk_sha256 TEXT NOT NULL, "
                         "ontology_fingerprint TEXT NOT NULL, model_id TEXT NOT NULL, doc_id TEXT, chunk_id TEXT, "
                         "answer TEXT NOT NULL, created_at TEXT NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60.0)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            pass  # a file system without shared memory: the default rollback journal is still safe
        return conn

    def get(self, key: str) -> str | None:
        conn = self._connect()
        try:
            row = conn.execute("SELECT answer FROM llm_answers WHERE key = ?", (key,)).fetchone()
        finally:
            conn.close()
        return row[0] if row else None

    def put(self, key: str, answer: str, *, chunk_sha256: str, ontology_fingerprint: str, model_id: str,
            doc_id: str = "", chunk_id: str = "") -> None:
        conn = self._connect()
        try:
            with conn:
                conn.execute("INSERT OR REPLACE INTO llm_answers VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (key, chunk_sha256, ontology_fingerprint, model_id, doc_id, chunk_id, answer,
                              datetime.now(timezone.utc).isoformat()))
        finally:
            conn.close()

    def __len__(self) -> int:
        conn = self._connect()
        try:
            return conn.execute("SELECT COUNT(*) FROM llm_answers").fetchone()[0]
        finally:
            conn.close()


# ---------------------------------------------------------------------------------------------- extractor

class LLMExtractor:
    """Extracts one chunk's facts through an OpenAI-compatible server (vLLM), constrained, validated and cached."""

    def __init__(self, base_url: str | None = None, model: str | None = None, timeout_s: float = 120.0,
                 max_tokens: int = 384, cache_path: str | os.PathLike | None = None, api: str = "auto",
                 api_key: str = "", vllm_options: bool = True, constrain_names: bool = True,
                 few_shot: int = FEW_SHOT):
        if api not in {"auto", "chat", "completions"}:
            raise ValueError(f"api must be 'auto', 'chat' or 'completions', not {api!r}")
        self.base_url = (base_url or default_vllm_url()).rstrip("/")
        self.model = model if model is not None else default_llm_model()
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self.cache = ExtractionCache(cache_path or default_llm_cache_path())
        self.api = api
        self.api_key = api_key
        self.vllm_options = vllm_options  # vLLM's grammar decoding; False = OpenAI response_format json_schema
        self.constrain_names = constrain_names  # names/values limited to spans of the chunk (candidate_names)
        self.few_shot = few_shot  # nearest labeled examples per prompt (0: the example made from the ontology)
        self.requests_sent = 0  # completion requests actually sent (tests assert the cache saves them)
        self.cache_hits = 0
        self._model_info: tuple[float, str, str] | None = None  # (time, served name, identity)

    # ------------------------------------------------------------------ server
    def _post_or_get(self, method: str, path: str, payload: dict | None, where: str):
        import requests

        url = self.base_url + path
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            return requests.request(method, url, json=payload, headers=headers, timeout=self.timeout_s)
        except requests.Timeout as exc:
            raise LLMUnavailableError(f"LLM server {url} did not answer within {self.timeout_s}s ({where})") from exc
        except requests.RequestException as exc:
            raise LLMUnavailableError(f"LLM server {url} unreachable ({where}): {exc}") from exc

    def served_model(self, where: str = "model lookup") -> tuple[str, str]:
        """(served name, identity): identity = name, root and parent from /v1/models (an adapter's path included)."""
        if self._model_info and time.monotonic() - self._model_info[0] < 30.0:
            return self._model_info[1], self._model_info[2]
        response = self._post_or_get("GET", "/v1/models", None, where)
        if response.status_code != 200:
            raise LLMUnavailableError(f"GET {self.base_url}/v1/models -> {response.status_code} ({where}): "
                                      f"{response.text[:300]}")
        models = response.json().get("data", [])
        adapter = "" if self.model else deployed_extraction_model()
        if adapter and any(m.get("id") == adapter for m in models):
            entry = next(m for m in models if m.get("id") == adapter)  # the fine-tuned extraction adapter
        elif self.model:
            entry = next((m for m in models if m.get("id") == self.model), None)
            if entry is None:
                raise LLMUnavailableError(f"model {self.model!r} is not served at {self.base_url} ({where}); served: "
                                          f"{', '.join(sorted(m.get('id', '?') for m in models)) or 'none'}")
        else:  # the base model: the first entry that is not a LoRA adapter
            entry = next((m for m in models if not m.get("parent")), None)
            if entry is None:
                raise LLMUnavailableError(f"no base model is served at {self.base_url} ({where})")
        identity = f"{entry['id']}|root={entry.get('root') or ''}|parent={entry.get('parent') or ''}"
        self._model_info = (time.monotonic(), entry["id"], identity)
        return entry["id"], identity

    def cache_key(self, chunk: dict, ontology: Ontology, model_identity: str) -> tuple[str, str]:
        """(key, sha256 of the chunk text): the text, the ontology, the served model and the prompt/decoding."""
        text_sha = hashlib.sha256(chunk.get("text", "").encode("utf-8")).hexdigest()
        decoding = f"{PROMPT_VERSION}|max_tokens={self.max_tokens}|grammar={self.vllm_options}|spans={self.constrain_names}"
        examples = load_examples(ontology).fingerprint if self.few_shot > 0 else ""
        parts = [text_sha, ontology.fingerprint, model_identity, decoding, f"few_shot={self.few_shot}|{examples}"]
        return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest(), text_sha

    def _request_body(self, endpoint: str, served: str, ontology: Ontology, text: str) -> dict:
        schema = extraction_schema(ontology, candidate_names(text) if self.constrain_names else None)
        body = {"model": served, "max_tokens": self.max_tokens, "temperature": 0.0, "seed": 0}
        if self.vllm_options:  # vLLM: the schema as a whitespace-free grammar (see schema_grammar)
            body["structured_outputs"] = {"grammar": schema_grammar(schema)}
        else:  # any OpenAI-compatible server
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "extraction", "schema": schema, "strict": True}}
        if endpoint == "chat":
            body["messages"] = extraction_messages(ontology, text, self.few_shot)
        else:
            body["prompt"] = extraction_prompt(ontology, text, self.few_shot) + " "
        return body

    def _ask(self, served: str, ontology: Ontology, chunk: dict, where: str) -> tuple[str | None, str | None]:
        """(answer text, None) or (None, why the server refused this chunk); transport failures raise."""
        endpoints = ["chat", "completions"] if self.api == "auto" else [self.api]
        for endpoint in endpoints:
            path = "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"
            self.requests_sent += 1
            response = self._post_or_get("POST", path, self._request_body(endpoint, served, ontology,
                                                                          chunk.get("text", "")), where)
            if response.status_code == 200:
                choice = response.json()["choices"][0]
                text = (choice.get("message") or {}).get("content") if endpoint == "chat" else choice.get("text")
                if self.api == "auto":
                    self.api = endpoint  # remember what this server supports
                return text or "", None
            body = response.text[:500]
            if response.status_code == 400 and endpoint == "chat" and "template" in body.lower() and len(endpoints) > 1:
                continue  # no chat template on this model: plain completions
            if response.status_code == 400:
                return None, f"{where}: the LLM server refused the chunk (HTTP 400): {body}"
            raise LLMUnavailableError(f"POST {self.base_url}{path} -> HTTP {response.status_code} ({where}): {body}")
        return None, f"{where}: the LLM server accepted no request format"

    def extract_chunk(self, chunk: dict, ontology: Ontology) -> dict:
        """{"entities": [{"name","label"}], "relations": [{"source","type","target"}],
        "attributes": [{"entity","property","value"}], "rejected": [reasons], "cached": bool} for one chunk."""
        where = chunk_label(chunk)
        if not str(chunk.get("text", "")).strip():  # nothing to read: no request, nothing to cache
            return {"entities": [], "relations": [], "attributes": [], "rejected": [], "cached": False}
        served, identity = self.served_model(where)
        key, text_sha = self.cache_key(chunk, ontology, identity)
        answer = self.cache.get(key)
        cached = answer is not None
        if cached:
            self.cache_hits += 1
        else:
            answer, refusal = self._ask(served, ontology, chunk, where)
            if answer is None:  # not cached: a refusal may depend on server settings (context length)
                return {"entities": [], "relations": [], "attributes": [], "rejected": [refusal], "cached": False}
            self.cache.put(key, answer, chunk_sha256=text_sha, ontology_fingerprint=ontology.fingerprint,
                           model_id=identity, doc_id=str(chunk.get("doc_id", "")), chunk_id=str(chunk.get("chunk_id", "")))
        result = validate_extraction(answer, ontology, chunk)
        result["cached"] = cached
        return result


def extractor_from_env(**overrides) -> LLMExtractor:
    """The extractor on the platform's defaults: $DOCPLATFORM_VLLM_URL, $DOCPLATFORM_KG_LLM_MODEL, the data dir cache."""
    settings = {"base_url": default_vllm_url(), "model": default_llm_model(), "cache_path": default_llm_cache_path()}
    timeout = os.environ.get("DOCPLATFORM_KG_LLM_TIMEOUT_S")
    if timeout:
        settings["timeout_s"] = float(timeout)
    settings.update(overrides)
    return LLMExtractor(**settings)
