"""``ccx-agent install-files --root DIR``: every file at its FHS path, ours replaced by an
upgrade, the operator's config never."""

from __future__ import annotations

import io
import os
import stat
import sys
from pathlib import Path

from ccx_agent.cli import install_files
from ccx_agent.cli.install_files import ITEMS, source


def _install(root: Path) -> tuple[int, list[str], str]:
    out, err = io.StringIO(), io.StringIO()
    code = install_files.main(root, out, err)
    return code, out.getvalue().splitlines(), err.getvalue()


def test_every_file_is_laid_out(tmp_path: Path) -> None:
    code, lines, err = _install(tmp_path)
    assert code == 0 and err == ""
    for item in ITEMS:
        target = tmp_path / item.target
        assert target.read_bytes() == source(item).read_bytes(), item.target
        assert stat.S_IMODE(target.stat().st_mode) == item.mode
        assert f"installed {target}" in lines
    assert {i.target for i in ITEMS} >= {
        "usr/local/lib/systemd/system/ccx-agent.service",
        "usr/local/lib/systemd/system/ccx-agent@.service",
        "usr/local/lib/sysusers.d/ccx-agent.conf",
        "usr/local/lib/tmpfiles.d/ccx-agent.conf",
        "etc/ccx-agent/ccx-agent.yaml",
        "usr/local/share/man/man8/ccx-agent.8",
        "usr/local/share/bash-completion/completions/ccx-agent",
        "usr/local/share/zsh/site-functions/_ccx-agent",
    }
    link = tmp_path / "usr/local/bin/ccx-agent"
    assert link.is_symlink() and Path(os.readlink(link)) == Path(sys.prefix) / "bin" / "ccx-agent"


def test_the_monitoring_files_and_every_example_scenario_are_laid_out() -> None:
    """A scenario added to the repository but not to the list would be left out of the
    wheel's install: the lists are checked against the directories."""
    root = Path(__file__).resolve().parent.parent
    shipped = {i.checkout for i in ITEMS}
    for pattern in ("contrib/*/*", "config/scenarios/*.yaml", "docs/examples/*.yaml"):
        for path in root.glob(pattern):
            assert str(path.relative_to(root)) in shipped, path


def test_an_upgrade_replaces_ours_and_never_an_edited_config(tmp_path: Path) -> None:
    assert _install(tmp_path)[0] == 0
    config = tmp_path / "etc/ccx-agent/ccx-agent.yaml"
    unit = tmp_path / "usr/local/lib/systemd/system/ccx-agent.service"
    code, lines, _ = _install(tmp_path)  # unchanged: nothing to say about the config
    assert code == 0 and f"kept      {config} (the example config, unchanged)" in lines
    edited = config.read_text() + "state_dir: /srv/ccx\n"
    config.write_text(edited)
    unit.write_text("stale")
    code, lines, _ = _install(tmp_path)
    assert code == 0
    assert config.read_text() == edited
    example = config.with_name("ccx-agent.yaml.example")
    assert f"kept      {config} (edited); the new example is {example}" in lines
    assert example.read_bytes() == source(ITEMS[5]).read_bytes()
    assert f"replaced  {unit}" in lines and unit.read_text() != "stale"


def test_an_unwritable_root_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = _install(blocker)
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1
