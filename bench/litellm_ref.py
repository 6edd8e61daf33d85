"""LiteLLM's proxy as the comparison point, in a virtual environment of its own.

``litellm[proxy]`` pins versions of its own (pydantic, httpx, ...), so it is
installed into ``bench/.litellm-venv`` rather than into the project's
environment. If it cannot be installed or started, the run records it as
unavailable with the reason and goes on without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LiteLLM", "config_text", "ensure_litellm"]

_INSTALL_TIMEOUT_S = 1200
_PROBE = "import importlib.metadata as m, litellm.proxy.proxy_server; print(m.version('litellm'))"


@dataclass(frozen=True)
class LiteLLM:
    executable: Path  # the `litellm` console script
    version: str


def _probe(venv: Path) -> str | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    done = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True,
                          env=_env(), timeout=300, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_litellm(venv: Path, log_path: Path) -> LiteLLM | str:
    """The installed LiteLLM, installing it first if needed; else why it is unavailable."""
    version = _probe(venv)
    if version is None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            try:
                if not (venv / "bin" / "python").exists():
                    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True,
                                   stdout=log, stderr=subprocess.STDOUT, timeout=300)
                subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"],
                               check=True, stdout=log, stderr=subprocess.STDOUT,
                               timeout=_INSTALL_TIMEOUT_S)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
                return f"install failed ({type(exc).__name__}); see {log_path}"
        version = _probe(venv)
        if version is None:
            return f"installed but `import litellm.proxy.proxy_server` fails; see {log_path}"
    return LiteLLM(venv / "bin" / "litellm", version)


def config_text(model_name: str, base_url: str, weights: tuple[int, int]) -> str:
    """Two weighted deployments of ``model_name`` on the same upstream (JSON is YAML)."""
    deployments = [
        {"model_name": model_name,
         "litellm_params": {"model": f"openai/partner-ckpt-{label}", "api_base": base_url,
                            "api_key": "sk-bench-not-a-secret", "weight": weight}}
        for label, weight in zip(("a", "b"), weights, strict=True)
    ]
    config = {
        "model_list": deployments,
        "router_settings": {"routing_strategy": "simple-shuffle", "num_retries": 0},
        "litellm_settings": {"drop_params": True, "telemetry": False,
                             "request_timeout": 600},
        # No auth: a loopback-only benchmark, and the cheapest LiteLLM configuration
        # (a master key would add a key check per request to LiteLLM's cost).
        "general_settings": {"dangerously_permit_weak_or_unset_master_key": True},
    }
    return json.dumps(config, indent=2)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ABGATE_", "DATABASE_URL", "REDIS_", "VIRTUAL_ENV"))}
    # Offline: use the bundled model price map instead of fetching it at import time.
    env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                "LITELLM_TELEMETRY": "False", "DISABLE_SCHEMA_UPDATE": "True"})
    return env


def server_argv(litellm: LiteLLM, config_path: Path, port: int) -> list[str]:
    return [str(litellm.executable), "--config", str(config_path), "--host", "127.0.0.1",
            "--port", str(port), "--num_workers", "1"]


def server_env() -> dict[str, str]:
    return _env()
