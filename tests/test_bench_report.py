"""bench.report: a bench's block in a docs page is replaced in place, never duplicated, and says where it came from."""

from bench.report import markdown_table, write_block


def test_block_is_replaced_in_place_and_names_its_command(tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nIntro.\n\n## Ingest\n\n<!-- bench:ingest -->\nold\n<!-- /bench:ingest -->\n\nTail.\n")
    write_block(page, "ingest", markdown_table(["figure", "value"], [["ratio", 1.234567], ["a|b", "x"]]),
                command="python -m bench.ingest --real DIR")
    text = page.read_text()
    assert "old" not in text and text.count("<!-- bench:ingest -->") == 1
    assert text.startswith("# Benchmarks") and text.rstrip().endswith("Tail.")
    assert "`python -m bench.ingest --real DIR`" in text and "cores)" in text
    assert "| ratio | 1.235 |" in text and "a\\|b" in text
    write_block(page, "kg", "| a |\n| --- |")
    assert page.read_text().index("<!-- bench:kg -->") > page.read_text().index("Tail.")


def test_bad_block_name_is_refused(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="block name"):
        write_block(tmp_path / "x.md", "Bad Name", "body")
