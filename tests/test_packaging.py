"""The offline install, end to end, as docs/install.md does it on a host without a package
index: build the wheelhouse (tools/wheelhouse.py, which ``make wheelhouse`` runs; pip
fetches the dependencies from the package index here), install it into a fresh virtualenv
with ``--no-index`` and no other source of packages, lay the files out with
``install-files --root``, and verify the units it laid out with systemd-analyze.

One test: it builds and installs for real, and prints how long it took (12.5 s on a
2-core machine with pip's cache warm; the build downloads about 10 MB when it is cold)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from tests.test_systemd_unit import _run, _tool

ROOT = Path(__file__).resolve().parent.parent


def _clean_env() -> dict[str, str]:
    """pip with no index, no find-links and no config but what the command line says."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def test_the_wheelhouse_installs_offline_and_lays_out_verifiable_units(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    started = time.monotonic()
    built = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "wheelhouse.py"), "--out", str(tmp_path / "dist")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    archive = Path(built.stdout.strip().splitlines()[-1])
    assert archive.name.startswith("ccx-agent-wheelhouse-") and archive.name.endswith(".tar.gz")
    with tarfile.open(archive) as tar:
        # filter="data" where this Python has it (3.11.4 on): no link or device out of place.
        kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(tmp_path / "offline", **kw)  # type: ignore[arg-type]
    (house,) = (tmp_path / "offline").iterdir()
    wheels = {p.name.split("-")[0].lower() for p in house.glob("*.whl")}
    assert {"ccx_agent", "cryptography", "pydantic", "pydantic_core", "requests"} <= wheels
    assert (house / "INSTALL.txt").is_file()
    build_s = time.monotonic() - started

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = venv / "bin" / "pip"
    installed = subprocess.run(
        [str(pip), "install", "--no-index", "--find-links", str(house), "ccx-agent"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=_clean_env(),
    )
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    ccx = venv / "bin" / "ccx-agent"
    version = subprocess.run([str(ccx), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("ccx-agent ")

    root = tmp_path / "root"
    laid = subprocess.run(
        [str(ccx), "install-files", "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert laid.returncode == 0, laid.stderr
    # From the wheel's package data, not from this checkout.
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert (site / "ccx_agent" / "share" / "systemd" / "ccx-agent@.service").is_file()
    # The monitoring files and the example scenarios too (docs/install.md's table).
    shared = root / "usr/local/share/ccx-agent"
    for name in ("contrib/prometheus/ccx-agent.rules.yml", "contrib/grafana/ccx-agent.json"):
        assert (site / "ccx_agent" / "share" / name).is_file(), name
        assert (shared / name).read_bytes() == (ROOT / name).read_bytes(), name
    examples = [*ROOT.glob("config/scenarios/*.yaml"), *ROOT.glob("docs/examples/*.yaml")]
    assert len(examples) >= 8
    for example in examples:
        assert (shared / "examples" / example.name).read_bytes() == example.read_bytes()
    scenario = shared / "examples" / "more-agents-tomorrow.yaml"
    simulated = subprocess.run(
        [str(ccx), "simulate", str(scenario)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert simulated.returncode == 0, simulated.stderr
    units = root / "usr/local/lib/systemd/system"
    link = root / "usr/local/bin/ccx-agent"
    assert link.resolve() == ccx.resolve()
    assert (root / "usr/local/share/man/man8/ccx-agent.8").is_file()
    assert (root / "etc/ccx-agent/ccx-agent.yaml").is_file()
    # verify checks that ExecStart's program exists: point it at the link install-files
    # made (under --root), everything else as laid out.
    checked = tmp_path / "verify"
    checked.mkdir()
    for name, as_name in (
        ("ccx-agent.service", "ccx-agent.service"),
        ("ccx-agent@.service", "ccx-agent@cluster-a.service"),
    ):
        text = (units / name).read_text()
        assert "ExecStart=/usr/local/bin/ccx-agent " in text
        (checked / as_name).write_text(
            text.replace("ExecStart=/usr/local/bin/ccx-agent ", f"ExecStart={link} ")
        )
        result = _run(analyze, "verify", "--man=no", "--generators=no", str(checked / as_name))
        assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), as_name
    took = time.monotonic() - started
    print(f"wheelhouse built in {build_s:.1f} s; whole offline install test {took:.1f} s")
    assert took < 300
