"""Atomic writes: an output folder (or file) appears complete or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_file", "atomic_output_dir", "atomic_write_text"]


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a staging folder next to `path`; on success it replaces `path`, on error it is removed.

    The staging folder lives in the same parent folder (same filesystem), so the final step is a rename.
    An existing `path` is only replaced once the new content is complete; with `overwrite=False` an
    existing, non-empty `path` is an error raised before anything is written.

    Args:
        path (`str` or `os.PathLike`): the final output folder.
        overwrite (`bool`, defaults to `True`): replace an existing folder.
    """
    target = Path(path).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a folder")
    if not overwrite and target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} exists and is not empty (pass overwrite to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; the result should look like a mkdir
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rmdir(old)
        os.rename(target, old)
    try:
        os.rename(staging, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path next to `path`; on success it replaces `path` (`os.replace`), on error it is removed."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file through a temporary file and `os.replace`, so readers never see half of it."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
