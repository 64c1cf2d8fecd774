"""Random mutations of the example config through ``check-config``, and of a snapshot
through ``usage``: every case ends with exit 0, 1 or 78, within 5 s, without a traceback.

A seeded mutator, so a failure is reproducible: the failing case's text is in the message,
and ``CCX_FUZZ_SEED`` / ``CCX_FUZZ_CASES`` replay or widen a run. Both commands run in
this process (the ``commands`` functions the CLI calls): an uncaught exception fails the
test. The mutations are those of YAML and JSON's sharp edges: aliases and anchors
(nested into a "billion laughs"), numbers too long to convert, wrong types, tags, control
characters, broken indentation, special files (a FIFO, /dev/zero) as the snapshot.
"""

from __future__ import annotations

import difflib
import io
import os
import random
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ccx_agent.cli import commands

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "ccx-agent.yaml"
SNAPSHOTS = ROOT / "tests" / "data" / "snapshots"
SEED = int(os.environ.get("CCX_FUZZ_SEED", "20240510"))
CASES = int(os.environ.get("CCX_FUZZ_CASES", "300"))
#: The longest one case may take (the issue's bound), in CPU seconds of the thread that
#: runs it: ``make test`` runs four workers on two cores, where a case's wall time is
#: about twice its CPU time, so a wall bound would measure the neighbours' load.
CASE_SECONDS = 5.0
#: A case that waits (a FIFO nobody writes, a read that never ends) uses no CPU: this wall
#: bound catches it, with room for a loaded machine.
HANG_SECONDS = 4 * CASE_SECONDS

#: ``PATH:LINE: key: message``, the one shape of a config problem.
PROBLEM = re.compile(r"^.+?:[1-9]\d*: \S.*?: .+$")

#: What the mutator writes into a document: YAML and JSON's sharp edges.
TOKENS = [
    "*a",
    "&a",
    "&a [1, 2]",
    "*nope",
    "<<: *a",
    "[",
    "]",
    "{",
    "}",
    ":",
    "- ",
    "? ",
    "'",
    '"',
    "#",
    "|",
    ">",
    "!!binary aGk=",
    "!!python/object:os.system",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!!float",
    "\t",
    "\x00",
    "\x85",
    "\ufeff",
    "~",
    "null",
    "yes",
    "no",
    "on",
    "1e309",
    "-1",
    "0",
    "0x1F",
    "0o17",
    "1_000",
    "1:2:3",
    ":".join(["59"] * 3000),
    "2024-02-30",
    "2024-01-01T25:00:00",
    ".inf",
    ".nan",
    "9" * 5000,
    "-" + "1" * 4400,
    "x" * 10_000,
    "[a, b]",
    "{a: 1}",
    "[]",
    "{}",
    "''",
    "15m",
    "0s",
    "-5m",
    "99999999999d",
    "---",
    "...",
    "%YAML 1.1",
    "kind: command",
    "kind: uccx",
    "kind: [file]",
    "path: [a, b]",
    "path: 12",
    "path: {p: 1}",
    "path: ''",
    "path: /dev/zero",
    "/dev/zero",
    "/proc/self/mem",
    "command: [sh]",
]


def _bomb(levels: int, width: int = 10) -> list[str]:
    """Nested aliases: ``width ** levels`` values from a few hundred bytes."""
    lines = [f"z0: &z0 [{', '.join(['lol'] * width)}]"]
    lines += [f"z{i}: &z{i} [{', '.join([f'*z{i - 1}'] * width)}]" for i in range(1, levels)]
    return lines


def mutate(text: str, rng: random.Random) -> str:
    """One to four random edits of ``text``, line by line or character by character."""
    lines = text.splitlines()
    for _ in range(rng.randint(1, 4)):
        if not lines:
            lines = [""]
        i = rng.randrange(len(lines))
        op = rng.randrange(12)
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[rng.randrange(len(lines))])
        elif op == 2:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 3:  # a value replaced
            key, sep, _ = lines[i].partition(": ")
            lines[i] = f"{key}{sep or ': '}{rng.choice(TOKENS)}"
        elif op == 4:  # a token inserted anywhere in the line
            at = rng.randint(0, len(lines[i]))
            lines[i] = lines[i][:at] + rng.choice(TOKENS) + lines[i][at:]
        elif op == 5:  # indentation broken
            lines[i] = " " * rng.randint(0, 9) + lines[i].lstrip()
        elif op == 6:  # characters deleted
            at = rng.randint(0, len(lines[i]))
            lines[i] = lines[i][:at] + lines[i][at + rng.randint(1, 5) :]
        elif op == 7:  # an anchor on one value, an alias on another
            key, sep, value = lines[i].partition(": ")
            if sep:
                lines[i] = f"{key}: &a {value}"
            j = rng.randrange(len(lines))
            key, sep, _ = lines[j].partition(": ")
            lines[j] = f"{key}: *a" if sep else lines[j] + " *a"
        elif op == 8:  # a billion laughs, used at some key
            bomb = _bomb(rng.randint(4, 12), rng.randint(3, 12))
            key, sep, _ = lines[i].partition(": ")
            last = bomb[-1].split(":")[0]
            lines[i] = f"{key}: *{last}" if sep else lines[i]
            lines[0:0] = bomb
        elif op == 9:  # a line cut short
            lines = lines[:i]
        elif op == 10:  # a random byte
            at = rng.randint(0, len(lines[i]))
            lines[i] = lines[i][:at] + chr(rng.randrange(0, 0x250)) + lines[i][at:]
        else:  # a line made of tokens
            lines.insert(i, " ".join(rng.choice(TOKENS) for _ in range(rng.randint(1, 4))))
    return "\n".join(lines) + rng.choice(["\n", "", "\n\n"])


