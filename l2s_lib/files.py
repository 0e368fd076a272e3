"""Atomic file writes: the one write-then-rename used by every cache and result writer.

A reader (another process, a resumed run) sees either the old file or the complete new one, never a
half-written one: the content goes to a temporary file in the same folder (so the rename never crosses
a file system), which ``os.replace`` then puts in place. Folders of tensors are made atomic the same way
one level up (``checkpoints.ShardedWriter`` writes a temporary folder and renames it).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Create ``path`` atomically: ``write(tmp)`` fills a temporary file beside it, which is then renamed.

    The parent folder is created. The file gets the permissions of an ordinary new file (``0666`` less the
    umask; ``mkstemp`` would leave ``0600``). On any error the temporary file is removed and ``path`` is
    left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, **dumps_kwargs: Any) -> Path:
    """Write ``obj`` as JSON (``json.dumps(obj, **dumps_kwargs)`` plus a newline) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, **dumps_kwargs) + "\n")


@contextmanager
def file_lock(path: str | os.PathLike, fd: int | None = None) -> Iterator[int]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) or on the open ``fd``; yields the fd.

    The kernel drops the lock when its holder dies, so a killed worker never leaves a cache locked. A
    filesystem without locks (some cluster filesystems refuse ``flock``) gets no lock rather than an error:
    the write-then-rename and whole-line appends keep each entry complete there too, at the cost of work
    done twice."""
    import fcntl

    own = fd is None
    if own:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
        yield fd
    finally:
        if own:
            os.close(fd)  # closing the descriptor releases the lock
