"""Extraction layers on text the rules were not written for: tables, key-value blocks, sentence shapes, another
domain's ontology, literal attributes, resolution. Real spaCy, real MiniLM, real unstructured parsing."""

from pathlib import Path

import pytest

from assets.chunking import ChunkingConfig, chunk_elements
from assets.parsing import partition_document
from assets.knowledge_graph.extract import ExtractionConfig, extract_facts, silent_on_relations
from resources.ontology_loading import load_ontology

AVIATION = Path(__file__).parent / "data" / "aviation_ontology"


def facts_of(tmp_path, name: str, text: str, ontology=None, config=None) -> dict:
    path = tmp_path / name
    path.write_text(text)
    elements = [e.to_dict() for e in partition_document(name, path.suffix, path.read_bytes())]
    chunks = chunk_elements(name, "sha", elements, ChunkingConfig())
    return extract_facts(chunks, ontology or load_ontology(), elements=elements, config=config)


def named_triples(facts: dict, layer: str | None = None) -> set[tuple[str, str, str]]:
    names = {e["id"]: e["name"].lower() for e in facts["entities"]}
    return {(r["type"], names[r["source"]], names[r["target"]]) for r in facts["relations"]
            if layer is None or r["layer"] == layer}


def text_facts(text: str, ontology=None) -> dict:
    return extract_facts([{"chunk_id": "c0", "doc_id": "d.txt", "seq": 0, "text": text}], ontology or load_ontology())


def test_markdown_table_columns_typed_by_header_words_and_multi_valued_cells(tmp_path):
    facts = facts_of(tmp_path, "hosts.md", "# Fleet\n\n| Hostname | Deployed apps | Responsible team |\n|---|---|---|\n"
                     "| bx-web-11 | quote-api, invoice-store (MySQL 8) | Revenue Tools |\n"
                     "| bx-web-12 | ledger-ui | Revenue Tools |\n")
    assert named_triples(facts, "structure") == {
        ("RUNS_ON", "quote-api", "bx-web-11"), ("RUNS_ON", "invoice-store", "bx-web-11"),
        ("RUNS_ON", "ledger-ui", "bx-web-12"),
        ("MANAGED_BY", "bx-web-11", "revenue tools"), ("MANAGED_BY", "bx-web-12", "revenue tools")}
    labels = {e["name"]: e["label"] for e in facts["entities"]}
    assert labels["bx-web-11"] == "Server" and labels["Revenue Tools"] == "Team"


def test_html_table_header_naming_a_relation(tmp_path):
    html = ("<html><body><table><tr><th>Service</th><th>Calls</th><th>Owned by</th></tr>"
            "<tr><td>fare-engine</td><td>fare-cache</td><td>Pricing Guild</td></tr></table></body></html>")
    facts = facts_of(tmp_path, "deps.html", html)
    found = named_triples(facts)
    assert ("MANAGED_BY", "fare-engine", "pricing guild") in found
    assert ("DEPENDS_ON", "fare-engine", "fare-cache") in found


def test_headers_defined_in_prose_and_lower_case_cell_names(tmp_path):
    """Headers no lexicon knows, defined in the text above the table; names in lower case."""
    facts = facts_of(tmp_path, "register.md", (
        "# Warehouse systems\n\nHow to read the table: *Home* is the machine the program is installed on;\n"
        "*Needs at runtime* lists the services it cannot work without; *Who to call* is the team that owns it.\n\n"
        "| Program | Home | Needs at runtime | Who to call | Notes |\n|---|---|---|---|---|\n"
        "| picking planner | whs-node-4 | stock-db, label api | Floor Apps Team | moved from whs-node-2 in May |\n"
        "| label api | whs-node-5 | printer-queue-db | Floor Apps Team | label-cache |\n"))
    assert {("RUNS_ON", "picking planner", "whs-node-4"), ("RUNS_ON", "label api", "whs-node-5"),
            ("DEPENDS_ON", "picking planner", "stock-db"), ("DEPENDS_ON", "picking planner", "label api"),
            ("DEPENDS_ON", "label api", "printer-queue-db"),
            ("MANAGED_BY", "picking planner", "floor apps team")} <= named_triples(facts, "structure")
    # a remarks column of phrases relates nothing, not even its one name-like cell
    assert not any("whs-node-2" in t or t == "label-cache" for _, _, t in named_triples(facts, "structure"))


