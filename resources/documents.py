"""Where the company's documents live, and how a file maps to a partition key."""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath

from dagster import ConfigurableResource
from pydantic import Field

SUPPORTED_SUFFIXES = {".md", ".markdown", ".txt", ".text", ".html", ".htm", ".docx", ".pdf"}
# office formats, OpenDocument, e-mail, e-books and images (OCR): parsers in assets/formats.py
SUPPORTED_SUFFIXES |= {".pptx", ".xlsx", ".xls", ".csv", ".tsv", ".eml", ".msg", ".odt", ".ods", ".odp", ".rtf",
                       ".epub", ".png", ".jpg", ".jpeg", ".tif", ".tiff"}
MAIL_SUFFIXES = {".eml", ".msg"}
# a mail attachment's key: "<mail key>#<attachment name>" ('inbox/outage.eml#report.pdf'). Not "/": the per-partition
# IO manager stores each key as a file path, and the mail's own file cannot also be a folder.
ATTACHMENT_SEPARATOR = "#"
_ATTACHMENT_KEY = re.compile(r"^(.+?\.(?:eml|msg))#([^/]+)$", re.IGNORECASE)
# never documents: editor lock files, hidden files, temp/backup files, OS folder metadata
IGNORED_NAME_PATTERNS = ["~$*", ".*", "*~", "*.tmp", "*.temp", "*.swp", "*.bak", "Thumbs.db", "desktop.ini"]

# The bundled sample corpus: the embedded default when no folder is configured.
SAMPLE_CORPUS = Path(__file__).resolve().parent.parent / "sample_corpus"
# Characters Dagster does not accept in a partition key.
_FORBIDDEN_KEY_CHARS = set(",[]*\n\r\t")


@lru_cache(maxsize=64)
def _glob_regexes(patterns: tuple[str, ...], case_sensitive: bool = False):
    """(regex over the file name, regex over the relative path) for glob patterns: one match per file, not one per
    pattern (a sensor tick tests every file of the folder)."""
    def joined(selected):
        selected = [p if case_sensitive else p.lower() for p in selected]
        return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in selected)) if selected else None
    return joined([p for p in patterns if "/" not in p]), joined([p for p in patterns if "/" in p])


def _glob_match(patterns: tuple[str, ...], name: str, path: str, case_sensitive: bool = False) -> bool:
    by_name, by_path = _glob_regexes(patterns, case_sensitive)
    return bool((by_name and by_name.match(name)) or (by_path and by_path.match(path)))


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
    attached_to: str = ""  # a mail attachment: the mail's key (the attachment's key is "<mail key>#<name>")


@dataclass
class ScanReport:
    """Files of the folder that are not documents: counted by reason, with a sample (sensor and run metadata)."""
    skipped: dict[str, int] = field(default_factory=dict)
    sample: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def skip(self, key: str, reason: str, warn: bool = False) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.sample) < 20:
            self.sample.append(f"{key} ({reason})")
        if warn:
            self.warnings.append(f"{key}: {reason}")
            logging.getLogger(__name__).warning("skipped %s: %s", key, reason)

    @property
    def count(self) -> int:
        return sum(self.skipped.values())

    def as_metadata(self) -> dict:
        return {"count": self.count, "by_reason": dict(self.skipped), "sample": self.sample[:20],
                "warnings": self.warnings[:20]}


def _safe_attachment_name(name: str, number: int) -> str:
    name = re.sub(r"[\\/,\[\]*\n\r\t\x00]", "_", (name or "").strip()).strip(". ") or f"attachment-{number}"
    return name[:200]


def mail_attachments(data: bytes, suffix: str) -> list[tuple[str, bytes]]:
    """(name, bytes) of each attachment of an .eml or .msg mail; names made unique and safe as key parts."""
    found: list[tuple[str, bytes]] = []
    if suffix == ".eml":
        import email
        from email import policy

        message = email.message_from_bytes(data, policy=policy.default)
        for part in message.iter_attachments():
            payload = part.get_payload(decode=True)
            if payload:
                found.append((part.get_filename() or "", payload))
    elif suffix == ".msg":
        import extract_msg

        with extract_msg.openMsg(data) as message:
            for attachment in message.attachments:
                payload = attachment.data
                if isinstance(payload, bytes) and payload:
                    found.append((attachment.longFilename or attachment.shortFilename or "", payload))
    out, seen = [], set()
    for number, (name, payload) in enumerate(found, 1):
        name = _safe_attachment_name(name, number)
        stem, dot, ext = name.rpartition(".")
        unique, n = name, 1
        while unique.lower() in seen:
            n += 1
            unique = f"{stem} ({n}).{ext}" if dot else f"{name} ({n})"
        seen.add(unique.lower())
        out.append((unique, payload))
    return out


