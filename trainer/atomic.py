"""Atomic writes: a file or folder appears under its name whole, or not at all, and nothing is replaced unasked.

Every write goes first to a hidden partial beside its target (`.<name>.<pid>-<random>.partial`,
runstate.partial_prefix): in the same folder, so the final step (os.replace, os.link or os.rename) stays on
one file system and is a single step; named by the writing process, so the next start removes the leftovers
of a killed process (runstate.clean_partials) and never a running writer's. A failure at any point removes
the partial and keeps whatever was under the final name. The result gets the mode open() would have given
under the umask (mkstemp/mkdtemp make 0600/0700), so another user's web server can read it when the
umask allows. Every caller says whether an existing name may be replaced: there is no default.
"""
from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ExportError
from .runstate import PARTIAL, partial_prefix


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (os.umask sets it: racy in threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | Path, directory: bool = False) -> None:
    """Give `path` the mode open()/mkdir() would have given it under the current umask."""
    try:
        os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())
    except OSError:
        pass


def write_error(path: Path, e: OSError) -> ExportError:
    return ExportError(f"Could not write '{path}': {e.strerror or e}. Nothing was changed under that name. "
                       "Fix: free disk space or check the folder's permissions, then save again.")


def unlink_quietly(p: str | Path) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def fsync_dir(d: str | Path) -> None:
    """Make a rename in `d` durable (where the OS lets a folder be opened and synced)."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def folder_problem(folder: str | Path) -> str | None:
    """Why `folder` cannot hold our files (None if it can): the file system root or a system folder, an
    existing file on the way, or no write access."""
    from .data.safety import system_folder_problem  # here: trainer.data imports this module

    p = Path(folder).expanduser()
    system = system_folder_problem(p)
    if system:
        return system
    probe = p
    while not probe.exists():  # the first part of the path that exists decides
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"'{probe}' is a file, not a folder" if probe == p else f"'{probe}' on the way there is a file"
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        return f"'{probe}' is not writable by this user"
    return None


def ensure_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        why = folder_problem(folder) or (e.strerror or str(e))
        raise ExportError(f"Cannot create the folder '{folder}': {why}. Nothing was written. Fix: choose another "
                          "folder, or remove what is in the way.") from None
    if not folder.is_dir():
        raise ExportError(f"'{folder}' is a file, not a folder. Nothing was written. Fix: choose another folder.")


def prepare(path: Path, write: Callable[[Path], Any], *, fsync: bool = True) -> Path:
    """Write a hidden partial beside `path` via `write(partial)`, flushed to disk, with the umask's mode; return it.
    The caller puts it in place with `commit` and removes it afterwards (after a link it is still there)."""
    path = Path(path)
    ensure_folder(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=partial_prefix(path.name), suffix=PARTIAL, dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    os.close(fd)
    try:
        write(Path(tmp))
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        honour_umask(tmp)
    except OSError as e:
        unlink_quietly(tmp)
        raise write_error(path, e) from None
    except BaseException:
        unlink_quietly(tmp)
        raise
    return Path(tmp)


def commit(tmp: Path, path: Path, overwrite: bool) -> None:
    """Put a prepared file under its name in one step. Without `overwrite` it is linked (FileExistsError if the
    name is taken: no check-then-write race) and `tmp` stays for the caller to remove."""
    try:
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as e:
        raise write_error(path, e) from None


def write_atomic(path: Path, write: Callable[[Path], Any], *, overwrite: bool, fsync: bool = True) -> Path:
    """Write `path` via `write(partial)`, then put it in place. Without `overwrite` an existing file is never
    replaced (FileExistsError). OSErrors come back as an ExportError that names the file and the fix."""
    path = Path(path)
    tmp = prepare(path, write, fsync=fsync)
    try:
        commit(tmp, path, overwrite)
    finally:
        unlink_quietly(tmp)  # after a link (or a failure): the partial name goes
    return path


def write_bytes_atomic(path: Path, data: bytes, *, overwrite: bool) -> Path:
    return write_atomic(path, lambda p: p.write_bytes(data), overwrite=overwrite)


def write_text_atomic(path: Path, text: str, *, overwrite: bool) -> Path:
    return write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"), overwrite=overwrite)


def write_json_atomic(path: Path, data: Any, *, overwrite: bool) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str), overwrite=overwrite)


def write_png_atomic(path: Path, image: Any, *, overwrite: bool) -> Path:
    """A PIL image as PNG: a reader (the studio page, a cache check) sees the old picture or the whole new one."""
    return write_atomic(path, lambda p: image.save(p, format="PNG"), overwrite=overwrite)


@contextmanager
def atomic_folder(final: Path, *, overwrite: bool) -> Iterator[Path]:
    """Build a folder under a hidden partial name beside `final` (the `with` body fills it); when the body ends
    without an error it takes `final`'s name in one rename. Any error removes the partial and leaves `final` as it
    was. Without `overwrite`, a `final` that exists by then raises FileExistsError; with it, the old one is moved
    aside, replaced, then deleted. OSErrors come back as they are: each caller names what it was writing."""
    final = Path(final)
    ensure_folder(final.parent)
    tmp = Path(tempfile.mkdtemp(prefix=partial_prefix(final.name), suffix=PARTIAL, dir=final.parent))
    try:
        honour_umask(tmp, directory=True)
        yield tmp
        fsync_dir(tmp)
        _rename_folder(tmp, final, overwrite)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _rename_folder(tmp: Path, final: Path, overwrite: bool) -> None:
    exists = final.exists() or final.is_symlink()
    if exists and not overwrite:
        raise FileExistsError(errno.EEXIST, "already exists", str(final))
    old = None
    if exists:  # moved aside under a partial name: a kill now leaves the old one for clean_partials, not half of it
        old = final.with_name(f"{partial_prefix(final.name)}old-{secrets.token_hex(3)}{PARTIAL}")
        os.rename(final, old)
    try:
        os.rename(tmp, final)  # fails on a non-empty folder that appeared meanwhile (an empty one is replaced)
    except OSError as e:
        if old is not None:
            os.rename(old, final)
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise FileExistsError(errno.EEXIST, "appeared while writing", str(final)) from None
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            unlink_quietly(old)