def test_nested_list_items_with_dash_tails_and_crossed_out_values(tmp_path):
    """A list of boxes, each with its owner after the dash; a crossed-out item states nothing."""
    facts = facts_of(tmp_path, "boxes.md", (
        "# Boxes\n\n- Hall B\n  - whs-node-4 — Floor Apps Team\n    - picking planner\n"
        "    - ~~old scanner bridge~~ (retired)\n  - whs-node-5 — Storage Crew\n    - stock-db\n"))
    found = named_triples(facts, "structure")
    assert {("MANAGED_BY", "whs-node-4", "floor apps team"), ("MANAGED_BY", "whs-node-5", "storage crew")} <= found
    assert not any("scanner" in source or "scanner" in target for _, source, target in found)


def test_lower_case_names_a_document_keeps_using_are_mentions():
    """'the picking planner', said twice, is a name; 'the big screen' (no compound) and 'the shift lead' (once)
    are not; a copula alone ('is a Java service') relates nothing."""
    facts = text_facts("The picking planner assigns each order to a picker. The picking planner runs on whs-node-4 "
                       "and shows the plan on the big screen. It is a Java service. The shift lead checks it daily.")
    found = named_triples(facts)
    assert ("RUNS_ON", "picking planner", "whs-node-4") in found
    assert not any(t in ("java", "big screen", "shift lead") for _, _, t in found)


def test_key_value_blocks_under_headings(tmp_path):
    facts = facts_of(tmp_path, "catalog.md", "# Catalog\n\n## tally-svc\n\n- Type: service\n- Deployed to: kv-node-7\n"
                     "- Maintainers: Ledger Crew\n- Calls: rate-svc, audit-db\n- Port: 9090\n")
    assert {("RUNS_ON", "tally-svc", "kv-node-7"), ("MANAGED_BY", "tally-svc", "ledger crew"),
            ("DEPENDS_ON", "tally-svc", "rate-svc"), ("DEPENDS_ON", "tally-svc", "audit-db")} <= named_triples(facts)
    assert [(a["property"], a["value"]) for a in facts["attributes"]] == [("port", "9090")]


@pytest.mark.parametrize("sentence, expected", [
    ("The quota-svc and the meter-svc are maintained by the Billing Crew.",
     {("MANAGED_BY", "quota-svc", "billing crew"), ("MANAGED_BY", "meter-svc", "billing crew")}),
    ("rollup-worker, which sits on host bk-03, reads from stats-db.",
     {("RUNS_ON", "rollup-worker", "bk-03"), ("DEPENDS_ON", "rollup-worker", "stats-db")}),
    ("The Atlas Squad maintains edge-proxy.", {("MANAGED_BY", "edge-proxy", "atlas squad")}),
    ("stats-db is used by report-api.", {("DEPENDS_ON", "report-api", "stats-db")}),
    ("report-api queries stats-db, cache-db and user-db.",
     {("DEPENDS_ON", "report-api", "stats-db"), ("DEPENDS_ON", "report-api", "cache-db"),
      ("DEPENDS_ON", "report-api", "user-db")}),
    ("Check that sync-agent is up. It is deployed on bk-09.", {("RUNS_ON", "sync-agent", "bk-09")}),
])
def test_sentence_shapes(sentence, expected):
    assert expected <= named_triples(text_facts(sentence))


@pytest.mark.parametrize("sentence", [
    "report-api no longer runs on bk-02.",
    "Until now report-api ran on bk-02; it moved to bk-05.",
    "report-api could run on bk-02 if we had capacity.",
    "The Billing Crew runs on bk-02.",  # a team cannot run on a server: not a MANAGED_BY either
    "could we run a second report-api on bk-02 for redundancy?",  # a question states nothing
    "report-api moved off bk-02 in the spring.",
    "Only if load grows: consider a standby report-api on bk-02.",  # an option put up for discussion
])
def test_past_negated_hypothetical_and_domain_breaking_statements_yield_nothing_wrong(sentence):
    found = named_triples(text_facts(sentence))
    assert ("RUNS_ON", "report-api", "bk-02") not in found
    assert not any(t == "MANAGED_BY" for t, _, _ in found)


def test_another_domain_ontology_without_hints():
    aviation = load_ontology(AVIATION)
    facts = text_facts("Skylark Air is an airline based in Porto. Aldan Airport is located in Porto. "
                       "Skylark Air operates the Tern 400. Runway 18R is 2,900 meters long.", aviation)
    assert {("BASED_IN", "skylark air", "porto"), ("LOCATED_IN", "aldan airport", "porto"),
            ("OPERATES_TYPE", "skylark air", "tern 400")} <= named_triples(facts)
    assert {(a["property"], a["value"]) for a in facts["attributes"]} == {("runway_length", "2900")}
    assert aviation.validate_shacl(facts)[0]