class DocumentSource(ConfigurableResource):
    """A folder of documents; each file (recursively) is one partition keyed by its relative path."""

    root: str = Field(default_factory=default_documents_dir, description="Folder holding the documents.")
    max_bytes: int = Field(default=100 * 1024 * 1024, description="Larger files are reported and skipped.")
    parse_timeout_s: float = Field(default=120.0, description="Per-document parsing time limit.")
    parse_workers: int = Field(default=0, description="Parser processes; 0 = every available core.")
    scan_cache: str = Field(default="", description="SQLite file remembering (size, mtime) -> sha256 between scans; "
                                                    "empty = $DOCPLATFORM_DATA_DIR/scan-cache-<folder hash>.sqlite")
    include: list[str] = Field(default_factory=lambda: sorted(f"*{s}" for s in SUPPORTED_SUFFIXES),
                               description="Glob patterns (file name, or relative path when it has a '/'; case-"
                                           "insensitive) of the files that are documents; default: the supported types.")
    exclude: list[str] = Field(default_factory=list, description="Glob patterns of files that are never documents, "
                                                                 "e.g. 'archive/*', '*.draft.docx'.")

    def is_document_name(self, key: str) -> str | None:
        """None when the key passes the include/exclude globs, else why not."""
        name = key.rsplit("/", 1)[-1].lower()
        lowered = key.lower()
        if _glob_match(tuple(self.exclude), name, lowered):
            return "excluded"
        if not _glob_match(tuple(self.include), name, lowered):
            return f"not included ({PurePosixPath(key).suffix.lower() or 'no extension'})"
        return None

    @property
    def root_path(self) -> Path:
        return Path(self.root).expanduser().resolve()

    def path_for(self, key: str) -> Path:
        path = (self.root_path / key).resolve()
        if self.root_path not in path.parents:
            raise ValueError(f"partition key {key!r} points outside the documents folder {self.root_path}")
        return path

    def mail_for(self, key: str) -> tuple[Path, str] | None:
        """(mail file, attachment name) when key names an attachment of a mail ('box/mail.eml#report.pdf')."""
        match = _ATTACHMENT_KEY.match(key)
        if not match:
            return None
        path = self.path_for(match.group(1))
        return (path, match.group(2)) if path.is_file() else None

    def attachment_bytes(self, key: str) -> bytes | None:
        """The bytes of a mail attachment document, or None when key is no attachment (or it is gone)."""
        found = self.mail_for(key)
        if not found:
            return None
        path, name = found
        return dict(mail_attachments(path.read_bytes(), path.suffix.lower())).get(name)

    def cache_path(self) -> Path:
        if self.scan_cache:
            return Path(self.scan_cache)
        data = Path(os.environ.get("DOCPLATFORM_DATA_DIR", Path.cwd() / ".data"))
        return data / f"scan-cache-{hashlib.sha256(str(self.root_path).encode()).hexdigest()[:12]}.sqlite"

    def scan_cached(self, report: ScanReport | None = None) -> dict[str, DocumentFile]:
        """scan() with its (size, mtime) -> sha256 memory in a local SQLite file: only new or touched files are read."""
        import sqlite3

        path = self.cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE IF NOT EXISTS files (key TEXT PRIMARY KEY, sha256 TEXT, size INTEGER, mtime_ns INTEGER)")
            known = {k: {"sha256": sha, "size": size, "mtime_ns": mtime}
                     for k, sha, size, mtime in db.execute("SELECT key, sha256, size, mtime_ns FROM files")}
            found = self.scan(known=known, report=report)
            changed = [(d.key, d.sha256, d.size, d.mtime_ns) for d in found.values()
                       if (known.get(d.key) or {}).get("mtime_ns") != d.mtime_ns or known[d.key]["size"] != d.size]
            if changed:
                db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", changed)
            gone = [(k,) for k in known if k not in found]
            if gone:
                db.executemany("DELETE FROM files WHERE key = ?", gone)
        return found

    def scan(self, known: dict[str, dict] | None = None, report: ScanReport | None = None) -> dict[str, DocumentFile]:
        """Every document below the root, keyed by partition key; mail attachments as '<mail key>#<name>'.

        known: {key: {"sha256", "size", "mtime_ns"}} from an earlier scan; a file whose size and
        modification time are unchanged keeps its hash instead of being read again. report (optional)
        collects the files that are not documents: lock/hidden/temp files (ignored), files outside the
        include/exclude globs, symlinks that lead outside the folder (with a warning), unusable names.
        """
        known = known or {}
        report = report if report is not None else ScanReport()
        root = self.root_path
        if not root.is_dir():
            raise FileNotFoundError(f"documents folder {root} does not exist")
        found: dict[str, DocumentFile] = {}
        ignored = tuple(IGNORED_NAME_PATTERNS)
        root_text = str(root)
        # os.scandir: the file type comes with the directory entry and stat() is cached on it, and keys are built as
        # strings, so a warm scan costs about one stat per file (100k files: see bench/ingest.py)
        pending = [("", root_text)]
        while pending:
            rel_dir, dir_path = pending.pop()
            try:
                entries = sorted(os.scandir(dir_path), key=lambda e: e.name)
            except OSError as exc:
                report.skip(rel_dir or ".", f"folder cannot be read: {exc.strerror or exc}", warn=True)
                continue
            subfolders = []
            for entry in entries:
                key = rel_dir + entry.name
                if entry.is_dir(follow_symlinks=False):
                    if not entry.name.startswith("."):
                        subfolders.append((key + "/", entry.path))
                    continue
                if entry.is_symlink() and entry.is_dir():  # not followed; say so when it leads out
                    target = Path(entry.path).resolve()
                    if root != target and root not in target.parents:
                        report.skip(key + "/", "symlink pointing outside the documents folder", warn=True)
                    continue
                if _glob_match(ignored, entry.name, key, case_sensitive=True):
                    report.skip(key, "ignored (lock, hidden or temp file)")
                    continue
                if entry.is_symlink() and root not in Path(entry.path).resolve().parents:
                    report.skip(key, "symlink pointing outside the documents folder", warn=True)
                    continue
                if not entry.is_file():
                    report.skip(key, "not a regular file")
                    continue
                if _FORBIDDEN_KEY_CHARS & set(key):
                    report.skip(key, "name has characters a partition key cannot hold (, [ ] * tab newline)")
                    continue
                why = self.is_document_name(key)
                if why:
                    report.skip(key, why)
                    continue
                stat = entry.stat()
                seen = known.get(key) or {}
                unchanged = seen.get("size") == stat.st_size and seen.get("mtime_ns") == stat.st_mtime_ns
                path = Path(entry.path)
                if unchanged and seen.get("sha256"):
                    sha256 = seen["sha256"]
                elif stat.st_size > self.max_bytes:  # never read: its run refuses it by size ("too large")
                    sha256 = hashlib.sha256(f"oversize\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()
                else:
                    sha256 = file_sha256(path)
                found[key] = DocumentFile(key=key, path=path, sha256=sha256, size=stat.st_size, mtime_ns=stat.st_mtime_ns)
                if entry.name.lower().endswith(tuple(MAIL_SUFFIXES)):
                    found |= self._scan_attachments(found[key], known if unchanged else {}, report)
            pending.extend(reversed(subfolders))  # depth first, in name order, as os.walk did
        return found

    def _scan_attachments(self, mail: DocumentFile, known: dict[str, dict], report: ScanReport) -> dict[str, DocumentFile]:
        """A mail's attachments as documents of their own; an unchanged mail reuses what the last scan found."""
        prefix = mail.key + ATTACHMENT_SEPARATOR
        remembered = {k: v for k, v in known.items() if k.startswith(prefix) and "/" not in k[len(prefix):]}
        if remembered and all(v.get("mtime_ns") == mail.mtime_ns for v in remembered.values()):
            return {k: DocumentFile(key=k, path=mail.path, sha256=v["sha256"], size=v["size"], mtime_ns=mail.mtime_ns,
                                    attached_to=mail.key) for k, v in remembered.items()}
        try:
            attachments = mail_attachments(mail.path.read_bytes(), mail.path.suffix.lower())
        except Exception as exc:  # noqa: BLE001  (a broken mail fails in its own run, with the parser's message)
            logging.getLogger(__name__).warning("could not list the attachments of %s: %s", mail.key, exc)
            return {}
        out = {}
        for name, payload in attachments:
            key = prefix + name
            why = self.is_document_name(key)
            if why:
                report.skip(key, f"attachment {why}")
                continue
            out[key] = DocumentFile(key=key, path=mail.path, sha256=hashlib.sha256(payload).hexdigest(), size=len(payload),
                                    mtime_ns=mail.mtime_ns, attached_to=mail.key)
        return out
