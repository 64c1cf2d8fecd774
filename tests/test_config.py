"""The config file: the error corpus, the example file, path resolution, the CLI contract.

``check-config`` prints ``OK``, or one line per problem (``PATH:LINE: dotted.key: message``,
every problem at once) and exits 78. Bad input never gives a traceback.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from ccx_agent.cli import commands
from ccx_agent.cli.main import main
from ccx_agent.config import configpath
from ccx_agent.config import schema as config
from ccx_agent.config.schema import CommonConfig, Config, FileSource, check, load
from ccx_agent.config.yamldoc import EX_CONFIG, DocumentError, field_paths, parse_yaml
from ccx_agent.licensing.alerts import Style
from ccx_agent.licensing.catalogue import Feature, LicenseType
from tests import users

ROOT = Path(__file__).resolve().parents[1]
BAD = Path(__file__).resolve().parent / "data" / "bad_configs"
EXAMPLE = ROOT / "config" / "ccx-agent.yaml"
AGENTS = Path("/etc/ccx-agent/agents.json")

#: One line per expected problem, without the ``PATH:`` prefix: ``LINE: key: message``.
EXPECTED: dict[str, list[str]] = {
    # --- keys that do not exist ---------------------------------------------------------
    "unknown_key_typo.yaml": ["6: report.intervall: unknown key (did you mean 'interval'?)"],
    "unknown_top_level_key.yaml": ["5: licence: unknown key (did you mean 'license'?)"],
    "misplaced_key.yaml": ["7: jitter: unknown key here (did you mean report.jitter?)"],
    # --- wrong types --------------------------------------------------------------------
    "wrong_type_bool.yaml": ["7: license.allow_overage: must be true or false, got 'disabled'"],
    "quoted_boolean.yaml": [
        "6: license.allow_overage: must be true or false (without quotes), got 'false'"
    ],
    "wrong_type_int.yaml": ["6: compliance.ooc_threshold: must be a whole number, got 'five'"],
    "quoted_number.yaml": [
        "6: compliance.ooc_threshold: must be a whole number (without quotes), got '5'"
    ],
    "premium_features_not_list.yaml": [
        "6: license.premium_features: must be a list, like [chat, email], got 'chat, email'"
    ],
    "node_id_number.yaml": ["6: alerts.node_id: must be text, got 1001 (put it in quotes: '1001')"],
    "section_is_list.yaml": ["5: report: must be a mapping of keys (key: value lines), got a list"],
    "source_not_mapping.yaml": [
        "2: source: must be a mapping of keys (key: value lines), got '/etc/ccx-agent/agents.json'"
    ],
    # --- durations ----------------------------------------------------------------------
    "negative_duration.yaml": ["7: report.jitter: must not be negative, got '-30s'"],
    "bare_number_duration.yaml": [
        "6: report.interval: needs a unit (s, m, h, d or w), like 15m or 15s: got 15"
    ],
    "zero_duration.yaml": ["6: sample.interval: must be longer than 0s, got '0s'"],
    "garbage_duration.yaml": [
        "6: id_certificate.lifetime: must be a duration like 90s, 15m, 2h, 30d or 1h30m, "
        "got '1 year'"
    ],
    # --- numbers and names out of range -------------------------------------------------
    "threshold_zero.yaml": ["6: compliance.ooc_threshold: must be at least 1, got 0"],
    "warning_day_zero.yaml": ["10: evaluation.warning_days[3]: must be at least 1, got 0"],
    "unknown_license_type.yaml": [
        "6: license.type: unknown license type 'perpetual' (did you mean 'perpetual-premium'?): "
        "must be one of flex, flex-hcs, perpetual-premium, perpetual-enhanced, nfr"
    ],
    "unknown_premium_feature.yaml": [
        "10: license.premium_features[2]: unknown premium feature 'voice': "
        "must be one of chat, email, outbound"
    ],
    "duplicate_premium_feature.yaml": [
        "6: license.premium_features: lists the premium feature 'chat' twice"
    ],
    "alert_styles_empty.yaml": ["6: alerts.styles: must name at least one style: mcvd, uc"],
    "alert_style_unknown.yaml": [
        "6: alerts.styles[1]: unknown alert style 'rfc5424': must be one of mcvd, uc"
    ],
    # --- the shape of the file ----------------------------------------------------------
    "file_is_list.yaml": [
        "2: (root): the file must be a mapping of keys (key: value lines), got a list"
    ],
    "file_is_scalar.yaml": [
        "2: (root): the file must be a mapping of keys (key: value lines), "
        "got '/etc/ccx-agent/agents.json'"
    ],
    "empty_file.yaml": ["1: source: required key is missing"],
    "non_utf8.yaml": ["6: (file): not UTF-8 text (byte 0xe9): save as UTF-8"],
    # --- YAML syntax --------------------------------------------------------------------
    "yaml_bad_indentation.yaml": [
        "4: (yaml): unexpected ':' (is this line indented wrongly, or does a value need quotes?)"
    ],
    "yaml_tab.yaml": ["6: (yaml): a tab cannot indent YAML: indent with spaces"],
    "yaml_unclosed_bracket.yaml": [
        "7: (yaml): expected ',' or ']', but got ':' (in the [...] list opened on line 6)"
    ],
    "yaml_unclosed_quote.yaml": [
        "7: (yaml): the quoted text opened on this line is never closed (check the lines above too)"
    ],
    "yaml_two_documents.yaml": [
        "5: (yaml): a second YAML document ('---') is not allowed in this file"
    ],
    "duplicate_key.yaml": ["8: report.interval: duplicate key (the last one would win)"],
    # --- the source ---------------------------------------------------------------------
    "missing_source.yaml": ["2: source: required key is missing"],
    "source_without_path.yaml": ["2: source.path: required key is missing"],
    "source_without_kind.yaml": ["2: source.kind: required key is missing"],
    "unknown_source_kind.yaml": [
        "3: source.kind: unknown source kind 'json': must be one of file, uccx, command, scripted"
    ],
    "empty_source_path.yaml": ["4: source.path: must be a path, got an empty string ('')"],
    "empty_state_dir.yaml": ["2: state_dir: must be a path, got an empty string ('')"],
    "source_uccx_unknown_key.yaml": [
        "4: source.uccx.user: required key is missing",
        "6: source.uccx.usr: unknown key (did you mean 'user'?)",
        "8: source.path: unknown key (known keys here: kind, uccx, finesse)",
    ],
    "source_uccx_http_url.yaml": [
        "5: source.uccx.url: must be a URL starting with https://, got 'http://uccx.example.com'",
        "8: source.finesse.url: must not hold a user name or password: use user and password_file",
    ],
    "source_uccx_two_passwords.yaml": [
        "4: source.uccx: give password_file or password, not both (keep password_file)"
    ],
    "source_uccx_without_settings.yaml": [
        "2: source: required key 'uccx' is missing (kind: uccx needs at least uccx.url (or "
        "uccx.nodes) and uccx.user)"
    ],
    "source_uccx_url_and_nodes.yaml": [
        "4: source.uccx: give url (one node) or nodes (the HA pair), not both"
    ],
    "source_uccx_no_node.yaml": [
        "6: source.uccx.nodes: must not be empty: give one or two nodes (publisher, subscriber)"
    ],
    "source_uccx_bad_nodes.yaml": [
        "5: source.uccx.nodes: lists 3 nodes: a UCCX cluster has one or two (publisher, "
        "subscriber)",
        "11: source.finesse.nodes: names the same node twice ('https://UCCX-A.example.com:443', "
        "'https://uccx-a.example.com/finesse')",
    ],
    "source_finesse_nodes_mismatch.yaml": [
        "8: source.finesse.url: names 1 Finesse node(s) for 2 UCCX node(s): give one Finesse "
        "per UCCX node, in the same order, in source.finesse.nodes (or leave it unset: the "
        "UCCX hosts)"
    ],
    "source_command_empty.yaml": [
        "4: source.command: must not be empty",
        "5: source.timeout: needs a unit (s, m, h, d or w), like 30m or 30s: got 30",
    ],
    # --- rules that span keys -----------------------------------------------------------
    "sample_longer_than_report.yaml": [
        "8: sample.interval: must not be longer than report.interval"
    ],
    "jitter_not_shorter_than_report.yaml": [
        "7: report.jitter: must be shorter than report.interval"
    ],
    "renew_after_not_before_lifetime.yaml": [
        "7: id_certificate.renew_after: must be shorter than id_certificate.lifetime"
    ],
    "authorization_renew_after_validity.yaml": [
        "6: authorization.renew_after: must be shorter than authorization.validity",
        "8: authorization.expiry_warning: must not be longer than authorization.validity",
    ],
    "warning_day_beyond_period.yaml": [
        "7: evaluation.warning_days[0]: must be fewer days than evaluation.period"
    ],
    # --- everything at once -------------------------------------------------------------
    "many_problems.yaml": [
        "7: license.type: unknown license type 'flexx' (did you mean 'flex'?): "
        "must be one of flex, flex-hcs, perpetual-premium, perpetual-enhanced, nfr",
        "8: license.premium_features[1]: unknown premium feature 'voice': "
        "must be one of chat, email, outbound",
        "10: report.interval: needs a unit (s, m, h, d or w), like 15m or 15s: got 15",
        "11: report.jiter: unknown key (did you mean 'jitter'?)",
        "15: compliance.ooc_threshold: must be at least 1, got 0",
        "18: evaluation.warning_days[0]: must be fewer days than evaluation.period",
        "18: evaluation.warning_days[1]: must be fewer days than evaluation.period",
        "21: alerts.styles: duplicate key (the last one would win)",
        "23: clock.jump_threshold: must not be negative, got '-1d'",
    ],
}

LINE = re.compile(r"^(?P<path>.+?):(?P<line>[1-9]\d*): (?P<key>.+?): (?P<message>.+)$")


def run_check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["--config", str(path), "check-config"])
    out, err = capsys.readouterr()
    return code, out, err


def defaults() -> Config:
    return Config(source=FileSource(kind="file", path=AGENTS))


def write(tmp_path: Path, text: str, name: str = "ccx-agent.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = "source:\n  kind: file\n  path: /etc/ccx-agent/agents.json\n"
SNAPSHOT = Path(__file__).resolve().parent / "data" / "snapshots" / "contract.json"
#: A config that passes check-config on any host: its snapshot exists, and its state
#: directory does not (check-config never creates it).
RUNNABLE = f"state_dir: state\nsource:\n  kind: file\n  path: {SNAPSHOT}\n"


def runnable_example(tmp_path: Path) -> Path:
    """The example file, its snapshot and state directory moved to where this host has
    them (the shipped file names /etc/ccx-agent/agents.json)."""
    text = EXAMPLE.read_text(encoding="utf-8")
    assert text.count(f"path: {AGENTS}\n") == 1
    assert text.count("\nstate_dir: /var/lib/ccx-agent\n") == 1
    text = text.replace(f"path: {AGENTS}\n", f"path: {SNAPSHOT}\n")
    text = text.replace("\nstate_dir: /var/lib/ccx-agent\n", f"\nstate_dir: {tmp_path / 'state'}\n")
    return write(tmp_path, text, "example.yaml")


# --- the corpus of bad files -------------------------------------------------------------


def test_the_corpus_is_complete() -> None:
    """Every bad file has its expected lines, and every expectation has its file."""
    on_disk = {p.name for p in BAD.iterdir()}
    assert on_disk == set(EXPECTED)
    assert len(on_disk) >= 30


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_config(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = BAD / name
    code, out, err = run_check(path, capsys)
    assert code == EX_CONFIG == 78
    assert out == ""
    assert err.splitlines() == [f"{path}:{line}" for line in EXPECTED[name]]
    for line in err.splitlines():
        assert LINE.match(line), line


def test_every_problem_is_reported_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    """Type errors, unknown keys, a duplicate key and a cross-key rule, all in one run."""
    _, _, err = run_check(BAD / "many_problems.yaml", capsys)
    keys = [LINE.match(line).group("key") for line in err.splitlines()]  # type: ignore[union-attr]
    assert len(keys) == 9
    assert {"license.type", "report.jiter", "alerts.styles", "clock.jump_threshold"} <= set(keys)
    # In line order, as a compiler would list them.
    lines = [int(LINE.match(x).group("line")) for x in err.splitlines()]  # type: ignore[union-attr]
    assert lines == sorted(lines)


def test_a_rule_on_an_invalid_key_is_not_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    """many_problems has sample.interval 30m: report.interval is wrong, so no echo of it."""
    _, _, err = run_check(BAD / "many_problems.yaml", capsys)
    assert "sample.interval" not in err


def test_cross_rules_still_run_beside_type_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL + "compliance:\n  ooc_threshold: many\nsample:\n  interval: 1h\n",
    )
    with pytest.raises(DocumentError) as caught:
        load(path)
    assert [str(p).removeprefix(f"{path}:") for p in caught.value.problems] == [
        "5: compliance.ooc_threshold: must be a whole number, got 'many'",
        "7: sample.interval: must not be longer than report.interval",
    ]


# --- the CLI as a real process ----------------------------------------------------------


def ccx_agent() -> list[str]:
    script = Path(sys.executable).parent / "ccx-agent"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "ccx_agent"]  # pragma: no cover - no console script


def run_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ccx_agent(), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "name",
    [
        "many_problems.yaml",
        "non_utf8.yaml",
        "yaml_tab.yaml",
        "yaml_unclosed_quote.yaml",
        "file_is_scalar.yaml",
        "unknown_source_kind.yaml",
        "empty_file.yaml",
    ],
)
def test_process_exits_78_without_traceback(name: str) -> None:
    path = BAD / name
    done = run_process("--config", str(path), "check-config")
    assert done.returncode == 78
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [f"{path}:{line}" for line in EXPECTED[name]]


def test_process_an_unknown_yaml_bool_is_one_line_and_78(tmp_path: Path) -> None:
    """``!!bool maybe`` was a KeyError traceback in check-config and run."""
    path = tmp_path / "c.yaml"
    text = runnable_example(tmp_path).read_text(encoding="utf-8")
    assert text.count("\n  allow_overage: true\n") == 1
    path.write_text(
        text.replace("\n  allow_overage: true\n", "\n  allow_overage: !!bool maybe\n"),
        encoding="utf-8",
    )
    line = path.read_text(encoding="utf-8").splitlines().index("  allow_overage: !!bool maybe") + 1
    for command in ("check-config", "run"):
        done = run_process("--config", str(path), command)
        assert done.returncode == 78, done.stderr
        assert "Traceback" not in done.stderr
        assert done.stderr.splitlines()[0] == (
            f"{path}:{line}: license.allow_overage: not a valid !!bool value "
            "('maybe' is not one of true/false, yes/no, on/off)"
        )


def test_process_missing_file_and_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    done = run_process("--config", str(missing), "check-config")
    assert done.returncode == 78
    assert "Traceback" not in done.stderr
    assert done.stderr == (
        f"{missing}:1: (file): no such file "
        "(give the config file with --config PATH or $CCX_AGENT_CONFIG)\n"
    )
    done = run_process("--config", str(tmp_path), "check-config")
    assert done.returncode == 78
    assert done.stderr == f"{tmp_path}:1: (file): cannot read: Is a directory\n"


def test_process_good_config_prints_ok(tmp_path: Path) -> None:
    done = run_process("--config", str(runnable_example(tmp_path)), "check-config")
    assert (done.returncode, done.stdout, done.stderr) == (0, "OK\n", "")


def test_process_reads_the_environment_variable(tmp_path: Path) -> None:
    example = runnable_example(tmp_path)
    done = run_process("check-config", env={"CCX_AGENT_CONFIG": str(example)})
    assert (done.returncode, done.stdout, done.stderr) == (0, "OK\n", "")


# --- path resolution ----------------------------------------------------------------------


def test_default_path_is_etc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CCX_AGENT_CONFIG", raising=False)
    assert Path("/etc/ccx-agent/ccx-agent.yaml") == config.DEFAULT_PATH
    assert config.default_path() == Path("/etc/ccx-agent/ccx-agent.yaml")
    monkeypatch.setenv("CCX_AGENT_CONFIG", "")  # set but empty: as if unset
    assert config.default_path() == Path("/etc/ccx-agent/ccx-agent.yaml")


def test_without_config_the_default_path_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CCX_AGENT_CONFIG", raising=False)
    default = tmp_path / "etc" / "ccx-agent.yaml"
    monkeypatch.setattr(configpath, "DEFAULT_PATH", default)
    assert main(["check-config"]) == 78
    assert capsys.readouterr().err.startswith(f"{default}:1: (file): no such file")
    default.parent.mkdir()
    default.write_text(RUNNABLE, encoding="utf-8")
    assert main(["check-config"]) == 0
    assert capsys.readouterr().out == "OK\n"


def test_environment_variable_names_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(configpath, "DEFAULT_PATH", tmp_path / "never-read.yaml")
    bad = BAD / "threshold_zero.yaml"
    monkeypatch.setenv("CCX_AGENT_CONFIG", str(bad))
    assert main(["check-config"]) == 78
    assert capsys.readouterr().err == f"{bad}:{EXPECTED['threshold_zero.yaml'][0]}\n"
    monkeypatch.setenv("CCX_AGENT_CONFIG", str(runnable_example(tmp_path)))
    assert main(["check-config"]) == 0
    assert capsys.readouterr().out == "OK\n"


def test_config_option_beats_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CCX_AGENT_CONFIG", str(BAD / "threshold_zero.yaml"))
    assert main(["--config", str(runnable_example(tmp_path)), "check-config"]) == 0
    assert capsys.readouterr() == ("OK\n", "")


def test_missing_file_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "ccx-agent.yaml"
    code, out, err = run_check(missing, capsys)
    assert (code, out) == (78, "")
    assert err == (
        f"{missing}:1: (file): no such file "
        "(give the config file with --config PATH or $CCX_AGENT_CONFIG)\n"
    )


# --- the example file ---------------------------------------------------------------------


def test_example_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_check(runnable_example(tmp_path), capsys) == (0, "OK\n", "")


@pytest.mark.skipif(AGENTS.exists(), reason=f"this host has {AGENTS}")
def test_example_as_shipped_names_its_missing_snapshot(capsys: pytest.CaptureFixture[str]) -> None:
    """Valid, but not runnable here: check-config says what ``run`` would miss."""
    line = EXAMPLE.read_text(encoding="utf-8").splitlines().index(f"  path: {AGENTS}") + 1
    assert run_check(EXAMPLE, capsys) == (
        78,
        "",
        f"{EXAMPLE}:{line}: source.path: {AGENTS}: no such file\n",
    )


def test_example_equals_the_defaults() -> None:
    """The example shows the defaults: it can never drift from the code."""
    assert load(EXAMPLE) == defaults()


def _leaf_and_section_paths() -> list[tuple[str, ...]]:
    return [tuple(map(str, p)) for p in field_paths(Config)]


def test_example_has_every_key() -> None:
    doc = parse_yaml(EXAMPLE.read_text(encoding="utf-8"), str(EXAMPLE))
    missing = [".".join(p) for p in _leaf_and_section_paths() if p not in doc.lines]
    assert missing == []


def test_every_model_field_is_walked() -> None:
    """field_paths reaches every section model (a new section would be seen too)."""
    paths = {".".join(p) for p in _leaf_and_section_paths()}
    sections = {
        name
        for name, info in Config.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
    }
    for section in sections:
        model = Config.model_fields[section].annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for field in model.model_fields:
            assert f"{section}.{field}" in paths
    assert {"state_dir", "source.kind", "source.path", "alerts.styles"} <= paths


def test_example_comments_every_key_with_its_default() -> None:
    """Each key line is preceded by a comment block that states its default."""
    text = EXAMPLE.read_text(encoding="utf-8").splitlines()
    doc = parse_yaml("\n".join(text), str(EXAMPLE))
    sections = {"license", "report", "sample", "compliance", "evaluation", "id_certificate"}
    sections |= {"authorization", "alerts", "clock", "history", "source", "transport", "identity"}
    sections |= {"metrics", "monitoring"}
    for path in _leaf_and_section_paths():
        if (path[0] in sections and len(path) == 1) or path in (
            ("alerts", "syslog"),
            ("metrics", "tls"),
        ):
            continue
        line = doc.lines[path]
        block: list[str] = []
        i = line - 2
        while i >= 0 and text[i].strip().startswith("#"):
            block.append(text[i])
            i -= 1
        assert block, f"{'.'.join(path)} has no comment"
        if path[0] != "source":  # the source has no default: it says so instead
            assert any("Default:" in c for c in block), f"{'.'.join(path)}: no default given"


def test_example_defaults_in_comments_match_the_values() -> None:
    """``# Default: X`` says exactly what the line below it sets (empty strings aside)."""
    text = EXAMPLE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(text):
        m = re.match(r"\s*# Default: (.*)$", line)
        if not m:
            continue
        value_line = text[i + 1]
        value = value_line.split(":", 1)[1].strip()
        stated = m.group(1)
        if stated.startswith('""'):
            assert value == '""'
        else:
            assert value == stated, (i + 1, stated, value)