def test_resolution_merges_class_word_variants_and_explains_why():
    facts = text_facts("The Fraud Ops Team owns risk-api. risk-api is also maintained by Fraud Ops.")
    teams = [e for e in facts["entities"] if e["label"] == "Team"]
    assert len(teams) == 1 and teams[0]["merges"] and set(teams[0]["merges"].values()) <= {"class word", "same normalised name"}


def test_layers_switch_off_and_warning_for_silent_documents(tmp_path):
    text = "# Fleet\n\n| Host | Apps |\n|---|---|\n| qa-node-1 | lint-api |\n\nlint-api calls spell-api.\n"
    full = facts_of(tmp_path, "a.md", text)
    assert {r["layer"] for r in full["relations"]} == {"structure", "sentence"}
    no_structure = facts_of(tmp_path, "a.md", text, config=ExtractionConfig(structure=False))
    assert {r["layer"] for r in no_structure["relations"]} == {"sentence"}
    nothing = facts_of(tmp_path, "a.md", text, config=ExtractionConfig(structure=False, sentences=False))
    assert nothing["relations"] == [] and silent_on_relations(nothing)
    assert not silent_on_relations(full)


def test_korean_sentences_and_hangul_aliases_resolve_to_known_english_entities():
    facts = text_facts("order-api는 app-07 서버에서 실행된다. 인프라팀이 app-07 서버를 관리한다. "
                       "order-api는 stock-api를 호출한다.")
    assert {("RUNS_ON", "order-api", "app-07"), ("MANAGED_BY", "app-07", "platform team"),
            ("DEPENDS_ON", "order-api", "stock-api")} <= named_triples(facts, "korean")
    platform = next(e for e in facts["entities"] if e["id"] == "Team:platform")
    assert platform["name"] == "Platform Team" and platform["merges"] == {"인프라팀": "known individual"}


def test_a_model_number_alone_is_the_full_name_said_before():
    aviation = load_ontology(AVIATION)
    facts = text_facts("The airline Skylark Air operates the aircraft type Tern T-400. Skylark Air flies the T-400 daily.",
                       aviation)
    types = [e for e in facts["entities"] if e["label"] == "AircraftType"]
    assert [e["name"] for e in types] == ["Tern T-400"] and types[0]["merges"] == {"T-400": "short form"}


def test_a_state_that_ended_is_not_a_current_fact():
    found = named_triples(text_facts("Until the migration quota-svc ran on bk-11. Now quota-svc runs on bk-12."))
    assert ("RUNS_ON", "quota-svc", "bk-12") in found and ("RUNS_ON", "quota-svc", "bk-11") not in found


def _published_style(name: str, properties: str) -> str:
    """A Text2KGBench-style ontology: object properties only, classes and datatypes known by their use."""
    return f"""@prefix owl: <http://www.w3.org/2002/07/owl#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix r: <https://example.org/{name}/relations#> .
@prefix c: <https://example.org/{name}/concepts#> .
{properties}"""


_SHIP_ONTOLOGY = _published_style("ships", """\
r:displacement a owl:ObjectProperty ; rdfs:label "displacement" ; rdfs:domain c:Vessel ; rdfs:range c:number .
r:launchDate a owl:ObjectProperty ; rdfs:label "launchDate" ; rdfs:domain c:Vessel ; rdfs:range c:Date .
r:homePort a owl:ObjectProperty ; rdfs:label "homePort" ; rdfs:domain c:Vessel ; rdfs:range c:Port .
r:callSign a owl:ObjectProperty ; rdfs:label "callSign" ; rdfs:domain c:Vessel ; rdfs:range c:string .
""")


def test_values_name_their_holder_when_nothing_else_types_it(tmp_path):
    """A published ontology's literal properties (ranges named 'number', 'Date'): the thing that has a
    displacement is a Vessel even when no word says so; a date written out is stored in ISO form, a number as
    written; a designation's leading numbers are part of its name; free text proves nothing by its shape."""
    (tmp_path / "ontology.ttl").write_text(_SHIP_ONTOLOGY)
    ships = load_ontology(tmp_path)
    facts = text_facts("(4471) 2031 Kestrel has a displacement of 1200.0 tonnes and a launch date of 3rd March "
                       "1998. Its call sign is KX7.", ships)
    entities = {e["name"]: e["label"] for e in facts["entities"]}
    assert entities == {"(4471) 2031 Kestrel": "Vessel"}
    assert {(a["property"], a["value"]) for a in facts["attributes"]} == {
        ("displacement", "1200.0"), ("launch_date", "1998-03-03")}


