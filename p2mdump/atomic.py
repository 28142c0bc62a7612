"""Write files completely or not at all, safely when run as root.

Output goes to a temporary ``.NAME.XXXX.part`` file in the target's folder
and is renamed into place only when the writer finished without an
exception, so an interrupted or failed run never leaves a half-written
output behind.  The folder is opened once and every step (creating the
temporary file, setting its mode, renaming it, removing it) goes through
that folder's descriptor or the file's own descriptor, never through a path
looked up again: another local user who can write to the folder cannot
redirect a root run onto another file by swapping a symlink in between.

A command with several outputs writes them inside :func:`output_transaction`:
each finished output waits as its temporary file, and all are renamed
together at the end, or all removed when anything failed.
:func:`check_outputs` validates the outputs of a command before any work.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import signal
import stat
from typing import IO, Any

from .errors import OutputConflict, OutputError

#: the pending outputs of the innermost :func:`output_transaction`, if any
_TRANSACTION: contextvars.ContextVar = contextvars.ContextVar("p2mdump_outputs", default=None)

_TEMP_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class _Pending:
    """A finished temporary file waiting to be renamed onto its target."""

    def __init__(self, path: str, dir_fd: int, tmp: str, name: str):
        self.path, self.dir_fd, self.name = path, dir_fd, name
        #: the temporary file's name in the folder; None once renamed or removed
        self.tmp: str | None = tmp

    def commit(self) -> None:
        if self.tmp is not None:
            os.replace(self.tmp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
            self.tmp = None

    def discard(self) -> None:
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp, dir_fd=self.dir_fd)
            self.tmp = None

    def close(self) -> None:
        self.discard()
        with contextlib.suppress(OSError):
            os.close(self.dir_fd)


def _fdopen(fd: int, mode: str) -> IO[Any]:
    """A file object on ``fd``: binary, or UTF-8 text with "\\n" line ends."""
    if "b" in mode:
        return os.fdopen(fd, mode)
    return os.fdopen(fd, mode, encoding="utf-8", newline="\n")


@contextlib.contextmanager
def atomic_output(path, mode: str = "wb"):
    """Yield a file object whose content replaces ``path`` on success.

    The file is opened read-write (a caller may map its descriptor back).  A
    regular file already at ``path`` keeps its permission bits; a new one gets
    0666 less the umask.  A device or pipe (/dev/null, a fifo) is written in
    place.  Inside :func:`output_transaction` the rename waits for the
    transaction's end."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    if not name or path.endswith(os.sep):
        raise OutputError(f"{path}: is a directory")
    dir_fd = _open_folder(path, folder)
    # the _Pending owning dir_fd (and the temporary file) once there is one
    owner: _Pending | None = None
    handed_over = False  # to the transaction, which renames and closes them
    try:
        target = _stat_at(name, dir_fd, follow=True)
        if target is not None and stat.S_ISDIR(target.st_mode):
            raise OutputError(f"{path}: is a directory")
        if target is not None and not stat.S_ISREG(target.st_mode):
            yield from _write_in_place(path, name, dir_fd, mode)
            return
        bits = _mode_for(name, dir_fd)
        # a termination signal between creating the temporary file and
        # recording who removes it would leave it behind, and one between
        # opening it and handing its descriptor to the file object could
        # close the descriptor twice: hold them off until both are done (one
        # that came meanwhile is raised at the block's end)
        with _signals_held():
            fd, tmp = _create_temp(path, folder, name, dir_fd)
            owner = _Pending(path, dir_fd, tmp, name)
            try:
                fh = _fdopen(fd, mode)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                raise
        try:
            with fh:
                yield fh
                fh.flush()
                os.fchmod(fh.fileno(), bits)
        except OSError as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            raise OutputError(f"{path}: write failed: {exc.strerror or exc}") from None
        transaction = _TRANSACTION.get()
        if transaction is not None:
            transaction.append(owner)  # renamed and closed at the transaction's end
            handed_over = True
            return
        try:
            owner.commit()
        except OSError as exc:
            raise OutputError(f"{path}: cannot rename into place: {exc.strerror}") from None
    finally:
        if not handed_over:
            if owner is not None:
                owner.close()
            else:
                with contextlib.suppress(OSError):
                    os.close(dir_fd)


@contextlib.contextmanager
def output_transaction():
    """Commit every :func:`atomic_output` finished inside together, or none.

    The outputs are renamed into place, one after the other, only when the
    block ends without an exception (with SIGINT, SIGTERM and SIGHUP held
    back during the renames); on any exception every temporary file is
    removed and no target is touched.  A nested transaction joins the outer
    one."""
    if _TRANSACTION.get() is not None:
        yield
        return
    pending: list = []
    token = _TRANSACTION.set(pending)
    try:
        try:
            yield
        finally:
            _TRANSACTION.reset(token)
        _commit_all(pending)
    finally:
        for p in pending:
            p.close()


def _commit_all(pending: list) -> None:
    with _signals_held():
        for i, p in enumerate(pending):
            try:
                p.commit()
            except OSError as exc:
                done = ", ".join(q.path for q in pending[:i])
                raise OutputError(f"{p.path}: cannot rename into place: {exc.strerror}"
                                  + (f" (already written: {done})" if done else "")) from None


