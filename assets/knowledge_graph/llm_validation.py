"""Checks an LLM answer against the ontology and the chunk: known ids, domain/range with the answer's own classes,
names and values that really occur in the text; every dropped item is reported with its document and chunk."""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import date, datetime

from resources.ontology import Ontology, attribute_identifier, normalize_name, relation_identifier


NUMERIC_DATATYPES = {"integer", "int", "long", "short", "nonNegativeInteger", "positiveInteger", "decimal", "float",
                     "double"}
INTEGER_DATATYPES = {"integer", "int", "long", "short", "nonNegativeInteger", "positiveInteger"}


def chunk_label(chunk: dict) -> str:
    return f"document {chunk.get('doc_id', '?')!r} chunk {chunk.get('chunk_id', '?')!r}"


def _class_list(ontology: Ontology, ids) -> str:
    return " or ".join(ids) if ids else "anything"


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
