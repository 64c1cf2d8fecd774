"""The files an operator names on the command line (``--config``, ``--token-file``,
``--output``, an answer file): opened by what they are, and, when root works as the state
directory's owner, opened with root's rights before the drop.

Reading: a path is opened without blocking and checked before a byte is read. A FIFO with
no writer would block a command for ever (and wedge a daemon's reload); a device never
ends. Only a regular file is read; anything else is one line that says what it is.

Writing (:class:`Output`): a regular file (or a new one) is written beside its target and
renamed into place, so a failed run never leaves half a file; an existing file keeps its
mode. A symbolic link is followed: its target is written, the link stays. A character
device or a FIFO is written through (``--output /dev/stdout`` works, and ``/dev/null``
stays a device); nothing is ever renamed over anything but a regular file. A block device,
a socket or a directory is refused.

Root in another user's state directory works as that user
(:func:`ccx_agent.store.statedir.become_owner`), who may not reach ``/root/token`` or write a
root-only ``/media/usb``. :func:`prepare` opens the named files first, as root; the
commands then find them here. The rename of an output into a directory only root may
write is done by root: :func:`fork_for_outputs` keeps a root parent that renames when the
working child asks (:meth:`Output.commit`), and removes what the child never committed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import pwd
import signal
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, BinaryIO, NoReturn, cast

from ccx_agent import atomicfile
from ccx_agent.errors import EX_FAILED, EX_USAGE, LocalError


class UserFileError(LocalError):
    """A named file that cannot be used as asked: one line with the path and why."""

    exit_status = EX_FAILED


def kind_of(mode: int) -> str:
    """What a file is, for a message that refuses it (the config's checks, a source's
    snapshot, a file named on the command line)."""
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _who() -> str:
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def reason(exc: OSError) -> str:
    """``exc``'s reason; a refused permission names the user it was refused to."""
    text = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM):
        text = f"{text} (as user {_who()})"
    return text


def _key(path: Path | str) -> str:
    return os.path.abspath(os.fspath(path))


# --- reading --------------------------------------------------------------------------

#: Opened before the privilege drop: path → the open file, or the error root met.
_inputs: dict[str, BinaryIO | OSError] = {}


def _open_regular(path: Path | str) -> BinaryIO:
    """``path`` opened for reading if it is a regular file; OSError as ``open`` raises
    it, :class:`UserFileError` for anything else."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):  # as open() says it
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            raise UserFileError(f"{path}: is {kind_of(mode)}, not a regular file: refused")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return cast(BinaryIO, os.fdopen(fd, "rb"))
    except BaseException:
        os.close(fd)
        raise


def open_regular(path: Path | str) -> BinaryIO:
    """``path`` for reading, if it is a regular file (the one opened before the privilege
    drop, if any). Raises OSError (its :func:`reason` names the user refused) or
    :class:`UserFileError`."""
    early = _inputs.get(_key(path))
    if isinstance(early, OSError):
        raise early
    if early is not None:  # a new handle each time, from the start (a file read twice)
        fd = os.dup(early.fileno())
        os.lseek(fd, 0, os.SEEK_SET)
        return cast(BinaryIO, os.fdopen(fd, "rb"))
    return _open_regular(path)


# --- writing --------------------------------------------------------------------------


class Output:
    """A file a command writes whole: see the module's docstring.

    ``mode`` is a new file's mode (an existing regular file keeps its own). Use as
    ``out = Output(path); write to out.stream; out.commit()`` (:meth:`abort` on failure),
    or as a context manager, which commits on success and aborts on an exception.
    """

    def __init__(self, path: Path | str, mode: int = 0o600) -> None:
        self.path = Path(path)
        #: The bytes written, once committed.
        self.size = 0
        early = _outputs.pop(_key(path), None)
        if isinstance(early, OSError):
            raise early
        if early is not None:
            self._take(early)
            return
        self.target, self.tmp, fd = _open_output(self.path, mode)
        self._through = self.tmp is None
        self._raw = _Counting(fd, "wb")
        self.stream: BinaryIO = cast(BinaryIO, io.BufferedWriter(self._raw))
        self._index: int | None = None

    def _take(self, other: Output) -> None:
        self.target, self.tmp, self.stream = other.target, other.tmp, other.stream
        self._raw, self._index, self._through = other._raw, other._index, other._through

    def mode(self) -> int | None:
        """The file's permission bits (None when written through)."""
        return None if self.through else stat.S_IMODE(os.stat(self.target).st_mode)

    @property
    def through(self) -> bool:
        """Written through (a device or a FIFO), not renamed into place."""
        return self._through

    def flushed(self) -> int:
        """The bytes written so far, all handed to the file."""
        self.stream.flush()
        return self._raw.written

    def commit(self) -> int:
        """Make the bytes durable and put them in place; the bytes written. The streamed
        form of :func:`ccx_agent.atomicfile.write_file` with ``durable=True``."""
        self.stream.flush()
        self.size = size = self._raw.written
        if self.tmp is not None:
            os.fsync(self.stream.fileno())
        self.stream.close()
        if self.tmp is None:
            return size
        if self._index is not None and _commit_pipe:
            _ask_parent(self._index)
        else:
            os.replace(self.tmp, self.target)
        self.tmp = None
        with contextlib.suppress(OSError):
            atomicfile.sync_dir(self.target.parent)
        return size

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.stream.close()
        if self.tmp is not None and (self._index is None or not _commit_pipe):
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)

    def __enter__(self) -> Output:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()


