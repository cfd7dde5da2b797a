"""HTML nested deeper than the tree parser reads (issue 19, point 4): its text is read by the flat tokenizer, or
the error says the document is too deeply nested (not "no text could be extracted")."""

import pytest

from assets.parsing import DocumentError, parse_records


def _nested(depth: int, inner: str) -> bytes:
    return f"<html><body>{'<div>' * depth}{inner}{'</div>' * depth}</body></html>".encode()


def test_text_under_8000_nested_elements_is_extracted():
    inner = "<p>Backups run nightly at two.</p><script>var hidden = 1;</script><p>복구는 분기마다 시험합니다.</p>"
    records = parse_records("deep.html", ".html", _nested(8000, inner))
    texts = [r["text"] for r in records]
    assert texts == ["Backups run nightly at two.", "복구는 분기마다 시험합니다."]
    assert all("nested 8,00" in r["metadata"]["parse_strategy"] for r in records)


def test_deeply_nested_html_without_text_says_it_is_too_deeply_nested():
    with pytest.raises(DocumentError) as caught:
        parse_records("deep-empty.html", ".html", _nested(8000, "<img src='scan.png'>"))
    message = caught.value.description
    assert message.startswith("document 'deep-empty.html'") and "too deeply nested for the parser" in message
    assert "no text could be extracted" not in message


def test_shallow_empty_html_keeps_the_empty_document_message():
    with pytest.raises(DocumentError) as caught:
        parse_records("empty.html", ".html", _nested(3, "<img src='scan.png'>"))
    assert "no text could be extracted" in caught.value.description