def run_case(action: Callable[[io.StringIO, io.StringIO], int], case: str) -> tuple[int, str]:
    """``action``'s exit status and stderr, within :data:`CASE_SECONDS`; any exception
    (a traceback) or a case that does not end fails the test, naming ``case``."""
    out, err = io.StringIO(), io.StringIO()
    result: list[int | BaseException] = []
    cpu: list[float] = []

    def target() -> None:
        started = time.thread_time()
        try:
            result.append(action(out, err))
        except BaseException as exc:  # handed to the test, which fails
            result.append(exc)
        finally:
            cpu.append(time.thread_time() - started)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(HANG_SECONDS)
    if thread.is_alive():
        pytest.fail(f"did not end within {HANG_SECONDS}s: {case}")
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise AssertionError(f"traceback ({outcome!r}) for: {case}") from outcome
    assert cpu[0] < CASE_SECONDS, (f"{cpu[0]:.1f} s of CPU", case)
    assert outcome in (0, 1, 78), (outcome, case)
    return outcome, err.getvalue()


def _shown(text: str, base: str) -> str:
    """The case as the lines the mutator changed (a diff from ``base``), cut short."""
    diff = difflib.unified_diff(base.splitlines(), text.splitlines(), lineterm="", n=0)
    shown = "\n".join(line if len(line) < 200 else line[:200] + "..." for line in diff)
    return shown if len(shown) < 4000 else shown[:4000] + "\n..."


def runnable_example(tmp_path: Path, snapshot: Path) -> str:
    """The example, with a snapshot and a (not created) state dir this host has."""
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace("path: /etc/ccx-agent/agents.json", f"path: {snapshot}")
    return text.replace("state_dir: /var/lib/ccx-agent", f"state_dir: {tmp_path / 'state'}")


def test_check_config_survives_mutations_of_the_example(tmp_path: Path) -> None:
    base = runnable_example(tmp_path, SNAPSHOTS / "contract.json")
    path = tmp_path / "ccx-agent.yaml"
    path.write_text(base, encoding="utf-8")
    assert run_case(lambda o, e: commands.check_config(path, o, e), "the example")[0] == 0
    rng = random.Random(SEED)
    codes: dict[int, int] = {}
    started = time.process_time()
    for n in range(CASES):
        text = mutate(base, rng)
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        case = f"case {n} (seed {SEED}):\n{_shown(text, base)}"
        code, err = run_case(lambda o, e: commands.check_config(path, o, e), case)
        codes[code] = codes.get(code, 0) + 1
        lines = [ln for ln in err.splitlines() if not ln.startswith("warning: ")]
        if code == 78:
            assert lines, case
            for line in lines:
                assert PROBLEM.match(line), (line, case)
        else:
            assert code == 0 and not lines, (code, err, case)
    # A mutator that only ever broke the file (or never did) would test little.
    assert codes.get(0, 0) > CASES // 20 and codes.get(78, 0) > CASES // 2, codes
    assert not (tmp_path / "state").exists()  # check-config never creates it
    assert time.process_time() - started < 45 * CASES / 300


SPECIAL_FILES = ["fifo", "dev-zero", "directory", "missing", "empty", "huge-line"]


def _special(kind: str, path: Path) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "huge-line":
        path.write_bytes(b"agents: [" + b"{id: a, state: READY}, " * 50_000 + b"]\n")


@pytest.mark.parametrize("name", ["contract.yaml", "mixed.json"])
def test_usage_survives_mutations_of_a_snapshot(tmp_path: Path, name: str) -> None:
    source = SNAPSHOTS / name
    snapshot = tmp_path / name
    config = tmp_path / "ccx-agent.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nsource:\n  kind: file\n  path: {snapshot}\n"
    )
    base = source.read_text(encoding="utf-8")
    rng = random.Random(f"{SEED}:{name}")
    codes: dict[int, int] = {}
    started = time.process_time()
    special = {rng.randrange(CASES): kind for kind in SPECIAL_FILES}
    for n in range(CASES):
        if snapshot.is_dir() and not snapshot.is_symlink():
            snapshot.rmdir()
        else:
            snapshot.unlink(missing_ok=True)
        if n in special:
            _special(special[n], snapshot)
            text = f"<{special[n]}>"
        else:
            text = mutate(base, rng)
            snapshot.write_bytes(text.encode("utf-8", "surrogatepass"))
        case = f"{name} case {n} (seed {SEED}):\n{_shown(text, base)}"
        code, err = run_case(lambda o, e: commands.usage(config, False, o, e), case)
        codes[code] = codes.get(code, 0) + 1
        if code == 1:
            errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
            assert len(errors) == 1 and str(snapshot) in errors[0], (err, case)
        assert code != 78, (err, case)  # the config never changes
    assert codes.get(0, 0) > CASES // 20 and codes.get(1, 0) > CASES // 5, codes
    assert time.process_time() - started < 30 * CASES / 300
