"""Files in and out, checked before any work: every verb and the Python API go through here.

* :func:`write_atomic` writes through a short-named temp file, fsyncs it, renames it into place
  and fsyncs the folder; temp files of ours left by a killed process are removed on a later write.
* :func:`check_input` refuses what cannot be read as a file without hanging (a FIFO, a device
  node, a directory where a file is expected).
* :func:`check_files` refuses outputs that are not writable (a directory, a missing or read-only
  folder, a name too long) and outputs that would overwrite an input, in any spelling (relative
  paths, ``..``, symlinks, hard links), or another output.
"""
from __future__ import annotations

import os
import re
import secrets
import stat
import tempfile
import time
from pathlib import Path
from typing import Mapping

from .errors import InputError

#: temp files of :func:`write_atomic`: ``.<first 40 chars of the name>.<8 hex>.edgepass-tmp`` (short
#: enough for any name under NAME_MAX, and a pattern specific enough to clean up safely)
TEMP_SUFFIX = ".edgepass-tmp"
_TEMP_RE = re.compile(r"\A\..{0,40}\.[0-9a-f]{8}" + re.escape(TEMP_SUFFIX) + r"\Z", re.S)
#: a temp file of ours older than this was left by a killed writer (a write takes seconds)
STALE_SECONDS = 15 * 60


# ------------------------------------------------------------------ atomic writes
def temp_name(name: str) -> str:
    return f".{name[:40]}.{secrets.token_hex(4)}{TEMP_SUFFIX}"


def remove_stale_temps(folder, max_age: float = STALE_SECONDS) -> int:
    """Delete :func:`write_atomic` temp files in ``folder`` older than ``max_age`` seconds; how many."""
    removed, now = 0, time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if not _TEMP_RE.match(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and now - entry.stat(follow_symlinks=False).st_mtime > max_age:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            pass   # gone already, or not ours to delete
    return removed


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return   # some platforms cannot open a folder; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader (or a crash) sees the old file or the whole new one:
    a temp file in the same folder, fsynced, renamed over ``path``, then the folder fsynced."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise InputError(f"{path}: directory {folder} does not exist")
    remove_stale_temps(folder)
    tmp = folder / temp_name(path.name)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(folder)


# ------------------------------------------------------------------ inputs
def check_input(path, what: str = "input", *, allow_dir: bool = False) -> None:
    """``path`` exists and is a regular file (or, with ``allow_dir``, a folder): never a FIFO or a
    device node, whose reads could block forever."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file ({what})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        if not allow_dir:
            raise InputError(f"{path}: is a directory, not a file ({what})")
    elif not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path}: not a regular file ({what}); refusing to read a pipe or a device node")


#: control characters (other than tab, CR, LF) that no text input (CSV, plan, fleet list) contains
_BINARY = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def read_text(path, what: str) -> str:
    """The UTF-8 text of a small input file (a CSV, a plan, a fleet list); binary -> InputError."""
    check_input(path, what)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or _BINARY.search(text):
        raise InputError(f"{path}: the {what} is not a text file (binary content)")
    return text


def read_prefix(path, limit: int) -> bytes:
    """At most ``limit`` bytes of a regular file. The file is opened without blocking and anything
    else (a FIFO, a device node, whose reads could block or never end) is an OSError; callers ask
    for one byte more than they accept to see that a file is too large."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{Path(path).name} is not a regular file")
        return fh.read(limit)


def is_regular_file(path) -> bool:
    """``Path.is_file`` that answers False, never OSError/ValueError, for a name no file can have
    (a component over NAME_MAX, a NUL byte): a user's text can be any string."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def is_device_file(entry) -> bool:
    """Whether a ``--device`` value names a file (what ``get_device`` would read) rather than an id."""
    if isinstance(entry, os.PathLike):
        return True
    return isinstance(entry, str) and (entry.strip().endswith(".json") or
                                       (os.path.lexists(entry) and not os.path.isdir(entry)))


# ------------------------------------------------------------------ outputs
def _identity(path) -> tuple:
    """What two spellings of one file share: (device, inode) when it exists, else its resolved path
    (symlinks and ``..`` of the existing part resolved)."""
    try:
        st = os.stat(path)
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.realpath(path))


def _input_files(path) -> list:
    """An input's files: itself, or for a folder (calibration data) the files directly inside it."""
    if os.path.isdir(path):
        try:
            return [e.path for e in os.scandir(path) if e.is_file()]
        except OSError:
            return []
    return [path] if os.path.lexists(path) else []


