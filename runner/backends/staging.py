"""The per-cell staging directory a backend gives a cell to write its result into, and the careful
read-back of that result: the directory is writable by the cell, so whatever is in it is untrusted.

Shared by the backends; the neutral run stage only ever sees the bytes."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Optional

from runner.render import CONTAINER_UID
from runner.results import MAX_RESULT_BYTES



def prepare_staging(staging: Path, for_container_uid: bool) -> None:
    staging.mkdir(parents=True, exist_ok=True)
    if not for_container_uid:
        return
    # The container runs as uid 1000: only its own output directory is made writable for it.
    if os.geteuid() == 0:
        os.chown(staging, CONTAINER_UID, CONTAINER_UID)
        os.chmod(staging, 0o755)
    elif os.geteuid() != CONTAINER_UID:
        os.chmod(staging, 0o777)


def read_staged_result(path: Path, limit: int = MAX_RESULT_BYTES) -> tuple[Optional[bytes], Optional[str]]:
    """(bytes, None) for a regular file of at most `limit` bytes; (None, None) when there is none;
    (None, why) when something else is there. Never follows a symbolic link (O_NOFOLLOW) and never
    blocks on a FIFO or device (O_NONBLOCK, then a regular-file check on the open descriptor)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, "the result path is a symbolic link (not followed)"
        return None, f"the result file cannot be opened: {exc.strerror}"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, "the result path is not a regular file"
        if info.st_size > limit:
            return None, f"the result file is {info.st_size} bytes, over the {limit}-byte limit"
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:  # grew while being read
                return None, f"the result file is over the {limit}-byte limit"
            chunks.append(chunk)
        return b"".join(chunks), None
    finally:
        os.close(fd)
