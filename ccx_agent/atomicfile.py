"""A file written whole or not at all: the one way this package puts a file in place.

The bytes go to a temporary file beside the target (``.new-NAME.XXXXXXXX.tmp``, created
0600, then given ``mode`` before a byte is written, so a secret is never readable by
others, not even briefly), which is then renamed over the target. A reader, a crash or a
full disk sees the old file or the new one, never half of one.

Durability is the caller's explicit choice, because what a power cut may undo differs:

``durable=True``: the file is fsynced before the rename and its directory after it, so
once the call returns the new file survives a power cut. For what cannot be made again:

* the instance's private key (:class:`ccx_agent.ssm.identity.KeyStore`): lost, the
  registration is lost with it;
* the state directory's marker (:func:`ccx_agent.store.statedir.write_marker`): it is what
  says an instance lived there when the database has gone;
* the simulator's CA keys, certificates and admin token (:mod:`ccx_agent.simulator`):
  agents pin that CA, so a CA made anew after a crash would be refused by all of them;
* the streamed form below (:class:`ccx_agent.userfiles.Output`): an operator's
  ``--output`` is complete once the command says it succeeded.

``durable=False``: renamed into place without waiting for the disk; atomic against
crashes of the process, not of the machine. For what is simply made again:

* the files ``install-files`` lays out (:mod:`ccx_agent.cli.install_files`): the admin runs
  it again, and it is a copy of files shipped in the package.

:class:`ccx_agent.userfiles.Output` streams (a support bundle is a tar written as it
goes), writes through devices and FIFOs, and may have a root parent do the rename; it
takes the same steps with :func:`sync_dir` rather than :func:`write_file`.
Files that must stay the same inode (a lock file holds its ``flock`` on it; a new SQLite
database is created empty with ``O_EXCL``) are not replaced, so do not use this.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

#: What a temporary file's name starts and ends with (a key store wipes leftovers by it).
TMP_PREFIX = ".new-"
TMP_SUFFIX = ".tmp"


def sync_dir(directory: Path) -> None:
    """fsync a directory, so that a rename in it survives a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes, *, mode: int, durable: bool) -> None:
    """Put ``data`` in place at ``path`` with exactly the permission bits ``mode`` (the
    umask does not apply), whole or not at all; ``durable``: see the module's docstring for which
    caller needs it. A failure leaves no temporary file behind."""
    import tempfile  # noqa: PLC0415 - only to write: status --check reads userfiles, never writes

    fd, name = tempfile.mkstemp(
        dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}.", suffix=TMP_SUFFIX
    )
    tmp = Path(name)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        sync_dir(path.parent)