# --- loading and values -------------------------------------------------------------------


def test_minimal_file_is_all_defaults(tmp_path: Path) -> None:
    assert load(write(tmp_path, MINIMAL)) == defaults()


def test_section_with_every_key_commented_out_is_defaults(tmp_path: Path) -> None:
    text = MINIMAL + "report:\n  # interval: 30m\nalerts:\n"
    assert load(write(tmp_path, text)) == defaults()


def test_values_are_read(tmp_path: Path) -> None:
    text = MINIMAL + (
        "state_dir: /srv/ccx\n"
        "license:\n  type: perpetual-enhanced\n  premium_features: [email]\n"
        "  allow_overage: false\n"
        "report:\n  interval: 1h30m\n  jitter: 0s\n"
        "evaluation:\n  warning_days: [10, 3]\n"
        "alerts:\n  styles: [uc]\n  node_id: '1001'\n"
    )
    cfg = load(write(tmp_path, text))
    assert cfg.state_dir == Path("/srv/ccx")
    assert cfg.license.type is LicenseType.PERPETUAL_ENHANCED
    assert cfg.license.premium_features == [Feature.EMAIL]
    assert cfg.license.allow_overage is False
    assert cfg.report.interval == timedelta(hours=1, minutes=30)
    assert cfg.report.jitter == timedelta(0)
    assert cfg.alerts.styles == [Style.UC]
    assert cfg.alerts.node_id == "1001"
    assert cfg.timers().evaluation_warning_days == (10, 3)
    assert cfg.rules().interval == timedelta(hours=1, minutes=30)


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load(path) == defaults()


