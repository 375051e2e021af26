"""Writing files so that a reader, another process or a crash never sees half of one.

- :func:`atomic_write`: replace a file's content through a temporary file and a rename; a reader
  sees the old file or the new one, never a mix. ``sync=True`` also forces the data and the
  rename to disk (the file and its folder are fsynced).
- :func:`write_new`: create a file that must not exist yet, race-free: the data goes to a
  temporary file that is hard-linked to its name, and a link never replaces anything, so of two
  processes writing the same name exactly one succeeds and the other gets ``FileExistsError``
  (a reader still sees no file or the whole file). On a file system without hard links the name
  is checked, then renamed to (no longer race-free between processes).
- :func:`append`: append bytes to a file with one ``write`` in append mode and fsync it before
  returning (a short write is an ``OSError``, not a silent loss).
- :func:`atomic_copy` and :func:`atomic_symlink`: a copied file or a symbolic link put in place
  by a rename (the old one stays until the new one is whole).
- :func:`fsync_dir`: force a folder's entries (a new name, a rename) to disk.
- :func:`open_new_append`, :func:`write_all`, :func:`truncate_to`: a file that must not exist yet,
  kept open to append lines to (the evidence's ``records.jsonl``), and cut back after a short write.

Temporary files live beside their target (a rename never crosses file systems), are named
``.NAME.RANDOM.tmp``, and are removed when the write fails. Modes are given as to ``open(2)``:
the process's umask applies.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from pathlib import Path

__all__ = ["append", "atomic_copy", "atomic_symlink", "atomic_write", "fsync_dir", "open_new_append", "temp_path",
           "truncate_to", "write_all", "write_new"]


def temp_path(path: Path) -> Path:
    """A fresh name for a temporary file beside ``path``: ``.NAME.RANDOM.tmp``."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def write_all(fd: int, data: bytes) -> None:
    """Write ``data`` whole to ``fd`` (one ``write`` for data of any usual size)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_temp(path: Path, data: bytes, mode: int, sync: bool) -> Path:
    """``data`` in a new temporary file beside ``path`` (created exclusively); its name."""
    while True:
        temp = temp_path(path)
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:  # a name another writer drew too: draw again
            continue
        break
    try:
        try:
            write_all(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def fsync_dir(directory: Path) -> None:
    """Force ``directory``'s entries to disk (where the system lets a folder be opened and synced)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, sync: bool = False, mode: int = 0o644) -> None:
    """Give ``path`` the content ``data`` through a temporary file and a rename (its folder is
    made if need be): a reader sees the old content or the new, whole. ``sync`` also forces the
    file and the rename to disk before returning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _write_temp(path, data, mode, sync)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if sync:
        fsync_dir(path.parent)


def write_new(path: Path, data: bytes, *, mode: int = 0o644, sync: bool = False) -> None:
    """Create ``path`` with ``data``; ``FileExistsError`` when it exists (then nothing changes).

    The data goes to a temporary file that is then hard-linked to ``path``: the link fails when
    the name exists, so an existing file is never replaced, of concurrent writers exactly one
    wins, and a reader sees no file or the whole file. ``sync`` forces the file and its name to
    disk before returning.
    """
    temp = _write_temp(path, data, mode, sync)
    try:
        try:
            os.link(temp, path)
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links (or a link refused): check, then rename
            if path.exists() or path.is_symlink():
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
            os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    if sync:
        fsync_dir(path.parent)


def append(path: Path, data: bytes, *, sync: bool = True, mode: int = 0o644) -> None:
    """Append ``data`` to ``path`` (made, with its folder, if need be) in one write in append
    mode, so concurrent appenders never interleave inside it; ``sync`` forces it to disk before
    returning. A short write (a full disk) raises ``OSError`` (ENOSPC)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, mode)
    try:
        if os.write(fd, data) != len(data):
            raise OSError(errno.ENOSPC, "No space left on device (short write)", str(path))
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_copy(source: Path, target: Path, *, metadata: bool = True) -> None:
    """Copy ``source`` to ``target`` through a temporary file and a rename: ``target`` is the old
    file or the whole copy, never a part. ``metadata`` also copies mode and times (``copy2``)."""
    temp = temp_path(target)
    try:
        if metadata:
            shutil.copy2(source, temp)
        else:
            shutil.copyfile(source, temp)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def atomic_symlink(link: Path, points_to: str | os.PathLike[str]) -> None:
    """Make ``link`` a symbolic link to ``points_to`` (written as given), replacing whatever link or
    file was there in one rename: ``link`` always exists, pointing to the old place or the new."""
    while True:
        temp = temp_path(link)
        try:
            os.symlink(points_to, temp)
        except FileExistsError:
            continue
        break
    try:
        os.replace(temp, link)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def open_new_append(path: Path, mode: int = 0o644) -> int:
    """A descriptor to append to ``path``, which must not exist yet (``FileExistsError``)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, mode)


def truncate_to(fd: int, size: int) -> None:
    """Cut a file back to ``size`` bytes (after a line was written in part); best effort."""
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass
