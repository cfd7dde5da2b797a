"""Property-based (hypothesis): random bytes and random Unicode names through ingestion, random values through
the Milvus filter quoting against a real milvus-lite collection. Nothing crashes except the clear per-document
error, and no filter value ever breaks out of its string literal."""

import string
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assets.chunking import ChunkingConfig, chunk_elements
from assets.document_reading import read_document
from assets.parsing import DocumentError, parse_records, suffix_of, validate_content
from pipelines.search import filter_expression
from resources.documents import SUPPORTED_SUFFIXES, DocumentSource
from resources.milvus import MilvusStore, _quote

SUFFIXES = sorted(SUPPORTED_SUFFIXES) + [".exe", ""]
FAST = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# file-name characters: any Unicode a file system takes (no '/', no NUL, no surrogates)
name_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00")
file_names = st.text(name_chars, min_size=1, max_size=40).filter(lambda n: n not in (".", "..")
                                                                   and len(n.encode()) < 200)


def _ingest_bytes(doc_id: str, data: bytes) -> list[dict] | str:
    """parse + chunk one document: its chunks, or the DocumentError message. Anything else propagates (a bug)."""
    try:  # the pipeline's order: read_document validates, then the parser worker parses
        validate_content(doc_id, suffix_of(doc_id), data)
        records = parse_records(doc_id, suffix_of(doc_id), data)
    except DocumentError as exc:
        return exc.description
    return chunk_elements(doc_id, "0" * 64, records, ChunkingConfig())


@FAST
@given(data=st.one_of(st.binary(max_size=4096),
                      st.text(max_size=2000).map(lambda t: t.encode("utf-8", "surrogatepass"))),
       suffix=st.sampled_from(SUFFIXES))
def test_random_bytes_parse_to_chunks_or_a_clear_document_error(data, suffix):
    doc_id = f"fuzz{suffix}"
    outcome = _ingest_bytes(doc_id, data)
    if isinstance(outcome, str):
        assert outcome.startswith(f"document {doc_id!r}: ")
    else:
        assert all(row["doc_id"] == doc_id and row["text"].strip() for row in outcome)
        assert len({row["chunk_id"] for row in outcome}) == len(outcome)


@FAST
@given(name=file_names, text=st.text(min_size=1, max_size=300), suffix=st.sampled_from([".md", ".txt", ".html"]))
def test_random_unicode_file_names_scan_read_and_chunk(tmp_path_factory, name, text, suffix):
    root = tmp_path_factory.mktemp("docs")
    folder = root / "sub dir"
    folder.mkdir()
    try:
        (folder / (name + suffix)).write_bytes(("# Title\n\n" + text).encode("utf-8", "surrogatepass"))
    except OSError as exc:  # a name the file system itself refuses is not the platform's problem
        pytest.skip(f"file system refused the name: {exc}")
    source = DocumentSource(root=str(root))
    found = source.scan()
    if not found:  # hidden names and characters Dagster forbids in partition keys are skipped by the scan
        assert name.startswith((".", "~$")) or set(name) & set(",[]*\n\r\t")
        return
    (key,) = found
    assert source.path_for(key) == folder / (name + suffix)
    try:
        document = read_document(source, key)
    except DocumentError as exc:
        assert exc.description.startswith(f"document {key!r}: ")
        return
    outcome = _ingest_bytes(key, document["content"])
    assert isinstance(outcome, str) or all(row["doc_id"] == key for row in outcome)


@pytest.fixture(scope="module")
def filter_collection(tmp_path_factory):
    store = MilvusStore(uri=str(tmp_path_factory.mktemp("milvus") / "fuzz.db"), collection="fuzz")
    with store.client() as client:
        store.ensure_collection(client, 4)
        yield store, client


def _row(chunk_id: str, doc_id: str, doc_type: str = ".md") -> dict:
    return {"chunk_id": chunk_id, "doc_id": doc_id, "doc_sha256": "0" * 64, "doc_type": doc_type, "seq": 0,
            "text": "text", "text_sha": "0", "vector": [0.5, 0.5, 0.5, 0.5]}


# values as users type them, hostile ones included: quotes, backslashes, operators, wildcards, Korean
filter_values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1,
                        max_size=30) | st.sampled_from(['" or doc_id != "', '\\" || 1 == 1 || \\"', 'a\\', "%", "_",
                                                       '") or ("', "x' or '1'='1", "보안 정책.md", "\\\\\"", "a\\%b"])


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=filter_values)
def test_filter_values_never_break_out_of_quoting(filter_collection, value):
    store, client = filter_collection
    client.delete(store.collection, filter='chunk_id != ""')
    # the value itself, a decoy every injection would also match, and a document whose key starts with the value
    store.upsert(client, [_row("target", value), _row("decoy", "decoy.md"), _row("prefixed", value + "/tail.md", ".pdf")])
    by_doc = {r["chunk_id"] for r in client.query(store.collection, filter=filter_expression({"doc": value}),
                                                  output_fields=["chunk_id"])}
    assert by_doc == {"target"}
    by_path = {r["chunk_id"] for r in client.query(store.collection, filter=filter_expression({"path": value}),
                                                   output_fields=["chunk_id"])}
    assert by_path == {"target", "prefixed"}
    combined = filter_expression({"path": value, "type": ".pdf"})
    assert {r["chunk_id"] for r in client.query(store.collection, filter=combined, output_fields=["chunk_id"])} == {"prefixed"}
    # the literal round-trips: what Milvus compares against is exactly the value
    assert store.count(client, value) == 1 and _quote(value).startswith('"') and _quote(value).endswith('"')