def test_a_date_written_out_is_not_read_as_a_number(tmp_path):
    """A number property next to a date written out ('displacement ... 12 June 2004') takes nothing from it:
    the date is one value, and its day is not a displacement."""
    (tmp_path / "ontology.ttl").write_text(_SHIP_ONTOLOGY)
    ships = load_ontology(tmp_path)
    facts = text_facts("(4471) 2031 Kestrel has a displacement of 1200.0 tonnes. (4471) 2031 Kestrel had its "
                       "displacement measured on 12 June 2004.", ships)
    displacements = {a["value"] for a in facts["attributes"] if a["property"] == "displacement"}
    assert displacements == {"1200.0"}


def test_titles_keep_their_small_words(tmp_path):
    """'of' joins two capitalised names into one title, a capitalised function word after it belongs to the
    title, and a person's name is never joined to what follows 'of'."""
    from assets.knowledge_graph.mentions import find_mentions, lexicon_for, parse_english

    (tmp_path / "ontology.ttl").write_text(_SHIP_ONTOLOGY)
    lexicon = lexicon_for(load_ontology(tmp_path))
    doc = parse_english(["Star of No Return left the port. It was bought by the Bank of Westmarch from "
                         "Maria Olsen of Harwick."])[0]
    surfaces = [m.surface for m in find_mentions(doc, "c", lexicon)]
    assert "Star of No Return" in surfaces and "Bank of Westmarch" in surfaces
    assert "Maria Olsen" in surfaces and not any("Olsen of" in s for s in surfaces)


_FLEET_ONTOLOGY = _published_style("fleet", """\
r:builtBy a owl:ObjectProperty ; rdfs:label "built by" ; rdfs:domain c:Vessel ; rdfs:range c:Shipyard .
r:shipyard a owl:ObjectProperty ; rdfs:label "shipyard" ; rdfs:domain c:Vessel ; rdfs:range c:Shipyard .
r:mooredAt a owl:ObjectProperty ; rdfs:label "moored at" ; rdfs:domain c:Vessel ; rdfs:range c:Harbour .
r:harbour a owl:ObjectProperty ; rdfs:label "harbour" ; rdfs:domain c:Vessel ; rdfs:range c:Harbour .
r:homeHarbour a owl:ObjectProperty ; rdfs:label "home harbour" ; rdfs:domain c:Vessel ; rdfs:range c:Harbour .
""")


def test_a_relation_named_after_its_range_class_is_stated_with_its_sibling(tmp_path):
    """'shipyard' (Vessel -> Shipyard) means 'the vessel's shipyard': the clause that states 'built by' between a
    vessel and a name typed Shipyard by its own words states it too; a name typed only by that clause gets the
    relation the clause names. 'home harbour' is not named after Harbour, so 'harbour' is the one it names."""
    from assets.knowledge_graph.schema import class_named_relations

    (tmp_path / "ontology.ttl").write_text(_FLEET_ONTOLOGY)
    fleet = load_ontology(tmp_path)
    assert class_named_relations(fleet) == {("Vessel", "Shipyard"): "SHIPYARD", ("Vessel", "Harbour"): "HARBOUR"}
    typed = text_facts("The vessel Kestrel was built by the Halvard shipyard.", fleet)
    assert named_triples(typed, "sentence") == {("BUILT_BY", "kestrel", "halvard"), ("SHIPYARD", "kestrel", "halvard")}
    guessed = text_facts("The vessel Kestrel was built by Halvard Works.", fleet)
    assert named_triples(guessed, "sentence") == {("BUILT_BY", "kestrel", "halvard works")}


def test_a_class_word_types_the_name_it_calls(tmp_path):
    """'a vessel called Kestrel', 'a shipyard known as Halvard Works': the class word names what follows."""
    from assets.knowledge_graph.mentions import find_mentions, lexicon_for, parse_english

    (tmp_path / "ontology.ttl").write_text(_FLEET_ONTOLOGY)
    lexicon = lexicon_for(load_ontology(tmp_path))
    doc = parse_english(["The owners bought a vessel called Kestrel from a shipyard known as Halvard Works."])[0]
    evidence = {m.surface: {cls for cls, _ in m.evidence} for m in find_mentions(doc, "c", lexicon)}
    assert "Vessel" in evidence["Kestrel"] and "Shipyard" in evidence["Halvard Works"], evidence


