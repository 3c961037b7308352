# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""One run per ``--output_dir``: a lock held while the run writes, and no silent mixing with another run's files.

* ``.medmae.lock`` (JSON: pid, host, start time) is created exclusively when a run starts and removed when it
  ends; a second run on the same folder is refused, naming the holder. A lock whose process is gone (same host,
  pid not alive) is stale: it is replaced, with a message.
* A folder that already holds files is refused unless the run resumes it (``--resume_from_checkpoint``) or
  ``--overwrite`` is given, as ``medmae export`` does; ``--overwrite`` removes what a previous run wrote
  (checkpoints, best/, final/, figures, logs, records) and leaves other files alone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

LOCK_FILE = ".medmae.lock"
# What a pretrain / finetune run writes into its folder (``--overwrite`` removes exactly these).
RUN_OUTPUTS = ("checkpoints", "best", "final", "figures", "logs", "run_info.json", "metrics.json", "metrics.md",
               "split_manifest.json")

logger = logging.getLogger(__name__)


class OutputFolderError(ValueError):
    """The output folder is in use by another run, or holds files of another run."""


class DiskFullError(OSError):
    """A write failed because the disk is full; the message names the file and the remedy."""


def _is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)  # torch's zip writer and safetensors report ENOSPC in their own words
    return "No space left" in text or "file write failed" in text or "Disk quota exceeded" in text


@contextlib.contextmanager
def disk_full_errors(path, what: str):
    """Turn a write that failed on a full disk into :class:`DiskFullError` naming ``path``, the space left and the
    remedy (other errors pass unchanged)."""
    try:
        yield
    except (OSError, RuntimeError) as error:
        if not _is_disk_full(error):
            raise
        probe = Path(path)
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        raise DiskFullError(errno.ENOSPC, f"writing {what} to {path} failed: the disk is full ({free / 2**20:.0f} MiB "
                                          "free there). Free space, lower --save_total_limit, or use another "
                                          "--output_dir; --resume_from_checkpoint latest then continues from the last "
                                          f"complete checkpoint ({type(error).__name__}: {error})") from error


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_lock(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def acquire_lock(folder: Path) -> Path:
    """Create ``folder/.medmae.lock`` exclusively; refuse when a live run holds it."""
    path = folder / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            same_host = holder.get("host") == me["host"]
            if same_host and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]):
                logger.info(f"{path}: removing the stale lock of process {holder['pid']} (no longer running)")
                path.unlink(missing_ok=True)
                continue
            raise OutputFolderError(
                f"--output_dir {folder} is in use by another run (process {holder.get('pid', '?')} on host "
                f"{holder.get('host', '?')}, started {holder.get('started', '?')}; lock file {path}). Wait for it, "
                "use another --output_dir, or delete the lock file if that run is gone"
                + ("" if same_host else " (it was taken on another host: medmae cannot check that process)"))
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        return path
    raise OutputFolderError(f"{path}: could not take the lock")


def check_contents(folder: Path, resume: bool, overwrite: bool) -> None:
    """A fresh run needs an empty folder (or ``--overwrite``, which clears the previous run's outputs)."""
    present = sorted(p.name for p in folder.iterdir() if p.name != LOCK_FILE) if folder.is_dir() else []
    if not present or resume:
        return
    if not overwrite:
        shown = ", ".join(present[:6]) + (", ..." if len(present) > 6 else "")
        raise OutputFolderError(
            f"--output_dir {folder} is not empty ({shown}): pass --resume_from_checkpoint latest to continue the "
            "run it holds, --overwrite to replace that run's outputs, or another --output_dir")
    for name in RUN_OUTPUTS:
        target = folder / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def launcher_rank() -> int:
    """This process's global rank as the launcher set it (torchrun / accelerate: RANK; mpirun: its own), before any
    process group exists; 0 without a launcher."""
    for name in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


class OutputFolder:
    """``with OutputFolder(path, resume, overwrite, main):`` checks and locks the folder on the main process."""

    def __init__(self, folder, resume: bool, overwrite: bool, main: bool = True):
        self.folder, self.resume, self.overwrite, self.main = Path(folder), resume, overwrite, main
        self.lock = None

    def __enter__(self) -> "OutputFolder":
        if self.main:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.lock = acquire_lock(self.folder)
            try:
                check_contents(self.folder, self.resume, self.overwrite)
            except BaseException:
                self.lock.unlink(missing_ok=True)
                raise
        return self

    def __exit__(self, *exc) -> None:
        if self.lock is not None:
            self.lock.unlink(missing_ok=True)