def test_duplicate_key_is_reported_with_the_other_problems(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "report:\n  jitter: 1m\n  jitter: 2m\nclock: 5\n")
    with pytest.raises(DocumentError) as caught:
        load(path)
    assert [f"{p.line}: {p.key}: {p.message}" for p in caught.value.problems] == [
        "6: report.jitter: duplicate key (the last one would win)",
        "7: clock: must be a mapping of keys (key: value lines), got 5",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'alerts:\n  app_id: "two\\nlines"\n',
            "5: alerts.app_id: must be one line of text, without control characters",
        ),
        (
            "report:\n  interval: 200y\n",
            "5: report.interval: must be a duration like 90s, 15m, 2h, 30d or 1h30m, got '200y'",
        ),
        (
            "report:\n  interval: 99999999d\n",
            "5: report.interval: must be at most 36500d (100 years), got '99999999d'",
        ),
        (
            "evaluation:\n  period: 30\n",
            "5: evaluation.period: needs a unit (s, m, h, d or w), like 30m or 30s: got 30",
        ),
        (
            "report:\n  interval: 1.5\n",
            "5: report.interval: must be a duration like 90s, 15m, "
            "2h, 30d or 1h30m (whole numbers with units), got 1.5",
        ),
        (
            "report:\n  jitter: yes\n",
            "5: report.jitter: must be a duration like 90s, 15m, 2h, 30d or 1h30m, got true",
        ),
        (
            "report:\n  interval:\n",
            "5: report.interval: must be a duration like 90s, 15m, 2h, 30d or 1h30m, got nothing (null)",
        ),
        ("state_dir: 2024-01-01\n", "4: state_dir: must be a path, got the date 2024-01-01"),
        ("1: x\n", "4: 1: unknown key"),
        ("alerts:\n  styles: mcvd\n", "5: alerts.styles: must be a list, like [mcvd], got 'mcvd'"),
        ("alerts:\n  styles: [uc, uc]\n", "5: alerts.styles: lists the style 'uc' twice"),
        (
            "license:\n  type: 5\n",
            "5: license.type: must be one of flex, flex-hcs, "
            "perpetual-premium, perpetual-enhanced, nfr, got 5",
        ),
        (
            "interval: 1m\n",
            "4: interval: unknown key here (did you mean report.interval or sample.interval?)",
        ),
        ("report:\n  foo: 1\n", "5: report.foo: unknown key (known keys here: interval, jitter)"),
    ],
)
def test_more_messages(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, MINIMAL + text)
    with pytest.raises(DocumentError) as caught:
        load(path)
    assert [f"{p.line}: {p.key}: {p.message}" for p in caught.value.problems] == [expected]