class _Counting(io.FileIO):
    """A file that counts the bytes written to it (a FIFO cannot say where it is)."""

    written = 0

    def write(self, data: Any) -> int:
        n = super().write(data)
        self.written += n or 0
        return n or 0


def _open_output(path: Path, mode: int) -> tuple[Path, Path | None, int]:
    """(the file to put in place, its temporary name or None to write through, an fd)."""
    target = Path(os.path.realpath(path))  # a link's target is written; the link stays
    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
            flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
            try:
                fd = os.open(target, flags)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # a FIFO nobody reads: it would block
                    raise UserFileError(
                        f"{path}: is a FIFO (named pipe) that nothing reads: refused"
                    ) from None
                raise
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
            return target, None, fd
        raise UserFileError(f"{path}: is {kind_of(st.st_mode)}: refused (it is never replaced)")
    directory = target.parent
    import tempfile  # noqa: PLC0415 - only to write: the config's readers never need it

    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=directory)
    try:
        os.fchmod(fd, stat.S_IMODE(st.st_mode) if st is not None else mode)
        if st is not None and os.geteuid() == 0:  # root rewriting a user's file keeps it theirs
            os.fchown(fd, st.st_uid, st.st_gid)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return target, Path(tmp), fd


# --- before the privilege drop ---------------------------------------------------------

_outputs: dict[str, Output | OSError] = {}
#: In a child whose root parent renames its outputs: (requests to it, its answers).
_commit_pipe: list[tuple[int, int]] = []


def prepare(inputs: list[Path | str], outputs: list[tuple[Path | str, int]]) -> None:
    """Open ``inputs`` and ``outputs`` (path, a new file's mode) now, with this process's
    rights, for the commands to find after the drop. An error is kept and raised when
    the command opens the file, so that it is said where the command says its errors."""
    for path in inputs:
        try:
            _inputs[_key(path)] = _open_regular(path)
        except OSError as exc:
            _inputs[_key(path)] = exc
    for index, (path, mode) in enumerate(outputs):
        try:
            out = Output(path, mode)
        except OSError as exc:
            _outputs[_key(path)] = exc
            continue
        out._index = index if out.tmp is not None else None
        _outputs[_key(path)] = out


