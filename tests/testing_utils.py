"""Shared test helpers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

# Prepended to code run by ``run_without_medmae``: makes ``import medmae`` fail however medmae is installed
# (editable or not), so the code sees exactly what a collaborator without medmae sees.
_HIDE_MEDMAE = '''
import importlib.util, sys
class _HideMedmae:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "medmae" or name.startswith("medmae."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, _HideMedmae)
try:
    import medmae  # noqa: F401
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("medmae is still importable")
'''


def run_without_medmae(code: str, cwd: Path, timeout: int = 300) -> str:
    """Run ``code`` in a fresh Python process where medmae cannot be imported; return its stdout.

    Raises AssertionError with the process's stderr when it fails.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", HF_MODULES_CACHE=str(Path(cwd) / "hf_modules"))
    result = subprocess.run(
        [sys.executable, "-c", _HIDE_MEDMAE + textwrap.dedent(code)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"subprocess failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout


def free_port() -> int:
    """A TCP port nobody listens on now (for torchrun's rendezvous in the 2-process tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