def test_a_numbered_short_form_types_its_full_name_and_merges_into_it(tmp_path):
    """'the K-7' is built by a shipyard, so it is a Vessel; 'the Marwick K-7' of the list above is the same vessel,
    untyped until then: one entity under the full name, the fact on it."""
    (tmp_path / "ontology.ttl").write_text(_FLEET_ONTOLOGY)
    fleet = load_ontology(tmp_path)
    facts = text_facts("Marwick builds two coastal freighters:\n\n- The Marwick K-7, a freighter for short routes.\n"
                       "- The Marwick K-9, with twice the hold.\n\nBoth the K-7 and the K-9 are built by the Halvard "
                       "shipyard.", fleet)
    entities = {e["name"]: e for e in facts["entities"] if e["label"] == "Vessel"}
    assert set(entities) == {"Marwick K-7", "Marwick K-9"}, entities
    assert entities["Marwick K-7"]["merges"] == {"K-7": "short form"}
    assert ("BUILT_BY", "marwick k-7", "halvard") in named_triples(facts)


def test_plain_text_records_with_list_values_comments_and_a_headed_title(tmp_path):
    """A deploy note in YAML-like plain text: the lines stay lines, a bare key takes the '- item's below it, a '#'
    comment is a note, 'none yet' names nothing, a bare key over keys heads the next record."""
    note = ("service: parcel sorter\nlanguage: Rust\nowner: Depot Tooling Crew\nnodes:\n  - sx-node-4\n  - sx-node-5\n"
            "store: sorter-db        # mariadb 11\ncalls:\n  - label printer        # zebra queue\n  - route cache\n"
            "events_to: none yet     # planned\n\nsorter-db:\n  host: sx-node-9\n  owner: Depot Tooling Crew\n")
    elements = [e.to_dict() for e in partition_document("deploy.txt", ".txt", note.encode())]
    assert "service: parcel sorter" in [e["text"] for e in elements]  # not joined into one line with the others
    triples = named_triples(facts_of(tmp_path, "deploy.txt", note))
    assert {("MANAGED_BY", "parcel sorter", "depot tooling crew"), ("RUNS_ON", "parcel sorter", "sx-node-4"),
            ("RUNS_ON", "parcel sorter", "sx-node-5"), ("DEPENDS_ON", "parcel sorter", "sorter-db"),
            ("DEPENDS_ON", "parcel sorter", "label printer"), ("DEPENDS_ON", "parcel sorter", "route cache"),
            ("RUNS_ON", "sorter-db", "sx-node-9")} <= triples
    assert not {t for t in triples if "none" in t[2] or "zebra" in t[2] or "mariadb" in t[2]}
    # a wrapped prose paragraph is still joined into one sentence
    prose = [e.to_dict()["text"] for e in partition_document(
        "p.txt", ".txt", b"The parcel sorter reads its routes from\nthe route cache every minute.\n")]
    assert prose == ["The parcel sorter reads its routes from the route cache every minute."]


def test_a_record_under_a_title_with_a_descriptive_tail_is_about_the_name(tmp_path):
    facts = facts_of(tmp_path, "profile.txt", "Nordvik Air - company profile\n\nFounded: 1961\nHeadquarters: Tromsholm\n"
                     "Hub: Tromsholm Lauvik Airport\n", ontology=load_ontology(AVIATION))
    assert {("BASED_IN", "nordvik air", "tromsholm"),
            ("HUB_AIRPORT", "nordvik air", "tromsholm lauvik airport")} <= named_triples(facts)
    assert ("founded_year", "1961") in {(a["property"], a["value"]) for a in facts["attributes"]}
    assert not {t for t in named_triples(facts) if t[2] == "1961"}  # a year is no place


def _read(tmp_path, name: str, text: str) -> tuple[list[dict], list[dict]]:
    path = tmp_path / name
    path.write_text(text)
    elements = [e.to_dict() for e in partition_document(name, path.suffix, path.read_bytes())]
    return elements, chunk_elements(name, "sha", elements, ChunkingConfig())


def test_names_another_documents_table_types_are_known_in_a_chat_log(tmp_path):
    """An inventory table types 'ticket sorter' (its Kind column) and 'sorter-store'; a chat line that names both in
    lower case relates them only when the run's corpus names are given."""
    from assets.knowledge_graph.corpus import CorpusNames
    from assets.knowledge_graph.extract import structure_names

    ontology = load_ontology()
    inventory = _read(tmp_path, "inventory.md", "| Name | Kind | Runs on | Team |\n|---|---|---|---|\n"
                      "| ticket sorter | application | sx-node-4 | Depot Crew |\n"
                      "| sorter-store | database | sx-node-9 | Depot Crew |\n")
    chat = _read(tmp_path, "chat.txt", "[09:12] ana: heads up, ticket sorter writes to sorter-store, so a slow "
                 "sorter-store stalls the queue\n")
    corpus = CorpusNames.merged([structure_names(chunks, ontology, elements=elements)
                                 for elements, chunks in (inventory, chat)])
    assert corpus.names["ticket-sorter"] == ("Application", "ticket sorter")
    assert corpus.names["sorter-store"] == ("Database", "sorter-store")  # the Kind column, not the name's suffix
    inventory_facts = extract_facts(inventory[1], ontology, elements=inventory[0])
    assert {(r["type"], r["target"]) for r in inventory_facts["relations"]} >= {("RUNS_ON", "Server:sx-node-4")}
    assert not any("application" in r["target"].lower() for r in inventory_facts["relations"])  # Kind relates nothing
    alone = extract_facts(chat[1], ontology, elements=chat[0])
    assert named_triples(alone) == set()
    known = extract_facts(chat[1], ontology, elements=chat[0], corpus_names=corpus)
    assert named_triples(known) == {("DEPENDS_ON", "ticket sorter", "sorter-store")}
    assert {(e["name"], e["label"]) for e in known["entities"]} == {("ticket sorter", "Application"),
                                                                   ("sorter-store", "Database")}


