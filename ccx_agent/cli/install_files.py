"""``ccx-agent install-files [--root DIR]``: lay out the files the wheel carries, so that
an install needs no git checkout.

The wheel holds, as package data under ``ccx_agent/share/``: the systemd units (main
and template), the sysusers and tmpfiles entries, the credentials drop-in, the example
config, the man page ``ccx-agent(8)``, the bash and zsh completions, the Prometheus rules
and Grafana dashboard, and the example scenarios. They go to FHS
paths for software installed locally (``/usr/local``, which systemd, systemd-sysusers,
systemd-tmpfiles, man and the shells all search), the config to ``/etc/ccx-agent``.

Ours (units, man page, completions) are replaced by an upgrade; the config is the
operator's: an existing one is never touched, and the new example goes beside it as
``ccx-agent.yaml.example``. ``/usr/local/bin/ccx-agent`` becomes a link to the console
script of the environment running this command (the path the unit's ``ExecStart=``
names). Each file is said on standard output.
"""

from __future__ import annotations

import filecmp
import grp
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import ccx_agent
from ccx_agent import atomicfile
from ccx_agent.errors import EX_FAILED

PACKAGE = Path(ccx_agent.__file__).resolve().parent
#: A checkout (or an editable install): the same files at the repository's root.
CHECKOUT = PACKAGE.parent


@dataclass(frozen=True, slots=True)
class Item:
    #: Where it is in the wheel (under ccx_agent/share) and in a checkout (under its root).
    wheel: str
    checkout: str
    #: Where it goes, under --root.
    target: str
    mode: int
    #: The operator's file: never replaced once there.
    config: bool = False


ITEMS: tuple[Item, ...] = (
    Item("systemd/ccx-agent.service", "systemd/ccx-agent.service",
         "usr/local/lib/systemd/system/ccx-agent.service", 0o644),
    Item("systemd/ccx-agent@.service", "systemd/ccx-agent@.service",
         "usr/local/lib/systemd/system/ccx-agent@.service", 0o644),
    Item("systemd/ccx-agent.sysusers", "systemd/ccx-agent.sysusers",
         "usr/local/lib/sysusers.d/ccx-agent.conf", 0o644),
    Item("systemd/ccx-agent.tmpfiles", "systemd/ccx-agent.tmpfiles",
         "usr/local/lib/tmpfiles.d/ccx-agent.conf", 0o644),
    Item("systemd/uccx-credentials.conf", "systemd/uccx-credentials.conf",
         "usr/local/share/ccx-agent/uccx-credentials.conf", 0o644),
    Item("config/ccx-agent.yaml", "config/ccx-agent.yaml",
         "etc/ccx-agent/ccx-agent.yaml", 0o640, config=True),
    Item("man/ccx-agent.8", "share/man/ccx-agent.8",
         "usr/local/share/man/man8/ccx-agent.8", 0o644),
    Item("completion/ccx-agent.bash", "share/completion/ccx-agent.bash",
         "usr/local/share/bash-completion/completions/ccx-agent", 0o644),
    Item("completion/_ccx-agent", "share/completion/_ccx-agent",
         "usr/local/share/zsh/site-functions/_ccx-agent", 0o644),
)  # fmt: skip
#: Monitoring (docs/monitoring.md) and the example scenarios (docs/simulate.md), so that
#: a host without a checkout has them: under /usr/local/share/ccx-agent/.
SHARED = "usr/local/share/ccx-agent"
SCENARIOS = ("seed-scenario-1.yaml", "seed-scenario-2.yaml")
EXAMPLES = (
    "air-gapped-site.yaml",
    "more-agents-tomorrow.yaml",
    "never-register.yaml",
    "register-again.yaml",
    "ssm-down-a-week.yaml",
    "year.yaml",
)
ITEMS += (
    Item("contrib/prometheus/ccx-agent.rules.yml", "contrib/prometheus/ccx-agent.rules.yml",
         f"{SHARED}/contrib/prometheus/ccx-agent.rules.yml", 0o644),
    Item("contrib/grafana/ccx-agent.json", "contrib/grafana/ccx-agent.json",
         f"{SHARED}/contrib/grafana/ccx-agent.json", 0o644),
    *(Item(f"scenarios/{n}", f"config/scenarios/{n}", f"{SHARED}/examples/{n}", 0o644)
      for n in SCENARIOS),
    *(Item(f"examples/{n}", f"docs/examples/{n}", f"{SHARED}/examples/{n}", 0o644)
      for n in EXAMPLES),
)  # fmt: skip
#: The console script's link: the path the units' ExecStart= names.
BIN_LINK = "usr/local/bin/ccx-agent"


def source(item: Item) -> Path:
    """The file in the installed wheel, else in the checkout this runs from."""
    shipped = PACKAGE / "share" / item.wheel
    return shipped if shipped.exists() else CHECKOUT / item.checkout


def _console_script() -> Path | None:
    """The ``ccx-agent`` of the environment running this (a virtualenv's bin/)."""
    candidate = Path(sys.prefix) / "bin" / "ccx-agent"
    return candidate if candidate.exists() else None


def _copy(src: Path, dst: Path, mode: int) -> None:
    """Into place atomically: a unit half-written is worse than none. Not durable: a
    copy of a shipped file, made again by running install-files again."""
    atomicfile.write_file(dst, src.read_bytes(), mode=mode, durable=False)


def _service_group(path: Path, root: Path) -> None:
    """The config readable by the service's group, as docs/install.md has it (root
    installing into / where the group exists; a staging --root is left to the package)."""
    if root != Path("/") or os.geteuid() != 0:
        return
    try:
        gid = grp.getgrnam("ccx-agent").gr_gid
    except KeyError:
        return
    os.chown(path, 0, gid)


def install(root: Path) -> Iterator[str]:
    """Lay every file out under ``root``; one line per file, saying what was done."""
    for item in ITEMS:
        src = source(item)
        dst = root / item.target
        if not src.is_file():
            raise FileNotFoundError(f"{src}: missing from this installation of ccx-agent")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if item.config and dst.exists():
            if filecmp.cmp(src, dst, shallow=False):
                yield f"kept      {dst} (the example config, unchanged)"
                continue
            example = dst.with_name(dst.name + ".example")
            _copy(src, example, 0o644)
            yield f"kept      {dst} (edited); the new example is {example}"
            continue
        existed = dst.exists()
        _copy(src, dst, item.mode)
        if item.config:
            _service_group(dst, root)
        yield f"{'replaced' if existed else 'installed':<9} {dst}"
    script = _console_script()
    link = root / BIN_LINK
    if script is not None and (link.is_symlink() or not link.exists()):
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() and Path(os.readlink(link)) == script:
            yield f"kept      {link} -> {script}"
        else:
            tmp = link.with_name(f".{link.name}.tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(script)
            os.replace(tmp, link)
            yield f"linked    {link} -> {script}"
    elif script is not None:
        yield f"kept      {link} (not a link: left alone)"


def main(root: Path, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        for line in install(root):
            print(line, file=out)
    except BrokenPipeError:
        raise  # the entry point's: output cut short by `| head` is no error
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=err)
        return EX_FAILED
    if root == Path("/"):
        print(
            "next: systemd-sysusers; systemd-tmpfiles --create; systemctl daemon-reload "
            "(docs/install.md)",
            file=out,
        )
    return 0