def test_python_construction_is_validated_too() -> None:
    with pytest.raises(ValidationError):
        CommonConfig.model_validate({"report": {"jitter": timedelta(seconds=-1)}})
    with pytest.raises(ValidationError):
        Config.model_validate({"source": {"kind": "file", "path": AGENTS}, "bogus": 1})


def test_cross_rules_name_the_key_to_change_and_the_key_it_is_held_to() -> None:
    cfg = CommonConfig.model_validate(
        {"sample": {"interval": "30m"}, "evaluation": {"period": "20d", "warning_days": [30, 7]}}
    )
    assert cfg.cross_rules() == [
        (
            ("sample", "interval"),
            ("report", "interval"),
            "must not be longer than report.interval",
        ),
        (
            ("evaluation", "warning_days", "0"),
            ("evaluation", "period"),
            "must be fewer days than evaluation.period",
        ),
    ]
    assert defaults().cross_rules() == []


def test_check_under_a_prefix_reports_full_keys() -> None:
    """What a scenario file does: validate its ``config:`` mapping as a CommonConfig."""
    doc = parse_yaml(
        "name: x\nconfig:\n  report:\n    interval: 5m\n  sample:\n"
        "    interval: 10m\n  clock: {jump: 1d}\n",
        "s.yaml",
    )
    with pytest.raises(DocumentError) as caught:
        check(CommonConfig, doc, ("config",))
    assert [str(p) for p in caught.value.problems] == [
        "s.yaml:6: config.sample.interval: must not be longer than report.interval",
        "s.yaml:7: config.clock.jump: unknown key (did you mean 'jump_threshold'?)",
    ]