def test_corpus_names_split_evenly_between_classes_are_left_out():
    from assets.knowledge_graph.corpus import CorpusNames

    corpus = CorpusNames.merged([{"atlas": ("Application", "atlas"), "gw-1": ("Server", "gw-1")},
                                 {"atlas": ("Team", "Atlas")}, {"gw-1": ("Server", "GW-1")}])
    assert corpus.names == {"gw-1": ("Server", "gw-1")}
    assert corpus.found_in("traffic reaches GW-1 first, then gw-10") == {"gw-1": ("Server", "gw-1")}


@pytest.mark.parametrize("surface, why", [
    ("06-09-2006", "a value (a number or date)"), ("35.1", "a value (a number or date)"),
    ("is preceded by the album", "a predicate phrase"), ("on", "function words"), ("the database", "a class word"),
    ("servers", "a class word"), ("10.0.0.12", None), ("ledger-db", None), ("Platform Team", None),
    ("order router", None)])
def test_relation_ends_that_are_no_names(surface, why):
    from assets.knowledge_graph.extract import not_a_name
    from assets.knowledge_graph.mentions import lexicon_for

    assert not_a_name(surface, lexicon_for(load_ontology())) == why


_ENSEMBLE_ONTOLOGY = _published_style("ensembles", """\
r:conductor a owl:ObjectProperty ; rdfs:label "conductor" ; rdfs:domain c:Ensemble ; rdfs:range c:Person .
r:homeVenue a owl:ObjectProperty ; rdfs:label "homeVenue" ; rdfs:domain c:Ensemble ; rdfs:range c:Venue .
r:performedAt a owl:ObjectProperty ; rdfs:label "performedAt" ; rdfs:domain c:Ensemble ; rdfs:range c:Venue .
""")


def test_a_relation_named_by_a_noun_is_stated_by_its_owner(tmp_path):
    """"A's home venue is B", "the conductor of A is B": the possessor is the source, whatever NER guessed for the
    two names; a relation named by a verb phrase is not a noun; a state said in the past is no current fact."""
    from assets.knowledge_graph.sentences import relation_nouns

    (tmp_path / "ontology.ttl").write_text(_ENSEMBLE_ONTOLOGY)
    ensembles = load_ontology(tmp_path)
    assert relation_nouns(ensembles) == {"conductor": "CONDUCTOR", "homevenue": "HOME_VENUE"}
    venue = text_facts("The Lindqvist Consort's home venue is Marrow Hall.", ensembles)
    assert named_triples(venue, "sentence") == {("HOME_VENUE", "lindqvist consort", "marrow hall")}
    conductor = text_facts("The conductor of the Lindqvist Consort is Ilse Varga.", ensembles)
    assert named_triples(conductor, "sentence") == {("CONDUCTOR", "lindqvist consort", "ilse varga")}
    inverted = text_facts("Ilse Varga is the conductor of the Lindqvist Consort.", ensembles)
    assert named_triples(inverted, "sentence") == {("CONDUCTOR", "lindqvist consort", "ilse varga")}
    assert named_triples(text_facts("The conductor of the Lindqvist Consort was Ilse Varga.", ensembles)) == set()


def test_an_acronym_merges_into_the_one_name_it_abbreviates():
    from assets.knowledge_graph.mentions import lexicon_for
    from assets.knowledge_graph.resolve import Resolver, acronym_letters, initials

    assert (acronym_letters("the U.S."), acronym_letters("NHS"), acronym_letters("Nhs")) == ("us", "nhs", None)
    assert (initials("National Health Service"), initials("Bank of Lindor"), initials("payments api")) == \
        ("nhs", "bl", None)
    ontology = load_ontology()
    ids, entities = Resolver(ontology, lexicon_for(ontology)).resolve(
        [("Team", "Site Reliability Engineering", "c1"), ("Team", "SRE", "c2"), ("Team", "Data Team", "c2"),
         ("Team", "Sales Enablement", "c3"), ("Team", "SE", "c3"), ("Team", "Security Engineering", "c3")])
    assert ids[("Team", "SRE")] == ids[("Team", "Site Reliability Engineering")]
    assert entities[ids[("Team", "SRE")]]["name"] == "Site Reliability Engineering"
    assert entities[ids[("Team", "SRE")]]["merges"] == {"SRE": "acronym"}
    assert ids[("Team", "SE")] not in (ids[("Team", "Sales Enablement")], ids[("Team", "Security Engineering")])


