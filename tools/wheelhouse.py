"""Build ``dist/ccx-agent-wheelhouse-VERSION.tar.gz``: the ccx-agent wheel and a wheel of
every dependency, for hosts with no package index (contact-center hosts often have none).

    python tools/wheelhouse.py [--out dist] [--python 3.12 ...]

The wheels are built or fetched by pip from the package index, for the Python running
this script; ``--python X.Y`` adds binary wheels for another CPython (on x86_64 Linux,
manylinux), so that one wheelhouse serves RHEL 9 and Debian 12 (3.11) and Ubuntu 24.04
(3.12). The archive holds one directory, ``ccx-agent-wheelhouse-VERSION/``, with the
wheels and ``INSTALL.txt``; docs/install.md installs from it with ``pip install
--no-index --find-links``.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

INSTALL = """\
ccx-agent {version}: an offline install (docs/install.md has the whole procedure)

  python3 -m venv /opt/ccx-agent            # python3.11 on RHEL 9 (dnf install python3.11)
  /opt/ccx-agent/bin/pip install --no-index --find-links {name} ccx-agent
  /opt/ccx-agent/bin/ccx-agent install-files
  systemd-sysusers && systemd-tmpfiles --create && systemctl daemon-reload

Wheels for CPython {pythons} on {machine} Linux.
"""


def version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def build(out: Path, pythons: list[str]) -> Path:
    ver = version()
    name = f"ccx-agent-wheelhouse-{ver}"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wheelhouse-") as tmp:
        wheels = Path(tmp) / name
        wheels.mkdir()
        # The project's wheel and every dependency's, for this interpreter.
        _pip("wheel", "--quiet", "--wheel-dir", str(wheels), str(ROOT))
        ours = sorted(wheels.glob("ccx_agent-*.whl"))
        assert ours, "pip wheel made no ccx-agent wheel"
        machine = platform.machine()
        for py in pythons:
            abi = "cp" + py.replace(".", "")
            _pip(
                "download",
                "--quiet",
                "--only-binary=:all:",
                "--dest",
                str(wheels),
                "--python-version",
                py,
                "--implementation",
                "cp",
                "--abi",
                abi,
                "--abi",
                "abi3",
                "--abi",
                "none",
                "--platform",
                f"manylinux_2_34_{machine}",
                "--platform",
                f"manylinux_2_28_{machine}",
                "--platform",
                f"manylinux_2_17_{machine}",
                "--platform",
                f"manylinux2014_{machine}",
                "--platform",
                "any",
                str(ours[0]),
            )
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        (wheels / "INSTALL.txt").write_text(
            INSTALL.format(
                version=ver,
                name=name,
                pythons=", ".join(dict.fromkeys([here, *pythons])),
                machine=machine,
            ),
            encoding="utf-8",
        )
        archive = out / f"{name}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(wheels, arcname=name)
    return archive


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "dist", help="where to write it (dist/)")
    p.add_argument(
        "--python",
        action="append",
        default=[],
        metavar="X.Y",
        help="also binary wheels for this CPython version (repeatable)",
    )
    args = p.parse_args(argv)
    archive = build(args.out, args.python)
    print(archive)
    return 0


if __name__ == "__main__":
    sys.exit(main())
