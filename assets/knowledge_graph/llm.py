"""LLM extraction layer: a served model (vLLM's OpenAI-compatible endpoint) reads one chunk and answers in JSON.

Why each piece exists:
- the prompt and the JSON schema are derived from the ontology, so another ontology needs no code change, and the
  schema (class/relation/attribute ids as enums, bounded lists and strings) lets vLLM constrain decoding so that a
  small model's answer always parses and cannot run forever; on vLLM the schema goes as a whitespace-free grammar
  (schema_grammar) whose names and values are spans of the chunk (candidate_names), so no name can be invented;
- every answer is validated again here (known ids, domain/range with the classes the answer gave, names and values
  that really occur in the chunk), because a constrained answer can still be wrong: invalid items are reported in
  "rejected" with the document and chunk, never raised;
- answers are cached in SQLite per (chunk text hash, ontology fingerprint, served model identity, prompt version,
  examples file), so an unchanged chunk is never sent twice, across runs and processes;
- with an examples.jsonl beside the ontology, the k labeled examples nearest to the chunk (MiniLM cosine) are the
  worked examples, each answered in the very JSON the model must write (few_shot_examples): a user's own sentences
  teach a small model far more than the placeholder example made from the ontology;
- when the fine-tune stage has deployed an extraction adapter (extraction_adapter_deployment), the layer asks it
  by its served alias instead of the base model (deployed_extraction_model).

    from assets.knowledge_graph.llm import extractor_from_env
    facts = extractor_from_env().extract_chunk({"doc_id": "a.md", "chunk_id": "c1", "text": "..."}, ontology)

This module is the client: the served model, the request, the SQLite answer cache. The prompt (llm_prompt), the
schema and grammar (llm_schema) and the answer's validation (llm_validation) are its sibling modules.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

from assets.knowledge_graph.llm_prompt import FEW_SHOT, extraction_messages, extraction_prompt
from assets.knowledge_graph.llm_schema import candidate_names, extraction_schema, schema_grammar
from assets.knowledge_graph.llm_validation import chunk_label, validate_extraction
from resources.llm import AdapterRegistry, default_vllm_url
from resources.milvus import default_data_dir
from resources.ontology import Ontology
from resources.ontology_examples import load_examples


# Bump when the prompt, the schema or the decoding request changes: answers cached for the old prompt are not reused.
PROMPT_VERSION = "kg-llm-3"  # 3: the nearest labeled examples as worked examples
EXTRACTION_ADAPTER_NAME = os.environ.get("DOCPLATFORM_EXTRACTION_ADAPTER", "docplatform-extraction")


class LLMUnavailableError(RuntimeError):
    """The LLM server could not be reached, timed out or refused the request (names the URL and the chunk)."""


def default_llm_model() -> str:
    """Served model name for extraction; empty = the base model the server lists (not a LoRA alias)."""
    return os.environ.get("DOCPLATFORM_KG_LLM_MODEL", "")


def extraction_adapter_registry() -> AdapterRegistry:
    """The registry family of extraction adapters (the fine-tune stage's extraction_adapter publishes there)."""
    return AdapterRegistry(name=EXTRACTION_ADAPTER_NAME)


def deployed_extraction_model() -> str:
    """The extraction adapter's served alias when one is deployed (registry's deployments.json), else ""."""
    try:
        active = extraction_adapter_registry().deployments().get("active")
    except (OSError, ValueError):
        return ""
    return EXTRACTION_ADAPTER_NAME if active else ""


def default_llm_cache_path() -> Path:
    return Path(os.environ.get("DOCPLATFORM_KG_LLM_CACHE", default_data_dir() / "kg_llm_cache.sqlite"))


# ---------------------------------------------------------------------------------------------- cache

class ExtractionCache:
    """Raw model answers in SQLite (WAL), one row per cache key; every call opens its own connection (process-safe)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS llm_answers (key TEXT PRIMARY KEY, chunk_sha256 TEXT NOT NULL, "
                         "ontology_fingerprint TEXT NOT NULL, model_id TEXT NOT NULL, doc_id TEXT, chunk_id TEXT, "
                         "answer TEXT NOT NULL, created_at TEXT NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60.0)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            pass  # a file system without shared memory: the default rollback journal is still safe
        return conn

    def get(self, key: str) -> str | None:
        conn = self._connect()
        try:
            row = conn.execute("SELECT answer FROM llm_answers WHERE key = ?", (key,)).fetchone()
        finally:
            conn.close()
        return row[0] if row else None

    def put(self, key: str, answer: str, *, chunk_sha256: str, ontology_fingerprint: str, model_id: str,
            doc_id: str = "", chunk_id: str = "") -> None:
        conn = self._connect()
        try:
            with conn:
                conn.execute("INSERT OR REPLACE INTO llm_answers VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (key, chunk_sha256, ontology_fingerprint, model_id, doc_id, chunk_id, answer,
                              datetime.now(timezone.utc).isoformat()))
        finally:
            conn.close()

    def __len__(self) -> int:
        conn = self._connect()
        try:
            return conn.execute("SELECT COUNT(*) FROM llm_answers").fetchone()[0]
        finally:
            conn.close()


# ---------------------------------------------------------------------------------------------- extractor

class LLMExtractor:
    """Extracts one chunk's facts through an OpenAI-compatible server (vLLM), constrained, validated and cached."""

    def __init__(self, base_url: str | None = None, model: str | None = None, timeout_s: float = 120.0,
                 max_tokens: int = 384, cache_path: str | os.PathLike | None = None, api: str = "auto",
                 api_key: str = "", vllm_options: bool = True, constrain_names: bool = True,
                 few_shot: int = FEW_SHOT):
        if api not in {"auto", "chat", "completions"}:
            raise ValueError(f"api must be 'auto', 'chat' or 'completions', not {api!r}")
        self.base_url = (base_url or default_vllm_url()).rstrip("/")
        self.model = model if model is not None else default_llm_model()
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self.cache = ExtractionCache(cache_path or default_llm_cache_path())
        self.api = api
        self.api_key = api_key
        self.vllm_options = vllm_options  # vLLM's grammar decoding; False = OpenAI response_format json_schema
        self.constrain_names = constrain_names  # names/values limited to spans of the chunk (candidate_names)
        self.few_shot = few_shot  # nearest labeled examples per prompt (0: the example made from the ontology)
        self.requests_sent = 0  # completion requests actually sent (tests assert the cache saves them)
        self.cache_hits = 0
        self._model_info: tuple[float, str, str] | None = None  # (time, served name, identity)

    # ------------------------------------------------------------------ server
    def _post_or_get(self, method: str, path: str, payload: dict | None, where: str):
        import requests

        url = self.base_url + path
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            return requests.request(method, url, json=payload, headers=headers, timeout=self.timeout_s)
        except requests.Timeout as exc:
            raise LLMUnavailableError(f"LLM server {url} did not answer within {self.timeout_s}s ({where})") from exc
        except requests.RequestException as exc:
            raise LLMUnavailableError(f"LLM server {url} unreachable ({where}): {exc}") from exc

    def served_model(self, where: str = "model lookup") -> tuple[str, str]:
        """(served name, identity): identity = name, root and parent from /v1/models (an adapter's path included)."""
        if self._model_info and time.monotonic() - self._model_info[0] < 30.0:
            return self._model_info[1], self._model_info[2]
        response = self._post_or_get("GET", "/v1/models", None, where)
        if response.status_code != 200:
            raise LLMUnavailableError(f"GET {self.base_url}/v1/models -> {response.status_code} ({where}): "
                                      f"{response.text[:300]}")
        models = response.json().get("data", [])
        adapter = "" if self.model else deployed_extraction_model()
        if adapter and any(m.get("id") == adapter for m in models):
            entry = next(m for m in models if m.get("id") == adapter)  # the fine-tuned extraction adapter
        elif self.model:
            entry = next((m for m in models if m.get("id") == self.model), None)
            if entry is None:
                raise LLMUnavailableError(f"model {self.model!r} is not served at {self.base_url} ({where}); served: "
                                          f"{', '.join(sorted(m.get('id', '?') for m in models)) or 'none'}")
        else:  # the base model: the first entry that is not a LoRA adapter
            entry = next((m for m in models if not m.get("parent")), None)
            if entry is None:
                raise LLMUnavailableError(f"no base model is served at {self.base_url} ({where})")
        identity = f"{entry['id']}|root={entry.get('root') or ''}|parent={entry.get('parent') or ''}"
        self._model_info = (time.monotonic(), entry["id"], identity)
        return entry["id"], identity

    def cache_key(self, chunk: dict, ontology: Ontology, model_identity: str) -> tuple[str, str]:
        """(key, sha256 of the chunk text): the text, the ontology, the served model and the prompt/decoding."""
        text_sha = hashlib.sha256(chunk.get("text", "").encode("utf-8")).hexdigest()
        decoding = f"{PROMPT_VERSION}|max_tokens={self.max_tokens}|grammar={self.vllm_options}|spans={self.constrain_names}"
        examples = load_examples(ontology).fingerprint if self.few_shot > 0 else ""
        parts = [text_sha, ontology.fingerprint, model_identity, decoding, f"few_shot={self.few_shot}|{examples}"]
        return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest(), text_sha

    def _request_body(self, endpoint: str, served: str, ontology: Ontology, text: str) -> dict:
        schema = extraction_schema(ontology, candidate_names(text) if self.constrain_names else None)
        body = {"model": served, "max_tokens": self.max_tokens, "temperature": 0.0, "seed": 0}
        if self.vllm_options:  # vLLM: the schema as a whitespace-free grammar (see schema_grammar)
            body["structured_outputs"] = {"grammar": schema_grammar(schema)}
        else:  # any OpenAI-compatible server
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "extraction", "schema": schema, "strict": True}}
        if endpoint == "chat":
            body["messages"] = extraction_messages(ontology, text, self.few_shot)
        else:
            body["prompt"] = extraction_prompt(ontology, text, self.few_shot) + " "
        return body

    def _ask(self, served: str, ontology: Ontology, chunk: dict, where: str) -> tuple[str | None, str | None]:
        """(answer text, None) or (None, why the server refused this chunk); transport failures raise."""
        endpoints = ["chat", "completions"] if self.api == "auto" else [self.api]
        for endpoint in endpoints:
            path = "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"
            self.requests_sent += 1
            response = self._post_or_get("POST", path, self._request_body(endpoint, served, ontology,
                                                                          chunk.get("text", "")), where)
            if response.status_code == 200:
                choice = response.json()["choices"][0]
                text = (choice.get("message") or {}).get("content") if endpoint == "chat" else choice.get("text")
                if self.api == "auto":
                    self.api = endpoint  # remember what this server supports
                return text or "", None
            body = response.text[:500]
            if response.status_code == 400 and endpoint == "chat" and "template" in body.lower() and len(endpoints) > 1:
                continue  # no chat template on this model: plain completions
            if response.status_code == 400:
                return None, f"{where}: the LLM server refused the chunk (HTTP 400): {body}"
            raise LLMUnavailableError(f"POST {self.base_url}{path} -> HTTP {response.status_code} ({where}): {body}")
        return None, f"{where}: the LLM server accepted no request format"

    def extract_chunk(self, chunk: dict, ontology: Ontology) -> dict:
        """{"entities": [{"name","label"}], "relations": [{"source","type","target"}],
        "attributes": [{"entity","property","value"}], "rejected": [reasons], "cached": bool} for one chunk."""
        where = chunk_label(chunk)
        if not str(chunk.get("text", "")).strip():  # nothing to read: no request, nothing to cache
            return {"entities": [], "relations": [], "attributes": [], "rejected": [], "cached": False}
        served, identity = self.served_model(where)
        key, text_sha = self.cache_key(chunk, ontology, identity)
        answer = self.cache.get(key)
        cached = answer is not None
        if cached:
            self.cache_hits += 1
        else:
            answer, refusal = self._ask(served, ontology, chunk, where)
            if answer is None:  # not cached: a refusal may depend on server settings (context length)
                return {"entities": [], "relations": [], "attributes": [], "rejected": [refusal], "cached": False}
            self.cache.put(key, answer, chunk_sha256=text_sha, ontology_fingerprint=ontology.fingerprint,
                           model_id=identity, doc_id=str(chunk.get("doc_id", "")), chunk_id=str(chunk.get("chunk_id", "")))
        result = validate_extraction(answer, ontology, chunk)
        result["cached"] = cached
        return result


def extractor_from_env(**overrides) -> LLMExtractor:
    """The extractor on the platform's defaults: $DOCPLATFORM_VLLM_URL, $DOCPLATFORM_KG_LLM_MODEL, the data dir cache."""
    settings = {"base_url": default_vllm_url(), "model": default_llm_model(), "cache_path": default_llm_cache_path()}
    timeout = os.environ.get("DOCPLATFORM_KG_LLM_TIMEOUT_S")
    if timeout:
        settings["timeout_s"] = float(timeout)
    settings.update(overrides)
    return LLMExtractor(**settings)
