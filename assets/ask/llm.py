"""The answering model behind the ask path: a vLLM (OpenAI-compatible) server, streamed so a stall is noticed.

Model choice: `docplatform` (the stable name adapter_deployment points at the newest adapter) when the server
serves it, else the server's base model. Chat completions first (the server applies the model's chat template,
which is what grounded_prompt.render_prompt produces with the tokenizer, so the adapter sees its training format);
a model without a chat template is asked on /v1/completions with render_prompt's plain-text form.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass

from assets.grounded_prompt import render_prompt

ADAPTER_MODEL = "docplatform"
DEFAULT_PORT = 8000


def start_server_hint(url: str | None = None) -> str:
    """One command that starts a local server the ask path can use."""
    port = DEFAULT_PORT
    if url:
        try:
            port = int(url.rstrip("/").rsplit(":", 1)[1])
        except (IndexError, ValueError):
            port = DEFAULT_PORT
    return (f"python -m resources.llm --port {port} & "
            f"export DOCPLATFORM_VLLM_URL=http://127.0.0.1:{port}")


class ServerUnavailable(RuntimeError):
    """No server answers at the URL (not started, wrong URL)."""


class AnswerTimeout(RuntimeError):
    """The server stopped answering (or took too long) mid-answer; .partial holds what it had said."""

    def __init__(self, message: str, partial: str = ""):
        super().__init__(message)
        self.partial = partial


class AnswerFailed(RuntimeError):
    """The server refused the request (unknown model, prompt too long, ...)."""


@dataclass
class ServedModel:
    id: str
    is_adapter: bool
    max_model_len: int | None


class AnswerClient:
    """Talks to one vLLM server: which model to ask, and a greedy, streamed, deadline-bounded answer."""

    def __init__(self, base_url: str | None = None, model: str | None = None, timeout_s: float = 120.0,
                 connect_timeout_s: float = 3.0, api_key: str = "", on_piece=None):
        """on_piece(text) is called with each piece of the answer as the server streams it (an HTTP stream
        forwards them); an exception it raises ends the answer (the connection closes, the server stops)."""
        self.on_piece = on_piece
        self.base_url = (base_url or os.environ.get("DOCPLATFORM_VLLM_URL") or f"http://127.0.0.1:{DEFAULT_PORT}").rstrip("/")
        self.requested_model = model
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._models: list[dict] | None = None

    def models(self) -> list[dict]:
        import requests

        if self._models is None:
            try:
                response = requests.get(f"{self.base_url}/v1/models", headers=self.headers,
                                        timeout=(self.connect_timeout_s, max(self.connect_timeout_s, 10.0)))
            except requests.RequestException as exc:
                raise ServerUnavailable(f"no vLLM server answers at {self.base_url} ({type(exc).__name__})") from exc
            if response.status_code != 200:
                raise ServerUnavailable(f"{self.base_url}/v1/models answered {response.status_code}: {response.text[:200]}")
            self._models = response.json().get("data", [])
        return self._models

    def choose_model(self) -> ServedModel:
        models = self.models()
        by_id = {m["id"]: m for m in models}
        if self.requested_model:
            if self.requested_model not in by_id:
                raise AnswerFailed(f"model {self.requested_model!r} is not served at {self.base_url} "
                                   f"(served: {', '.join(sorted(by_id)) or 'none'})")
            chosen = by_id[self.requested_model]
        elif ADAPTER_MODEL in by_id:
            chosen = by_id[ADAPTER_MODEL]
        else:
            bases = [m for m in models if not m.get("parent")]
            if not bases:
                raise AnswerFailed(f"the server at {self.base_url} serves no model")
            chosen = bases[0]
        root = by_id.get(chosen.get("parent") or "", chosen)
        return ServedModel(chosen["id"], bool(chosen.get("parent")),
                           chosen.get("max_model_len") or root.get("max_model_len"))

    def answer(self, messages: list[dict], model: str, max_tokens: int = 256) -> tuple[str, str]:
        """(answer text, api used). Chat API first; plain completions when the model has no chat template."""
        payload = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0,
                   "stream": True}
        try:
            return self._stream("/v1/chat/completions", payload, lambda d: (d.get("delta") or {}).get("content")), "chat"
        except AnswerFailed as exc:
            if "chat template" not in str(exc).lower() and "chat_template" not in str(exc).lower():
                raise
        payload = {"model": model, "prompt": render_prompt(messages), "max_tokens": max_tokens, "temperature": 0.0,
                   "stream": True}
        return self._stream("/v1/completions", payload, lambda d: d.get("text")), "completions"

    def _stream(self, path: str, payload: dict, piece_of) -> str:
        import requests

        started = time.monotonic()
        deadline = started + self.timeout_s
        parts: list[str] = []
        try:
            with requests.post(f"{self.base_url}{path}", json=payload, headers=self.headers, stream=True,
                               timeout=(self.connect_timeout_s, self.timeout_s)) as response:
                if response.status_code != 200:
                    raise AnswerFailed(f"{path} answered {response.status_code}: {response.text[:500]}")
                for line in response.iter_lines(decode_unicode=True):
                    if time.monotonic() > deadline:
                        raise AnswerTimeout(f"no complete answer within {self.timeout_s:g} s", "".join(parts))
                    if not line or not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    event = json.loads(data)
                    if "error" in event:
                        raise AnswerFailed(f"{path} failed mid-answer: {event['error']}")
                    for choice in event.get("choices", []):
                        piece = piece_of(choice)
                        if piece:
                            parts.append(piece)
                            if self.on_piece is not None:
                                self.on_piece(piece)
        except requests.exceptions.ChunkedEncodingError as exc:  # the server died while it streamed
            raise AnswerTimeout(f"the connection broke mid-answer ({type(exc).__name__})", "".join(parts)) from exc
        except requests.ConnectionError as exc:
            if parts:
                raise AnswerTimeout(f"the connection broke mid-answer ({type(exc).__name__})", "".join(parts)) from exc
            if isinstance(exc.__context__, requests.ReadTimeout) or "Read timed out" in str(exc):
                raise AnswerTimeout(f"no answer within {self.timeout_s:g} s", "") from exc
            raise ServerUnavailable(f"no vLLM server answers at {self.base_url} ({type(exc).__name__})") from exc
        except requests.Timeout as exc:
            raise AnswerTimeout(f"no answer within {self.timeout_s:g} s", "".join(parts)) from exc
        return "".join(parts)


class InProcessModel:
    """The answering model in this process, for when no model server can start: the same model (base folder plus
    the deployed LoRA adapter, if any) and the same prompt the server would build (the tokenizer's chat template,
    as vLLM's chat endpoint applies it), decoded greedily with transformers. Same interface as AnswerClient."""

    def __init__(self, base_model, adapter=None, name: str | None = None, max_model_len: int | None = None):
        from pathlib import Path

        self.base_model, self.adapter = Path(base_model), Path(adapter) if adapter else None
        self.name = name or (ADAPTER_MODEL if adapter else self.base_model.name)
        self.max_model_len, self.base_url = max_model_len, "in-process (transformers)"
        self._loaded = None

    def choose_model(self) -> ServedModel:
        return ServedModel(self.name, self.adapter is not None, self.max_model_len)

    def _load(self):
        if self._loaded is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.base_model)
            model = AutoModelForCausalLM.from_pretrained(self.base_model, torch_dtype=torch.float32)
            if self.adapter is not None:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, self.adapter)
            self._loaded = tokenizer, model.eval()
        return self._loaded

    def answer(self, messages: list[dict], model: str, max_tokens: int = 256) -> tuple[str, str]:
        import torch

        tokenizer, network = self._load()
        # vLLM tokenizes the rendered chat template without adding special tokens again
        inputs = tokenizer(render_prompt(messages, tokenizer), add_special_tokens=False, return_tensors="pt")
        with torch.inference_mode():
            output = network.generate(**inputs, max_new_tokens=max_tokens, do_sample=False,
                                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True), "in-process"


_SENTENCE_END = re.compile(r"(?<=[.!?。])\s+")
_WORD = re.compile(r"\w[\w-]*")


def attributed_numbers(answer: str, sources: list[dict], min_share: float = 0.6) -> list[int]:
    """Source numbers an answer that cites none repeats: for each sentence, the source holding the largest share
    (at least min_share) of its words of 3+ characters. Why: a small base model answers from the sources but
    seldom writes [n]; the reader still learns which passages the sentence came from."""
    vocab = {s["number"]: {w.lower() for w in _WORD.findall(s.get("text", ""))} for s in sources}
    numbers: list[int] = []
    for sentence in _SENTENCE_END.split(answer or ""):
        words = {w.lower() for w in _WORD.findall(sentence) if len(w) >= 3}
        if len(words) < 3 or not vocab:
            continue
        share, number = max((len(words & vocab[n]) / len(words), -n) for n in vocab)
        if share >= min_share and -number not in numbers:
            numbers.append(-number)
    return numbers