@contextlib.contextmanager
def _signals_held():
    """Hold SIGINT, SIGTERM and SIGHUP back while the block runs; one that
    arrives meanwhile is raised again right after it.

    Blocking them (``pthread_sigmask``) only holds them off this thread; a
    signal sent to the process may be taken by another thread (numpy's
    BLAS threads) and Python then runs its handler in the main thread at
    the next bytecode, inside the block.  So the Python-level handlers are
    also swapped for one that only records the signal (main thread only)."""
    sigs = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP")
                                              else [])
    caught: list = []
    handlers = {}
    try:
        for sig in sigs:
            old = signal.getsignal(sig)
            if callable(old):
                handlers[sig] = signal.signal(sig, lambda signum, _frame: caught.append(signum))
    except ValueError:      # not the main thread: the handlers stay
        pass
    try:
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    except (AttributeError, OSError, ValueError):
        mask = None
    try:
        yield
    finally:
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for sig, old in handlers.items():
            signal.signal(sig, old)
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)


def check_outputs(outputs: dict, inputs=()) -> None:
    """Refuse, before any work is done, outputs that cannot be written or
    that would destroy an input.

    ``outputs`` maps a label (the option, e.g. ``--summary-json``) to a path
    (None and '-' are skipped); ``inputs`` are paths of files the command
    reads (missing ones are skipped).  An output whose folder is missing or
    not writable, or that is a directory, raises :class:`OutputError`; an
    output that is the same file as an input (by device and inode: also a
    hard link or a symlink to it) or as another output raises
    :class:`OutputConflict`."""
    read = []
    for inp in inputs:
        if inp is None:
            continue
        st = _stat(inp)
        if st is not None and stat.S_ISREG(st.st_mode):
            read.append((inp, (st.st_dev, st.st_ino)))
    seen: dict = {}
    for label, path in outputs.items():
        if path is None or path == "-":
            continue
        path = os.fspath(path)
        key = _check_one(path)
        if key is None:
            continue
        for inp, ident in read:
            if key == ident:
                raise OutputConflict(f"{label} {path} is the input {inp}; refusing to "
                                     "overwrite it")
        if key in seen:
            raise OutputConflict(f"{label} {path} and {seen[key][0]} {seen[key][1]} name "
                                 "the same file")
        seen[key] = (label, path)


def _check_one(path: str):
    """Validate one output; its identity (for a regular or new file) or None."""
    full = os.path.abspath(path)  # resolved as atomic_output resolves it
    folder, name = os.path.split(full)
    if not name or path.endswith(os.sep):
        raise OutputError(f"{path}: is a directory")
    fst = _stat(folder)
    if fst is None:
        raise OutputError(f"{path}: folder {folder} does not exist")
    if not stat.S_ISDIR(fst.st_mode):
        raise OutputError(f"{path}: {folder} is not a folder")
    st = _stat(full)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{path}: is a directory")
    if st is not None and not stat.S_ISREG(st.st_mode):
        if not os.access(full, os.W_OK):
            raise OutputError(f"{path}: cannot open for writing: permission denied")
        return None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot create a file in {folder}: not writable")
    if st is not None:
        return (st.st_dev, st.st_ino)
    return (fst.st_dev, fst.st_ino, name)


def _stat(path):
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise OutputError(f"{path}: cannot check: {exc.strerror}") from None


def _stat_at(name: str, dir_fd: int, follow: bool):
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=follow)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        # e.g. a dangling or looping symlink when followed: replaced like a file
        return None if follow else _stat_at(name, dir_fd, follow=False)


def _open_folder(path: str, folder: str) -> int:
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OutputError(f"{path}: folder {folder} does not exist") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot open folder {folder}: {exc.strerror}") from None


def _mode_for(name: str, dir_fd: int) -> int:
    """Permission bits of the output: those of the regular file it replaces
    (never set-id or sticky bits), else 0666 less the umask."""
    old = _stat_at(name, dir_fd, follow=False)
    if old is not None and stat.S_ISREG(old.st_mode):
        return stat.S_IMODE(old.st_mode) & 0o777
    return 0o666 & ~_umask()


def _create_temp(path: str, folder: str, name: str, dir_fd: int):
    """A new ``.NAME.XXXXXXXX.part`` file in the folder: (read-write fd, name)."""
    for _ in range(100):
        tmp = f".{name}.{os.urandom(4).hex()}.part"  # (secrets costs ~5 ms of imports)
        try:
            return os.open(tmp, _TEMP_FLAGS, 0o600, dir_fd=dir_fd), tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"{path}: cannot create a file in {folder}: "
                              f"{exc.strerror}") from None
    raise OutputError(f"{path}: cannot create a temporary file in {folder}")


def _write_in_place(path: str, name: str, dir_fd: int, mode: str):
    try:
        fd = os.open(name, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        raise OutputError(f"{path}: cannot open for writing: {exc.strerror}") from None
    try:
        with _fdopen(fd, mode) as fh:
            yield fh
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        raise OutputError(f"{path}: write failed: {exc.strerror or exc}") from None


def pwrite_all(fd: int, data, offset: int) -> None:
    """Write all of ``data`` (any buffer) at ``offset`` of ``fd``."""
    view = memoryview(data).cast("B")
    while len(view):
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(5, "short write")
        view = view[n:]
        offset += n


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