def _name_max(folder) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def can_write_in(folder) -> bool:
    """Whether this process can create files in ``folder`` (asked of the kernel, and by root, tried)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    if hasattr(os, "geteuid") and os.geteuid() == 0:   # root passes os.access where writes still fail
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError:
            return False
    return True


def check_writable_folder(folder, label: str, target) -> None:
    """``folder`` exists, is a folder and this process may create files in it."""
    if not os.path.exists(folder):
        raise InputError(f"{label} {target}: directory {folder} does not exist")
    if not os.path.isdir(folder):
        raise InputError(f"{label} {target}: {folder} is not a directory")
    if not can_write_in(folder):
        raise InputError(f"{label} {target}: cannot write in {folder} (permission denied or read-only)")


def _existing_ancestor(folder: Path) -> Path:
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_output(path, label: str = "output", *, folder_checked: bool = False) -> None:
    """``path`` can be written by :func:`write_atomic`: not a folder, in an existing writable folder
    (unless ``folder_checked``: a folder to be created), a name the file system accepts."""
    path = Path(path)
    size = len(os.fsencode(path.name))
    if size > _name_max(_existing_ancestor(path.parent)):   # first: stat() of such a name fails
        raise InputError(f"{label} {path}: file name too long ({size} bytes)")
    if os.path.isdir(path):
        raise InputError(f"{label} {path}: is a directory; give a file name")
    if not path.name or path.name in (".", ".."):
        raise InputError(f"{label} {path}: not a file name")
    if not folder_checked:
        check_writable_folder(path.parent, label, path)


def check_files(*, inputs: Mapping[str, object] = (), outputs: Mapping[str, object] = (), into=None) -> None:
    """Refuse, before any work, outputs that cannot be written or that would overwrite an input or
    another output. ``inputs``: label -> path, folder or list of them (``None`` ignored); ``outputs``:
    label -> file to write (``None`` ignored); ``into``: the folder the outputs go in, created when
    missing (a fleet's OUT)."""
    outs = {label: p for label, p in dict(outputs).items() if p is not None}
    refuse_overwrite(dict(inputs), ({"output folder": into} if into is not None else {}) | outs)
    if into is not None:
        if os.path.lexists(into) and not os.path.isdir(into):
            raise InputError(f"output folder {into}: a file, not a directory (a fleet writes into a directory)")
        folder = into if os.path.isdir(into) else os.path.dirname(os.path.abspath(into))
        check_writable_folder(folder, "output folder", into)
    for label, path in outs.items():
        check_output(path, label, folder_checked=into is not None)


def _flatten(paths) -> list:
    if paths is None:
        return []
    if isinstance(paths, (str, os.PathLike)):
        return [paths]
    return [p for p in paths if isinstance(p, (str, os.PathLike))]


def refuse_overwrite(inputs: Mapping[str, object], outputs: Mapping[str, object]) -> None:
    """An :class:`InputError` when an output is (in any spelling) an input or another output."""
    read = {}
    for label, value in inputs.items():
        for given in _flatten(value):
            for f in _input_files(given):
                read.setdefault(_identity(f), (label, given))
    seen: dict = {}
    for label, path in outputs.items():
        ident = _identity(path)
        if ident in read:
            what, given = read[ident]
            raise InputError(f"{label} {path} is the {what} {given}: refusing to overwrite the input")
        if ident in seen:
            raise InputError(f"{label} {path} is also the {seen[ident]}: give them different names")
        seen[ident] = label


__all__ = ["write_atomic", "read_text", "remove_stale_temps", "check_input", "check_output", "check_files",
           "check_writable_folder", "refuse_overwrite", "can_write_in", "is_device_file", "TEMP_SUFFIX", "STALE_SECONDS"]