# --- never a traceback --------------------------------------------------------------------

_FIELDS = sorted({str(p[-1]) for p in field_paths(Config)} | {"kind", "path", "x"})
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["15m", "0s", "-1d", "30d", "1h30m", "flex", "chat", "mcvd", "", "file"]),
    st.text(max_size=8),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(_FIELDS), inner, max_size=5),
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_FIELDS), _VALUES, max_size=8))
def test_any_data_gives_ok_or_problem_lines(data: dict[str, object]) -> None:
    text = yaml.safe_dump(data)
    try:
        check(Config, parse_yaml(text, "f.yaml", keep_going=True))
    except DocumentError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert LINE.match(str(problem)), str(problem)
            assert 1 <= problem.line <= text.count("\n") + 1


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list(" \t\n:-[]{}\"'#&*!|>?,%@`abc1\x00\xe9")), max_size=60)
)
def test_any_text_gives_ok_or_problem_lines(text: str) -> None:
    try:
        check(Config, parse_yaml(text, "f.yaml", keep_going=True))
    except DocumentError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert LINE.match(str(problem)), str(problem)


def test_relative_paths_are_resolved_beside_the_config_file(tmp_path, monkeypatch):
    from ccx_agent.config import schema as config_mod

    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    path = conf_dir / "ccx-agent.yaml"
    path.write_text("state_dir: state\nsource: {kind: file, path: agents.json}\n")
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    cfg = config_mod.load(path)
    assert cfg.state_dir == conf_dir / "state"
    assert cfg.source.path == conf_dir / "agents.json"
    absolute = conf_dir / "abs.yaml"
    absolute.write_text("state_dir: /var/lib/x\nsource: {kind: file, path: /srv/a.json}\n")
    cfg = config_mod.load(absolute)
    assert str(cfg.state_dir) == "/var/lib/x" and str(cfg.source.path) == "/srv/a.json"