def test_wrapped_prose_in_plain_text_is_joined_and_a_record_is_not(tmp_path):
    """Blank-line paragraphs: a question and its wrapped answer are one paragraph, joined as unstructured joins it;
    a paragraph of key lines keeps its lines."""
    text = ("Q: Ledger is slow. Who do I page?\nA: The Fraud Team owns ledger-svc. It runs on bk-07, and it reads "
            "from\n   ledger-db, so check ledger-db first.\n\nservice: quota-svc\nowner: Fraud Crew\nhost: bk-08\n")
    texts = [e.to_dict()["text"] for e in partition_document("faq.txt", ".txt", text.encode())]
    assert any("it reads from ledger-db" in t for t in texts), texts
    assert {"service: quota-svc", "owner: Fraud Crew", "host: bk-08"} <= set(texts)
    triples = named_triples(facts_of(tmp_path, "faq.txt", text))
    assert {("DEPENDS_ON", "ledger-svc", "ledger-db"), ("RUNS_ON", "quota-svc", "bk-08")} <= triples


@pytest.mark.parametrize("sentence", [
    "For Python 2.7 compatibility, use quorvex v1.x.",
    "Please reject CVE-2019-0001 and use CVE-2019-0002 for OpenStack.",
])
def test_two_ends_whose_classes_are_only_guessed_need_the_relations_own_words(sentence):
    """Neither end's class is read from the text (NER, or the relation itself in the first pass): a loose
    predicate ('use', 'for') between them is how text outside the ontology's domain became facts."""
    assert text_facts(sentence)["relations"] == []
    assert named_triples(text_facts("Quorvex depends on Plimber.")) == {("DEPENDS_ON", "quorvex", "plimber")}


def test_program_lines_are_not_parsed_for_facts():
    from assets.knowledge_graph.mentions import prose

    text = "Quorvex depends on Plimber.\nsession = quorvex.Session(plimber_url)\npatch_all()"
    assert prose(text).split("\n")[0] == "Quorvex depends on Plimber."
    assert "Session" not in prose(text) and "patch_all" not in prose(text)


def test_a_name_after_a_comma_says_where_the_first_is_not_what_it_relates_to():
    """'based in Corvany, Ostmere': Ostmere qualifies Corvany; the airline is based in Corvany only. 'is a regional
    airline based in' reads as 'based in': the noun after the copula is the airline itself."""
    facts = text_facts("Skylark Air is a regional airline based in Corvany, Ostmere. Ostmere is a country in the north.",
                       load_ontology(str(AVIATION)))
    triples = named_triples(facts)
    assert ("BASED_IN", "skylark air", "corvany") in triples
    assert not any("ostmere" in (source, target) for _, source, target in triples), triples


def test_a_record_key_names_its_relation_over_cells_typed_only_by_ner(tmp_path):
    """'Fleet: Marlow M-310, Marlow M-420': NER reads one model as an organization; that guess gives the column no
    class that the header 'Fleet' (operates aircraft) cannot override."""
    ontology = load_ontology(str(Path(__file__).parent.parent / "bench" / "kg_data" / "aviation" / "ontology"))
    text = ("Skylark Air - company profile\n\nFounded: 1999\nHub: Corvany Airport\nFleet: Marlow M-310, Marlow M-420\n\n"
            "Skylark Air is the second airline of Ostmere. Its routes to Asia are flown with the Marlow M-420, while "
            "the Marlow M-310 covers short routes.\n")
    triples = named_triples(facts_of(tmp_path, "skylark.txt", text, ontology), layer="structure")
    assert {("OPERATES_AIRCRAFT", "skylark air", "marlow m-310"),
            ("OPERATES_AIRCRAFT", "skylark air", "marlow m-420")} <= triples


def test_a_value_is_read_by_the_words_it_hangs_from():
    """'an airline founded in 1999 with its head office in ...': the words around the year are noisy, the verb
    it hangs from ('founded in') names the property."""
    facts = text_facts("Skylark Air is a small regional airline founded in 1999 with its head office in Corvany.",
                       load_ontology(str(AVIATION)))
    assert ("Airline:skylark-air", "founded_year", "1999") in {(a["entity"], a["property"], a["value"])
                                                              for a in facts["attributes"]}, facts["attributes"]


