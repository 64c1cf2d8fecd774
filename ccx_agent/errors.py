"""Faults that are neither SSM's nor the source's: the host's.

SSM being unreachable is COMM_FAILED and a failing source is LICENSE_COMPUTATION_FAILED;
both are expected weather, handled inside the jobs. A :class:`LocalError` is different: a
key the daemon cannot read, a full disk, a damaged database. Nothing retries it away, so
it must escape the job (which counts it and raises AGENT_JOB_FAILED) and reach the CLI as
one line, never be absorbed as "the server refused".
"""

from __future__ import annotations

from ccx_agent import secretvalues

#: sysexits.h: a configuration error that a restart cannot fix (systemd's
#: ``RestartPreventExitStatus=78`` keeps it from restarting in a loop).
EX_CONFIG = 78
#: A failed action (the server refused, a daemon already runs …).
EX_FAILED = 1
#: Bad command-line usage, as argparse exits.
EX_USAGE = 2
#: Interrupted by Ctrl-C (128 + SIGINT), as shells report it.
EX_INTERRUPTED = 130


class AgentError(Exception):
    """An error that ends a command with one line and :attr:`exit_status`.

    The root of every error this package raises on purpose (certbot's way): SSM's
    refusals (:class:`~ccx_agent.ssm.port.SsmError`), a source that cannot answer
    (:class:`~ccx_agent.sources.SourceError`), the host's faults (:class:`LocalError`) and
    the rest. Catching it, not a tuple that names ``ValueError``, keeps a bug (a
    ``ValueError`` from deep inside the code) from reading as "fix your config".
    """

    exit_status = EX_FAILED

    def __init__(self, *args: object) -> None:
        # Its message is printed, logged and stored (an alert): it may quote a server or
        # a program that echoed a secret (an ID token, a source command's argument), so
        # every secret value this process knows of is scrubbed from it here, once.
        if args and isinstance(args[0], str):
            args = (secretvalues.scrub(args[0], secretvalues.MARK), *args[1:])
        super().__init__(*args)


class LocalError(AgentError):
    """A fault of this host (permissions, disk, damaged state) that an operator must fix."""