# --- transport and identity ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "transport:\n  url: http://ssm.example.com/\n",
            "transport.url: must be a URL starting with https://",
        ),
        ("transport:\n  url: https:///x\n", "transport.url: must name a host"),
        (
            "transport:\n  url: https://ssm.example.com/\n",
            "transport.trust_anchor: must be set (or transport.ca_bundle) when transport.url is set",
        ),
        (
            "transport:\n  proxy: ftp://p:21\n",
            "transport.proxy: must be a URL starting with http:// or https://",
        ),
        ("transport:\n  attempts: 0\n", "transport.attempts:"),
        ("transport:\n  mode: sideways\n", "transport.mode:"),
        (
            "transport:\n  mode: offline\n",
            "transport.trust_anchor: must be set (or transport.ca_bundle) when transport.mode "
            "is offline",
        ),
        ('identity:\n  pid: "a\\nb"\n', "identity.pid: must be one line of text"),
    ],
)
def test_transport_and_identity_problems(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, MINIMAL + text)
    with pytest.raises(DocumentError) as info:
        load(path)
    assert any(expected in str(p) for p in info.value.problems), info.value.problems


def test_transport_paths_resolve_beside_the_config_and_anchor_defaults_to_ca_bundle(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        MINIMAL + "transport:\n  url: https://127.0.0.1:8443/\n  ca_bundle: ca.pem\n",
    )
    cfg = load(path)
    assert cfg.transport.ca_bundle == tmp_path / "ca.pem"
    assert cfg.transport.anchor() == tmp_path / "ca.pem"
    assert cfg.transport.url == "https://127.0.0.1:8443/"


def test_unset_transport_is_none() -> None:
    cfg = defaults()
    assert cfg.transport.url is None and cfg.transport.ca_bundle is None
    assert cfg.identity.serial_number()


def test_check_config_warns_about_an_inline_password_without_showing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        "source:\n  kind: uccx\n  uccx:\n    url: https://uccx.example.com\n"
        "    user: admin\n    password: hunter2-secret\n",
    )
    assert commands.check_config(path) == 0
    captured = capsys.readouterr()
    assert captured.out == "OK\n"
    assert captured.err.startswith("warning: source.uccx.password: ")
    assert "hunter2" not in captured.out + captured.err


def test_history_retention_is_at_least_two_report_intervals(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "source: {kind: file, path: a.json}\nreport: {interval: 1h}\nhistory:\n  retention: 90m\n",
        encoding="utf-8",
    )
    with pytest.raises(DocumentError) as info:
        load(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:4: history.retention: must be at least twice report.interval"
    ]
    path.write_text("source: {kind: file, path: a.json}\nhistory: {retention: 2h}\n")
    assert load(path).history.retention == timedelta(hours=2)


# --- what `run` will need: check-config checks the files and the state directory --------

