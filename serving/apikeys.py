"""API keys for the serving endpoints: made, listed and revoked by `python -m pipelines.apikeys`, hashed at rest.

A key reads `dp_<id>_<secret>`: the id (public, what the access log names) finds the record, the secret is checked
against a salted PBKDF2-SHA256 hash, so the file never holds a usable key. Each key carries the document-key
prefixes it may see (empty = every document). The store is a small JSON file under $DOCPLATFORM_DATA_DIR, written
atomically and re-read when it changes, so a revoke applies to a running server at its next request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from resources.milvus import default_data_dir

PBKDF2_ITERATIONS = 50_000  # the secret is 32 random bytes; iterations only slow an offline guess further
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


def default_keys_path() -> Path:
    return Path(os.environ.get("DOCPLATFORM_API_KEYS", default_data_dir() / "api-keys.json"))


class ApiKeyError(ValueError):
    """A name, prefix or key file that cannot be used; the message says which."""


@dataclass
class ApiKey:
    name: str
    key_id: str
    salt: str
    hash: str
    prefixes: list[str] = field(default_factory=list)
    created: float = 0.0
    revoked: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked is None


def _hash(secret: str, salt: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", secret.encode(), bytes.fromhex(salt), PBKDF2_ITERATIONS).hex()


class KeyStore:
    """The JSON key file. Verified keys are remembered (by a sha256 of the key) until the file changes."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path else default_keys_path()
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._keys: dict[str, ApiKey] = {}
        self._verified: dict[str, str] = {}

    def _load(self) -> dict[str, ApiKey]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._keys, self._mtime, self._verified = {}, None, {}
            return self._keys
        if mtime != self._mtime:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                keys = {k["key_id"]: ApiKey(**k) for k in data.get("keys", [])}
            except (ValueError, TypeError, KeyError) as exc:
                raise ApiKeyError(f"API key file {self.path} is unreadable ({type(exc).__name__}: {exc}); "
                                "fix or remove it and create the keys again") from exc
            self._keys, self._mtime, self._verified = keys, mtime, {}
        return self._keys

    def _save(self, keys: dict[str, ApiKey]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"keys": [asdict(k) for k in keys.values()]}, indent=2), encoding="utf-8")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    def keys(self) -> list[ApiKey]:
        with self._lock:
            return sorted(self._load().values(), key=lambda k: k.created)

    def has_active_keys(self) -> bool:
        return any(k.active for k in self.keys())

    def create(self, name: str, prefixes: list[str] | None = None) -> tuple[ApiKey, str]:
        """(record, the key): the key is shown once and never stored."""
        if not _NAME.match(name or ""):
            raise ApiKeyError(f"key name {name!r}: use 1-64 letters, digits, _ . @ - (starting with a letter or digit)")
        prefixes = [p for p in (prefixes or [])]
        for prefix in prefixes:
            if not prefix or prefix.startswith("/") or "\x00" in prefix:
                raise ApiKeyError(f"document prefix {prefix!r}: give a document key prefix such as 'hr/'")
        with self._lock:
            keys = self._load()
            if any(k.name == name and k.active for k in keys.values()):
                raise ApiKeyError(f"an active key named {name!r} exists; revoke it first or pick another name")
            key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
            record = ApiKey(name=name, key_id=key_id, salt=salt, hash=_hash(secret, salt), prefixes=prefixes,
                            created=time.time())
            keys[key_id] = record
            self._save(keys)
            self._mtime = None
        return record, f"dp_{key_id}_{secret}"

    def revoke(self, name: str) -> int:
        """Revoke every active key of that name; the number revoked."""
        with self._lock:
            keys = self._load()
            hit = [k for k in keys.values() if k.name == name and k.active]
            for key in hit:
                key.revoked = time.time()
            if hit:
                self._save(keys)
                self._mtime = None
            return len(hit)

    def verify(self, presented: str) -> ApiKey | None:
        """The active key record for a presented key, else None (malformed, unknown, wrong secret, revoked)."""
        match = re.fullmatch(r"dp_([0-9a-f]{12})_([A-Za-z0-9_-]{20,64})", presented or "")
        if not match:
            return None
        key_id, secret = match.groups()
        digest = hashlib.sha256(presented.encode()).hexdigest()
        with self._lock:
            record = self._load().get(key_id)
            if record is None or not record.active:
                return None
            if self._verified.get(key_id) == digest:
                return record
        if not hmac.compare_digest(_hash(secret, record.salt), record.hash):
            return None
        with self._lock:
            self._verified[key_id] = digest
        return record
