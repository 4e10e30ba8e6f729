"""Writing files so that nothing half-written is ever left behind: interrupts, SIGTERM, a full disk.

Everything is written under a temporary name beside its final place and renamed when complete. A
temporary name carries the writer's host and process id, so a later writer removes the leftovers of
a process that was killed outright (SIGKILL, power loss) on this host and leaves those of a live or
foreign writer alone. A full disk (or quota, or file-size limit) is a one-line error naming the path.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vitdeploy.errors import VitdeployError

NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host() -> str:
    return socket.gethostname().replace(".", "-") or "host"


def temporary_path(final: Path, suffix: str) -> Path:
    """`.NAME.HOST.PID.TOKEN<suffix>` beside `final`: hidden, unique, and traceable to its writer."""
    return final.parent / f".{final.name}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}{suffix}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale(final: Path, suffix: str) -> list[Path]:
    """Remove temporaries of `final` left by dead processes of this host; returns what was removed."""
    removed = []
    prefix = f".{final.name}.{_host()}."
    for entry in final.parent.glob(f".{final.name}.*{suffix}") if final.parent.is_dir() else ():
        pid = entry.name[len(prefix):].split(".")[0] if entry.name.startswith(prefix) else ""
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


@contextmanager
def no_space_is_an_error(path: Path) -> Iterator[None]:
    """A full disk while writing `path` becomes one line naming it (the caller cleans up)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        raise VitdeployError(f"cannot write {path}: {os.strerror(exc.errno).lower()}: expected free space "
                             "there (nothing was left behind)") from None


def write_bytes_atomic(path: Path, data: bytes | memoryview) -> None:
    """Write beside the final name, then rename: readers never see a partial file."""
    remove_stale(path, ".tmp")
    tmp = temporary_path(path, ".tmp")
    try:
        with no_space_is_an_error(path):
            with open(tmp, "xb") as handle:
                handle.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # a private temporary would hide artifacts from other users
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode())


def _make_staging(final: Path) -> Path:
    remove_stale(final, ".partial")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_path(final, ".partial")
    staging.mkdir()
    return staging


@contextmanager
def staged_directory(final: Path, force: bool) -> Iterator[Path]:
    """A temporary directory beside `final` that replaces it only if the block completes."""
    if final.exists() and not force:
        raise VitdeployError(f"output directory {final} already exists: pass --force to replace it")
    staging = _make_staging(final)
    try:
        with no_space_is_an_error(final):
            yield staging
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def staged_files(directory: Path, name: str) -> Iterator[Path]:
    """A temporary directory inside `directory` for the files of one result (an engine and its
    description); when the block completes they move into `directory`, `.json` files last, so a
    reader never finds a description whose files are missing or stale."""
    staging = _make_staging(directory / name)
    try:
        with no_space_is_an_error(directory / name):
            yield staging
        entries = sorted(staging.iterdir(), key=lambda p: (p.suffix == ".json", p.name))
        for entry in entries:  # old descriptions go first: none may describe files being replaced
            if entry.suffix == ".json":
                (directory / entry.name).unlink(missing_ok=True)
        for entry in entries:
            os.replace(entry, directory / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