def fork_for_outputs() -> None:
    """When outputs were prepared to be renamed into place, fork: the child returns and
    works (it is about to drop its rights); this process stays as it is, renames each
    output the child commits, removes the rest, and exits with the child's status."""
    pending = {
        o._index: o for o in _outputs.values() if isinstance(o, Output) and o._index is not None
    }
    if not pending:
        return
    asks, answers = os.pipe(), os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(asks[0])
        os.close(answers[1])
        _commit_pipe.append((asks[1], answers[0]))
        return
    os.close(asks[1])
    os.close(answers[0])
    _parent(pid, pending, asks[0], answers[1])


def _parent(pid: int, pending: dict[int, Output], asks: int, answers: int) -> NoReturn:
    # Ctrl-C reaches the child from the terminal; a signal sent to this PID is passed on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: os.kill(pid, s))
    for out in pending.values():
        with contextlib.suppress(OSError):
            out.stream.close()
    with os.fdopen(asks, "rb") as requests, os.fdopen(answers, "wb", buffering=0) as replies:
        for line in requests:
            out = pending.pop(int(line))
            assert out.tmp is not None
            try:
                os.replace(out.tmp, out.target)
            except OSError as exc:
                replies.write(f"{exc.errno} {exc.strerror or exc}\n".encode())
                pending[int(line)] = out
            else:
                replies.write(b"0\n")
    _, status = os.waitpid(pid, 0)
    for out in pending.values():
        if out.tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(out.tmp)
    code = os.waitstatus_to_exitcode(status)
    sys.stdout.flush()
    os._exit(code if code >= 0 else 128 - code)


def _ask_parent(index: int) -> None:
    ask, answer = _commit_pipe[0]
    os.write(ask, f"{index}\n".encode())
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = os.read(answer, 4096)
        if not chunk:
            raise OSError(errno.EPIPE, "the process that renames the output is gone")
        reply += chunk
    number, _, text = reply.decode().strip().partition(" ")
    if number != "0":
        raise OSError(int(number), text)


# --- the ID token (``register``, ``offline import``) --------------------------------------

#: The longest token file read (an ID token is a few hundred characters).
MAX_TOKEN_BYTES = 64 * 1024


class TokenError(Exception):
    """The token could not be had (one line; exit 2 for how it was asked, 1 for what was
    read: a file missing, unreadable or empty, an empty standard input)."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


def read_token(
    positional: str | None,
    token_file: str | None,
    stdin: IO[str] | None = None,
    *,
    prompt: Callable[[str], str] | None = None,
) -> str:
    """The ID token: from ``--token-file FILE``, from standard input (``-`` as the file or
    as the argument; asked without echo on a terminal), or the argument itself. Only the
    first line counts, without surrounding blanks. ``prompt`` asks on a terminal
    (:func:`getpass.getpass` unless given)."""
    stdin = stdin or sys.stdin
    if positional is not None and token_file is not None:
        raise TokenError("give the token once: TOKEN, or --token-file FILE (- for stdin)", EX_USAGE)
    source = token_file if token_file is not None else positional
    if source is None:
        raise TokenError(
            "no token: give --token-file FILE, or - to read it from standard input", EX_USAGE
        )
    if source == "-":
        on_terminal = stdin.isatty()
        if on_terminal and prompt is None:
            import getpass  # noqa: PLC0415 - only a terminal asks

            prompt = getpass.getpass
        text = (
            prompt("ID token (not echoed): ")
            if on_terminal and prompt is not None
            else stdin.read(MAX_TOKEN_BYTES)
        )
        where = "standard input"
    elif token_file is not None:
        try:
            with open_regular(token_file) as fh:  # opened before a privilege drop
                text = fh.read(MAX_TOKEN_BYTES).decode("utf-8", errors="replace")
        except UserFileError as exc:
            raise TokenError(f"--token-file {exc}", EX_FAILED) from None
        except OSError as exc:
            raise TokenError(
                f"--token-file {token_file}: cannot be read: {reason(exc)}", EX_FAILED
            ) from None
        where = token_file
    else:
        return source
    lines = text.strip().splitlines()
    token = lines[0].strip() if lines else ""
    if not token:  # bad input, as a missing or unreadable file is: not a usage error
        raise TokenError(f"the token from {where} is empty", EX_FAILED)
    return token