#: Each file key, and a config that names a missing file there.
MISSING = "/nonexistent/ccx-agent-test/file.pem"
NAMED_FILES: dict[str, str] = {
    "transport.ca_bundle": (
        f"transport:\n  url: https://ssm.example.com/\n  ca_bundle: {MISSING}\n"
    ),
    "transport.trust_anchor": (
        f"transport:\n  url: https://ssm.example.com/\n  trust_anchor: {MISSING}\n"
    ),
    "alerts.syslog.ca_bundle": (
        f"alerts:\n  syslog:\n    target: tls://127.0.0.1:6514\n    ca_bundle: {MISSING}\n"
    ),
    "source.uccx.password_file": (
        "source:\n  kind: uccx\n  uccx:\n    url: https://uccx.example.com\n    user: u\n"
        f"    password_file: {MISSING}\n"
    ),
    "source.uccx.ca_bundle": (
        "source:\n  kind: uccx\n  uccx:\n    url: https://uccx.example.com\n    user: u\n"
        f"    ca_bundle: {MISSING}\n"
    ),
    "source.finesse.password_file": (
        "source:\n  kind: uccx\n  uccx:\n    url: https://uccx.example.com\n    user: u\n"
        f"  finesse:\n    password_file: {MISSING}\n"
    ),
    "source.command[0]": f"source:\n  kind: command\n  command: [{MISSING}, --all]\n",
    "source.path": f"source:\n  kind: file\n  path: {MISSING}\n",
}


def _with_source(text: str) -> str:
    """``text`` with the runnable file source unless it brings its own, state dir first."""
    head = "state_dir: state\n"
    return head + text if text.startswith("source:") else RUNNABLE + text


@pytest.mark.parametrize("key", sorted(NAMED_FILES))
def test_a_missing_file_is_named_by_key_and_line(
    key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, _with_source(NAMED_FILES[key]))
    # The line that names the file (a list item is on its list's line here).
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if MISSING in t)
    load(path)  # valid: only what run needs is missing
    assert run_check(path, capsys) == (78, "", f"{path}:{line}: {key}: {MISSING}: no such file\n")


def test_every_missing_file_at_once_in_line_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        "state_dir: state\nalerts:\n  syslog:\n    ca_bundle: syslog-ca.pem\n"
        "transport:\n  ca_bundle: ca.pem\n  trust_anchor: anchor.pem\n"
        "source:\n  kind: file\n  path: agents.json\n",
    )
    code, out, err = run_check(path, capsys)
    assert (code, out) == (78, "")
    # Relative paths are beside the config file, and named so.
    assert err.splitlines() == [
        f"{path}:4: alerts.syslog.ca_bundle: {tmp_path / 'syslog-ca.pem'}: no such file",
        f"{path}:6: transport.ca_bundle: {tmp_path / 'ca.pem'}: no such file",
        f"{path}:7: transport.trust_anchor: {tmp_path / 'anchor.pem'}: no such file",
        f"{path}:10: source.path: {tmp_path / 'agents.json'}: no such file",
    ]


def test_files_that_are_there_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("ca.pem", "uccx-password", "finesse-password"):
        write(tmp_path, "x\n", name)
    path = write(
        tmp_path,
        "transport:\n  url: https://ssm.example.com/\n  ca_bundle: ca.pem\n"
        "source:\n  kind: uccx\n  uccx:\n    url: https://uccx.example.com\n    user: u\n"
        "    password_file: uccx-password\n    ca_bundle: ca.pem\n"
        "  finesse:\n    password_file: finesse-password\n",
    )
    assert run_check(path, capsys) == (0, "OK\n", "")


