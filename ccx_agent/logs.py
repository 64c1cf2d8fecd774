"""The structured log: structlog, JSON lines (or a console view on a terminal), secrets
redacted.

Both structlog loggers and the standard library's ``logging`` (APScheduler, urllib3,
requests, the simulator) go through one :class:`structlog.stdlib.ProcessorFormatter` on a
handler of the root logger, so every line has the same keys: ``timestamp`` (ISO 8601,
UTC), ``level``, ``logger``, ``event``, then the event's own. Exceptions are rendered
without local variables (they could hold a password), and :func:`redact` runs last,
after the exception has become text, so it also cleans the exception's message.

Under systemd the stream is the journal: :func:`journal_stream` recognises it (systemd's
``JOURNAL_STREAM`` contract) and then each line starts with the syslog priority of its
level, ``<3>`` for an error (systemd's ``SyslogLevelPrefix=``), so ``journalctl -p err``
and ``systemctl status`` see the level. Python warnings (``warnings.warn``, e.g. a
library's deprecation warning) are routed through the same handler, so nothing but JSON
lines (or console lines) ever reaches the stream.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import Processor

from ccx_agent import secretvalues
from ccx_agent.secretvalues import secret_key

REDACTED = secretvalues.MARK

#: Keys of the event dict that are structlog's plumbing, not content.
_PLUMBING = frozenset({"exc_info", "_record", "_from_structlog", "_logger", "_name"})

_PEM = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----(?:.*?-----END \1PRIVATE KEY-----|.*\Z)",
    re.DOTALL,
)
_URL_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s/@:]*):[^\s/@]*@")
_AUTH_SCHEME = re.compile(
    r"(?i)\b(?P<scheme>bearer|basic)(?P<sp>\s+)(?P<cred>[A-Za-z0-9\-._~+/]+=*)"
)
_PAIR = re.compile(r"(?P<key>[A-Za-z_][\w.\-]*)(?P<eq>=)(?P<val>\"[^\"]*\"|'[^']*'|[^&\s#;,'\"]+)")
_QUOTED_PAIR = re.compile(
    r"(?P<q>[\"'])(?P<key>[\w.\-]+)(?P=q)(?P<eq>\s*:\s*)(?P<val>\"[^\"]*\"|'[^']*')"
)


def _auth(match: re.Match[str]) -> str:
    cred = match["cred"]
    # "Basic" is also an English word: a credential is base64, not a lower-case word.
    if match["scheme"].lower() == "basic" and cred.isalpha() and cred.islower():
        return match[0]
    return f"{match['scheme']}{match['sp']}{REDACTED}"


def _pair(match: re.Match[str]) -> str:
    if not secret_key(match["key"]) or match["val"].strip("\"'") == REDACTED:
        return match[0]
    val = match["val"]
    quote = val[0] if val[:1] in ("'", '"') else ""
    return f"{match[0][: match.start('val') - match.start()]}{quote}{REDACTED}{quote}"


def redact_text(text: str) -> str:
    """``text`` without private keys, URL passwords, HTTP credentials, secret
    ``key=value`` pairs and any secret value this process knows of
    (:mod:`ccx_agent.secretvalues`: the config's, the token a command was given)."""
    text = secretvalues.scrub(text, REDACTED)
    if "PRIVATE KEY-----" in text:
        text = _PEM.sub(
            lambda m: f"-----BEGIN {m[1]}PRIVATE KEY-----{REDACTED}-----END {m[1]}PRIVATE KEY-----",
            text,
        )
    if "://" in text:
        text = _URL_USERINFO.sub(rf"\g<head>:{REDACTED}@", text)
    text = _AUTH_SCHEME.sub(_auth, text)
    if "=" in text:
        text = _PAIR.sub(_pair, text)
    if ":" in text:
        text = _QUOTED_PAIR.sub(_pair, text)
    return text


def _clean(value: object) -> object:
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and secret_key(k) else _clean(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v) for v in value]
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    # Anything else is rendered as text anyway (JSON falls back to repr); its text could
    # hold a URL with a password.
    return redact_text(str(value))


def redact(
    logger: object, method: str, event_dict: MutableMapping[str, object]
) -> MutableMapping[str, object]:
    """A structlog processor: secret keys' values become ``[REDACTED]``, and secrets
    inside every string (the event, an exception's text, nested dicts and lists)."""
    for key, value in list(event_dict.items()):
        if key in _PLUMBING:
            continue
        event_dict[key] = REDACTED if key != "event" and secret_key(key) else _clean(value)
    return event_dict


_HANDLER_MARK = "_ccx_agent_logs"
_FIRST_KEYS = ("timestamp", "level", "logger", "event")