def test_a_value_belongs_to_the_subject_of_its_clause():
    """'It was established in 2009 by two former Pelican Air pilots': the year is the pronoun's referent's (the
    airline the previous sentence is about), not the nearest name's."""
    facts = text_facts("Skylark Air is a low-cost airline based in Corvany.\n"
                       "It was established in 2011 by two former Pelican Air pilots.", load_ontology(str(AVIATION)))
    held = {(a["entity"], a["property"], a["value"]) for a in facts["attributes"]}
    assert ("Airline:skylark-air", "founded_year", "2011") in held, held
    assert not any(entity.endswith("pelican-air") for entity, _, _ in held), held


def test_a_delimited_export_pasted_as_text_is_a_table(tmp_path):
    """A CMDB export in a .txt file (one parser element per line, '|' between cells, no markdown rules): its rows
    relate their cells; a status cell that says the row held once or is not there yet keeps its relations out; a
    column that repeats a few values in every row (the site) is a category, not a relation."""
    rows = [("bx-app-01", "NORTH", "LIVE", "Fleet Ops", "quote-api"),
            ("bx-app-02", "NORTH", "LIVE", "Fleet Ops", "quote-api; ledger-ui"),
            ("bx-app-03", "SOUTH", "LIVE", "Fleet Ops", "invoice-store"),
            ("bx-app-04", "SOUTH", "DECOMMISSIONED 2024-02-01", "-", "(historic) ledger-ui"),
            ("bx-app-05", "NORTH", "LIVE", "Billing Crew", "pay-relay"),
            ("bx-app-06", "SOUTH", "LIVE", "Billing Crew", "pay-relay")]
    text = ("cmdb export, columns: host | site | status | support_group (team accountable for the host) | installed_sw\n\n"
            "host|site|status|support_group|installed_sw\n") + "\n".join("|".join(row) for row in rows) + "\n"
    triples = named_triples(facts_of(tmp_path, "cmdb-export.txt", text))
    assert {("RUNS_ON", "quote-api", "bx-app-01"), ("RUNS_ON", "ledger-ui", "bx-app-02"),
            ("RUNS_ON", "pay-relay", "bx-app-06"), ("MANAGED_BY", "bx-app-05", "billing crew")} <= triples, triples
    assert ("RUNS_ON", "ledger-ui", "bx-app-04") not in triples
    assert not any("north" in (source, target) or "south" in (source, target) for _, source, target in triples)
    assert not any("|" in source + target for _, source, target in triples)


def test_a_definite_short_form_stands_for_the_full_name():
    """'the runner' after 'Fare Runner', 'the latter' after a name: the next sentence's relation is the full
    name's."""
    triples = named_triples(text_facts(
        "Nightly fares are the job of the Fare Runner application, deployed to bx-batch-02. "
        "The runner depends on fares-db for the rate tables. The rate tables are copied to bx-db-07. "
        "The latter is managed by Storage Crew."))
    assert ("DEPENDS_ON", "fare runner", "fares-db") in triples, triples
    assert ("MANAGED_BY", "bx-db-07", "storage crew") in triples, triples


def test_two_clauses_with_subjects_of_their_own_relate_nothing_across():
    """'X is owned by T1; T2 has offered to take it over': T2 is the subject of another clause, not X's team."""
    triples = named_triples(text_facts(
        "For now the Harbor Portal application is owned by Cargo Team; Mobile Squad has offered to take it over."))
    assert ("MANAGED_BY", "harbor portal", "cargo team") in triples, triples
    assert ("MANAGED_BY", "harbor portal", "mobile squad") not in triples, triples


def test_separators_inside_a_cells_parentheses_belong_to_its_note():
    from assets.knowledge_graph.structure import split_values
    assert split_values("srv-yard-01, srv-yard-02 (active/active)") == ["srv-yard-01", "srv-yard-02 (active/active)"]
    assert split_values("ledger-db (MySQL 8; replica), tariff-db / fx-db") == [
        "ledger-db (MySQL 8; replica)", "tariff-db", "fx-db"]


def test_a_capitalised_word_with_digits_is_a_name_even_when_ner_calls_it_a_date():
    """'App03093280' (NER: DATE) after 'the application' names the application; the Neo4j test's random names
    failed on such tags."""
    triples = named_triples(text_facts("The application App03093280 runs on srv-03093280-01."))
    assert ("RUNS_ON", "app03093280", "srv-03093280-01") in triples, triples