def test_a_snapshot_that_is_not_a_regular_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing is opened: checking a FIFO must not block as reading it would."""
    fifo = tmp_path / "agents.fifo"
    os.mkfifo(fifo)
    for target, what in ((fifo, "a FIFO (named pipe)"), (tmp_path, "a directory")):
        path = write(tmp_path, f"source:\n  kind: file\n  path: {target}\n")
        assert run_check(path, capsys) == (
            78,
            "",
            f"{path}:3: source.path: {target}: {what}, not a regular file\n",
        )
    (tmp_path / "zero").symlink_to("/dev/zero")
    path = write(tmp_path, "transport:\n  ca_bundle: zero\n" + RUNNABLE)
    assert run_check(path, capsys)[2] == (
        f"{path}:2: transport.ca_bundle: {tmp_path / 'zero'}: a character device, "
        "not a regular file\n"
    )


def test_the_command_program(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = write(tmp_path, "#!/bin/sh\necho '{\"agents\": []}'\n", "snap")
    path = write(tmp_path, "source:\n  kind: command\n  command: [./snap]\n")
    assert run_check(path, capsys) == (
        78,
        "",
        f"{path}:3: source.command[0]: {script}: not executable by {config._user()}\n",
    )
    script.chmod(0o755)
    assert run_check(path, capsys) == (0, "OK\n", "")
    # A bare name is looked up on PATH, as the source runs it.
    path = write(tmp_path, "source:\n  kind: command\n  command: [sh, -c, 'cat x']\n")
    assert run_check(path, capsys) == (0, "OK\n", "")
    path = write(tmp_path, "source:\n  kind: command\n  command:\n    - no-such-ccx-program\n")
    code, _, err = run_check(path, capsys)
    assert code == 78
    assert err.startswith(
        f"{path}:4: source.command[0]: program 'no-such-ccx-program' not found on PATH ("
    )


def test_the_state_dir_is_never_created_and_must_be_writable_if_it_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, RUNNABLE.replace("state_dir: state", "state_dir: a/b/state"))
    assert run_check(path, capsys) == (0, "OK\n", "")
    assert not (tmp_path / "a").exists()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b").write_text("")
    assert run_check(path, capsys) == (
        78,
        "",
        f"{path}:1: state_dir: {tmp_path / 'a/b/state'}: a part of the path is not a directory\n",
    )
    (tmp_path / "a" / "b").unlink()
    (tmp_path / "a" / "b").mkdir()
    (tmp_path / "a" / "b" / "state").write_text("")
    assert run_check(path, capsys) == (
        78,
        "",
        f"{path}:1: state_dir: {tmp_path / 'a/b/state'}: a file, not a directory\n",
    )


def _as_nobody(config_file: Path) -> subprocess.CompletedProcess[str]:
    """``check-config`` run by another user than the one who owns the files: as root,
    the real CLI as nobody (root may read and write anything), skipped where nobody
    cannot run it; otherwise, this user."""
    args = [*ccx_agent(), "--config", str(config_file), "check-config"]
    ids: dict[str, Any] = {}
    if os.geteuid() == 0:
        users.require_as()
        ids = users.run_as()
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False, **ids)


def test_unreadable_files_and_an_unwritable_state_dir(tmp_path: Path) -> None:
    """What a service user meets when root made the files: named, with the user."""
    base = Path(tempfile.mkdtemp(prefix="ccx-perm-"))
    try:
        base.chmod(0o755)
        secret = base / "uccx-password"
        secret.write_text("hunter2\n")
        secret.chmod(0o600 if os.geteuid() == 0 else 0)
        state = base / "state"
        state.mkdir(mode=0o755 if os.geteuid() == 0 else 0o500)
        path = base / "ccx-agent.yaml"
        path.write_text(
            "state_dir: state\nsource:\n  kind: uccx\n  uccx:\n    url: https://u.example.com\n"
            "    user: u\n    password_file: uccx-password\n"
        )
        path.chmod(0o644)
        done = _as_nobody(path)
        user = f"uid {users.ids()[0]} ({users.NOBODY})" if os.geteuid() == 0 else config._user()
        assert (done.returncode, done.stdout) == (78, ""), done.stderr
        assert done.stderr.splitlines() == [
            f"{path}:1: state_dir: {state}: not writable by {user}",
            f"{path}:7: source.uccx.password_file: {secret}: not readable by {user}",
        ]
    finally:
        (base / "state").chmod(0o700)
        shutil.rmtree(base)


def test_wrong_typed_source_path_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by fuzzing: a KeyError "Invalid error type: 'path_type'" from _source_errors."""
    for value, got in (("[a, b]", "a list"), ("12", "12"), ("{a: 1}", "a mapping")):
        path = write(tmp_path, f"source:\n  kind: file\n  path: {value}\n")
        assert run_check(path, capsys) == (
            78,
            "",
            f"{path}:3: source.path: must be a path, got {got}\n",
        )
    path = write(
        tmp_path,
        "source:\n  kind: uccx\n  uccx:\n    url: https://u.example.com\n"
        "    user: u\n    ca_bundle: [x]\n",
    )
    assert (
        run_check(path, capsys)[2]
        == f"{path}:6: source.uccx.ca_bundle: must be a path, got a list\n"
    )


def test_a_number_of_5000_digits_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by fuzzing: int's max-digits ValueError from the YAML constructor."""
    path = write(tmp_path, RUNNABLE + "compliance:\n  ooc_threshold: " + "7" * 5000 + "\n")
    limit = sys.get_int_max_str_digits()
    assert run_check(path, capsys) == (
        78,
        "",
        f"{path}:6: compliance.ooc_threshold: a number of 5000 digits is too long "
        f"(at most {limit})\n",
    )


def test_an_alias_bomb_is_one_line_and_quick(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by fuzzing: a billion laughs at source.kind ran past 10 s and ate memory
    (pydantic wrote the expanded tag into its message)."""
    lines = ['x0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = write(tmp_path, "\n".join([*lines, "source:", "  kind: *a8", "  path: x", ""]))
    started = time.monotonic()
    code, out, err = run_check(path, capsys)
    assert time.monotonic() - started < 2
    assert (code, out) == (78, "")
    # x0 is 11 values (the list and its items), x_i is 1 + 10 * x_(i-1): before x3,
    # 10 * 11 + 10 * 111 = 1,220; each x3 item adds 1,111, so the eighth crosses 10,000.
    assert err == (
        f"{path}:4: x3[7]: aliases expand the document by more than 10000 values "
        "(an alias bomb?): refused\n"
    )


#: Every command that reads the config in full, as an operator types it.
LOADING_COMMANDS = (
    ("check-config",),
    ("usage",),
    ("register", "token"),
    ("deregister", "--yes"),
    ("renew", "id"),
    ("sync",),
    ("admit",),
    ("status",),
    ("report",),
    ("alerts",),
    ("offline", "export", "--output", "{tmp}/request"),
)


@pytest.mark.parametrize("argv", LOADING_COMMANDS, ids=" ".join)
def test_every_command_says_a_bad_config_the_one_way(
    tmp_path: Path, argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "source:\n  kind: file\n  path: 7\nlicense:\n  type: bogus\n")
    err = io.StringIO()
    assert config.load_or_status(path, err) == EX_CONFIG == 78
    said = err.getvalue()
    assert len(said.splitlines()) == 2 and f"{path}:" in said, said  # one line a problem
    line = [word.format(tmp=tmp_path) for word in argv]
    assert main(["--config", str(path), *line]) == EX_CONFIG
    assert capsys.readouterr() == ("", said)
