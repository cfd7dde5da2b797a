"""Where the company's documents live, and how a file maps to a partition key."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

SUPPORTED_SUFFIXES = {".md", ".markdown", ".txt", ".text", ".html", ".htm", ".docx", ".pdf"}

# The bundled sample corpus: the embedded default when no folder is configured.
SAMPLE_CORPUS = Path(__file__).resolve().parent.parent / "sample_corpus"
# Characters Dagster does not accept in a partition key.
_FORBIDDEN_KEY_CHARS = set(",[]*\n\r\t")


def default_documents_dir() -> str:
    return os.environ.get("DOCPLATFORM_DOCUMENTS_DIR", str(SAMPLE_CORPUS))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class DocumentFile:
    key: str  # partition key: the POSIX path relative to the documents folder
    path: Path
    sha256: str
    size: int
    mtime_ns: int = 0


class DocumentSource(ConfigurableResource):
    """A folder of documents; each file (recursively) is one partition keyed by its relative path."""

    root: str = Field(default_factory=default_documents_dir, description="Folder holding the documents.")
    max_bytes: int = Field(default=100 * 1024 * 1024, description="Larger files are reported and skipped.")
    parse_timeout_s: float = Field(default=120.0, description="Per-document parsing time limit.")
    parse_workers: int = Field(default=0, description="Parser processes; 0 = every available core.")
    scan_cache: str = Field(default="", description="SQLite file remembering (size, mtime) -> sha256 between scans; "
                                                    "empty = $DOCPLATFORM_DATA_DIR/scan-cache-<folder hash>.sqlite")

    @property
    def root_path(self) -> Path:
        return Path(self.root).expanduser().resolve()

    def path_for(self, key: str) -> Path:
        path = (self.root_path / key).resolve()
        if self.root_path not in path.parents:
            raise ValueError(f"partition key {key!r} points outside the documents folder {self.root_path}")
        return path

    def cache_path(self) -> Path:
        if self.scan_cache:
            return Path(self.scan_cache)
        data = Path(os.environ.get("DOCPLATFORM_DATA_DIR", Path.cwd() / ".data"))
        return data / f"scan-cache-{hashlib.sha256(str(self.root_path).encode()).hexdigest()[:12]}.sqlite"

    def scan_cached(self) -> dict[str, DocumentFile]:
        """scan() with its (size, mtime) -> sha256 memory in a local SQLite file: only new or touched files are read."""
        import sqlite3

        path = self.cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE IF NOT EXISTS files (key TEXT PRIMARY KEY, sha256 TEXT, size INTEGER, mtime_ns INTEGER)")
            known = {k: {"sha256": sha, "size": size, "mtime_ns": mtime}
                     for k, sha, size, mtime in db.execute("SELECT key, sha256, size, mtime_ns FROM files")}
            found = self.scan(known=known)
            changed = [(d.key, d.sha256, d.size, d.mtime_ns) for d in found.values()
                       if (known.get(d.key) or {}).get("mtime_ns") != d.mtime_ns or known[d.key]["size"] != d.size]
            if changed:
                db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", changed)
            gone = [(k,) for k in known if k not in found]
            if gone:
                db.executemany("DELETE FROM files WHERE key = ?", gone)
        return found

    def scan(self, known: dict[str, dict] | None = None) -> dict[str, DocumentFile]:
        """Every regular, non-hidden file below the root, keyed by partition key.

        known: {key: {"sha256", "size", "mtime_ns"}} from an earlier scan; a file whose size and
        modification time are unchanged keeps its hash instead of being read again.
        """
        known = known or {}
        root = self.root_path
        if not root.is_dir():
            raise FileNotFoundError(f"documents folder {root} does not exist")
        found: dict[str, DocumentFile] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith(".") or name.startswith("~$"):
                    continue
                path = Path(dirpath) / name
                if not path.is_file():
                    continue
                key = path.relative_to(root).as_posix()
                if _FORBIDDEN_KEY_CHARS & set(key):
                    continue
                stat = path.stat()
                seen = known.get(key) or {}
                if seen.get("size") == stat.st_size and seen.get("mtime_ns") == stat.st_mtime_ns and seen.get("sha256"):
                    sha256 = seen["sha256"]
                elif stat.st_size > self.max_bytes:  # never read: its run refuses it by size ("too large")
                    sha256 = hashlib.sha256(f"oversize\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()
                else:
                    sha256 = file_sha256(path)
                found[key] = DocumentFile(key=key, path=path, sha256=sha256, size=stat.st_size, mtime_ns=stat.st_mtime_ns)
        return found