def _keys_first(
    logger: object, method: str, event_dict: MutableMapping[str, object]
) -> MutableMapping[str, object]:
    """The common keys lead each JSON line, so a person reading it sees them first."""
    head = {k: event_dict.pop(k) for k in _FIRST_KEYS if k in event_dict}
    return {**head, **event_dict}


def journal_stream(stream: TextIO) -> bool:
    """Whether ``stream`` is connected to the journal.

    systemd sets ``JOURNAL_STREAM=DEV:INODE`` to the device and inode of the socket it
    connects stdout or stderr to; the stream is the journal's only when its file
    descriptor has that device and inode (a shell started from the service, or a pipe to
    ``less``, inherits the variable but not the socket)."""
    dev, sep, ino = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not sep:
        return False
    try:
        want = (int(dev), int(ino))
        st = os.fstat(stream.fileno())
    except (AttributeError, ValueError, OSError):  # io.UnsupportedOperation is both
        return False
    return (st.st_dev, st.st_ino) == want


def syslog_priority(levelno: int) -> int:
    """The syslog priority (RFC 5424: 2 critical … 7 debug) of a ``logging`` level; a
    level between INFO and WARNING (a library's NOTICE) is 5, notice."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno > logging.INFO:
        return 5
    if levelno >= logging.INFO:
        return 6
    return 7


class _JournalFormatter(structlog.stdlib.ProcessorFormatter):
    """Every line of a record starts with ``<N>``, its syslog priority: journald takes it
    off and files the line at that priority (a console traceback's lines too)."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def _tidy_warning(
    logger: object, method: str, event_dict: MutableMapping[str, object]
) -> MutableMapping[str, object]:
    """A captured Python warning's text ends with a newline (``warnings.formatwarning``)."""
    record, event = event_dict.get("_record"), event_dict.get("event")
    if (
        isinstance(record, logging.LogRecord)
        and record.name == "py.warnings"
        and isinstance(event, str)
    ):
        event_dict["event"] = event.rstrip()
    return event_dict


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written, not when the handler was made:
    a command run in process (a test, the demo) may swap it, and a handler holding the old
    one would write to a closed stream."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def fileno(self) -> int:
        return sys.stderr.fileno()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


#: Standard error, looked up at each write (a command's log lines go there).
STDERR: TextIO = _CurrentStderr()  # type: ignore[assignment]

#: Libraries whose INFO lines are routine chatter, not news for an operator.
QUIET_LOGGERS = ("apscheduler",)


def configure(
    *,
    json: bool | None = None,
    level: str = "info",
    stream: TextIO | None = None,
    journal: bool | None = None,
) -> None:
    """Route structlog, the stdlib ``logging`` root and Python warnings to ``stream``
    (default stdout).

    ``json`` None: JSON lines unless ``stream`` is a terminal. ``journal`` None: the
    ``<N>`` priority prefix when :func:`journal_stream` says ``stream`` is the journal.
    Calling again replaces the handler this function installed (other handlers on the
    root are left alone)."""
    out = sys.stdout if stream is None else stream
    prefixed = journal_stream(out) if journal is None else journal
    try:
        tty = out.isatty()
    except (AttributeError, ValueError):
        tty = False
    as_json = not tty if json is None else json
    levelno = logging.getLevelNamesMapping().get(level.upper())
    if levelno is None:
        raise ValueError(f"unknown log level {level!r}")

    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp")
    foreign: list[Processor] = [
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        timestamper,
        _tidy_warning,
    ]
    final: list[Processor]
    if as_json:
        final = [
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            redact,
            _keys_first,
            structlog.processors.JSONRenderer(),
        ]
    else:
        final = [
            structlog.processors.format_exc_info,  # the plain traceback module: no locals
            redact,
            structlog.dev.ConsoleRenderer(
                colors=tty, exception_formatter=structlog.dev.plain_traceback
            ),
        ]
    formatter_class = _JournalFormatter if prefixed else structlog.stdlib.ProcessorFormatter
    formatter = formatter_class(
        foreign_pre_chain=foreign,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(levelno)
    # APScheduler says "Running job …" and "executed successfully" at INFO for every run
    # (a thousand lines a day into the journal); its warnings and errors still come through.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(levelno, logging.WARNING))
    # A warning printed by the warnings module is a bare line on stderr, which breaks the
    # one-JSON-object-per-line promise: log it instead (logger "py.warnings", level
    # warning). Off then on: `warnings.catch_warnings` may have put back the printer
    # since a previous call, and on alone would then do nothing.
    logging.captureWarnings(False)
    logging.captureWarnings(True)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            timestamper,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a module-level logger made before configure() follows a later call.
        cache_logger_on_first_use=False,
    )


__all__ = [
    "REDACTED",
    "configure",
    "journal_stream",
    "redact",
    "redact_text",
    "secret_key",
    "syslog_priority",
]
