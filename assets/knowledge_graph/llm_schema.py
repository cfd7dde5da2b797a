"""The JSON schema an LLM answer must fit, derived from the ontology (ids as enums, every list and string bounded),
and the same schema as a whitespace-free EBNF grammar whose names are spans of the chunk, for vLLM's decoding."""

from __future__ import annotations

import json

from resources.ontology import Ontology


MAX_ENTITIES = 12
MAX_RELATIONS = 12
MAX_ATTRIBUTES = 8
MAX_NAME_CHARS = 80
MAX_VALUE_CHARS = 60
MAX_SPAN_WORDS = 5
MAX_CANDIDATES = 6000
SPAN_BREAKS = ".,;:!?"
SPAN_PUNCTUATION = " .,;:!?()[]{}<>\"'`"


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
