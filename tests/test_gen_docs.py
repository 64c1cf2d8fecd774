"""The man page and the shell completions are generated from the parser
(tools/gen_docs.py), the example config and the key tables of docs/config.md from the
config schema (tools/gen_config.py); all are committed: they must be current, and say
every command and every key."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ccx_agent.config.schema import Config, ReportConfig
from ccx_agent.config.yamldoc import field_paths
from tests.test_cli import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "share" / "man" / "ccx-agent.8"
sys.path.insert(0, str(ROOT / "tools"))
import gen_config  # noqa: E402  (tools/ is not a package)


def test_the_committed_files_are_what_the_parser_generates() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_docs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_every_command_is_in_the_man_page_and_the_completions() -> None:
    man = MAN.read_text()
    bash = (ROOT / "share" / "completion" / "ccx-agent.bash").read_text()
    zsh = (ROOT / "share" / "completion" / "_ccx-agent").read_text()
    assert man.startswith('.TH CCX\\-AGENT "8"')
    for command in COMMANDS:
        assert f"'ccx\\-agent {command.replace('-', chr(92) + '-')}'" in man, command
        assert command in bash and command in zsh
    assert "--token-file" in bash and "--send-test-alert" in zsh
    assert "_shtab_compgen_files" in bash  # -c PATH completes file names


def test_the_man_page_renders_without_warnings() -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff is not installed")
    done = subprocess.run(
        [groff, "-man", "-ww", "-z", str(MAN)], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stderr) == (0, "")


def _groff() -> str:
    groff = shutil.which("groff")
    if groff is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI must check the man page: groff is not installed")
        pytest.skip("groff is not installed")
    return groff


def test_the_man_page_has_the_sections_of_a_man_page() -> None:
    """Rendered by groff, as man shows it: EXIT STATUS (not the --help epilog under
    COMMENTS), ENVIRONMENT, FILES, EXAMPLES, SEE ALSO, in man-pages(7)'s order."""
    done = subprocess.run(
        [_groff(), "-man", "-Tutf8", "-P", "-cbou", str(MAN)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout
    headings = [line for line in text.splitlines() if line[:1].isalpha() and line.isupper()]
    assert "COMMENTS" not in headings
    wanted = ["NAME", "SYNOPSIS", "DESCRIPTION", "EXIT STATUS", "ENVIRONMENT", "FILES"]
    wanted += ["EXAMPLES", "SEE ALSO"]
    assert [h for h in headings if h in wanted] == wanted
    exit_status = text.split("\nEXIT STATUS\n", 1)[1].split("\nENVIRONMENT\n", 1)[0]
    for tag in ("0", "1", "2", "78", "130", *COMMANDS):
        assert re.search(rf"^ {{7}}{re.escape(tag)}(\s|$)", exit_status, re.MULTILINE), tag
    files = text.split("\nFILES\n", 1)[1]
    assert "/etc/ccx-agent/ccx-agent.yaml" in files and "/var/lib/ccx-agent/keys/" in files
    examples = text.split("\nEXAMPLES\n", 1)[1]
    assert "ccx-agent register --token-file /root/id-token" in examples


COMPLETE = """
source {script}
COMP_WORDS=({words})
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
_shtab_ccx_agent ccx-agent "${{COMP_WORDS[-1]}}" "${{COMP_WORDS[-2]}}"
printf '%s\\n' "${{COMPREPLY[@]}}"
"""


@pytest.mark.parametrize(
    "words",
    [
        ["--config"],
        ["status", "-c"],
        ["support-bundle", "--output"],
        ["report", "--output"],
        ["register", "--token-file"],
        ["offline", "export", "--token-file"],
        ["offline", "export", "--output"],
        ["offline", "import"],
    ],
)
def test_bash_completes_file_names_after_a_file_option(words: list[str], tmp_path: Path) -> None:
    """The generated bash completion, run by bash, in a directory with two files."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    (tmp_path / "conf-a.yaml").write_text("")
    (tmp_path / "conf-b.yaml").write_text("")
    script = ROOT / "share" / "completion" / "ccx-agent.bash"
    line = " ".join(["ccx-agent", *words, "conf"])
    done = subprocess.run(
        [bash, "-c", COMPLETE.format(script=script, words=line)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == ["conf-a.yaml", "conf-b.yaml"]


# --- the example config and docs/config.md, from one description per key ----------------------


def _models() -> list[type[BaseModel]]:
    """Every model whose keys the reference shows: Config's sections and the source kinds."""
    out: list[type[BaseModel]] = []
    todo: list[type[BaseModel]] = [Config, *gen_config.KINDS.values()]
    while todo:
        model = todo.pop()
        if model in out:
            continue
        out.append(model)
        for info in model.model_fields.values():
            sub = gen_config.sub_model(info.annotation) or gen_config.item_model(info.annotation)
            if sub is not None and sub is not Config:
                todo.append(sub)
    return out


def test_every_key_has_a_description_and_a_type() -> None:
    missing = [
        f"{model.__name__}.{name}"
        for model in _models()
        for name, info in model.model_fields.items()
        if gen_config.sub_model(info.annotation) is None
        and not (info.description and (name == "kind" or gen_config.extra(info).get("kind")))
    ]
    assert missing == []


def test_every_key_has_its_row_in_the_reference() -> None:
    doc = gen_config.DOC.read_text(encoding="utf-8")
    leaves = [
        ".".join(map(str, path))
        for path in field_paths(Config)
        if path[0] != "source" and gen_config.sub_model(_field(path).annotation) is None
    ]
    assert "report.jitter" in leaves and "alerts.syslog.queue" in leaves
    absent = [key for key in leaves if f"| `{key}` |" not in doc]
    assert absent == []
    for key in ("source.kind", "source.path", "source.uccx.nodes", "source.steps[].at"):
        assert f"| `{key}` |" in doc


def _field(path: tuple[object, ...]) -> FieldInfo:
    model: type[BaseModel] = Config
    info = Config.model_fields[str(path[0])]
    for part in path[1:]:
        sub = gen_config.sub_model(info.annotation)
        assert sub is not None
        model = sub
        info = model.model_fields[str(part)]
    return info


def test_a_changed_description_makes_both_files_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    """The files follow the schema: edit a description, and both differ from what is
    committed (so the staleness test above fails until ``make docs`` is run)."""
    committed = {path: path.read_text(encoding="utf-8") for path in gen_config.outputs()}
    assert gen_config.outputs() == committed
    info = ReportConfig.model_fields["interval"]
    monkeypatch.setattr(info, "description", "Changed: the usage interval.")
    now = gen_config.outputs()
    assert now[gen_config.SAMPLE] != committed[gen_config.SAMPLE]
    assert (
        "  # Changed: the usage interval.\n  # Default: 15m\n  interval: 15m\n"
        in (now[gen_config.SAMPLE])
    )
    assert (
        "| `report.interval` | positive duration | `15m` | Changed: the usage interval. |"
        in (now[gen_config.DOC])
    )


def test_a_hand_edited_table_is_generated_again_and_the_prose_is_kept() -> None:
    doc = committed = gen_config.DOC.read_text(encoding="utf-8")
    row = next(line for line in doc.splitlines() if line.startswith("| `sample.interval` |"))
    doc = doc.replace(row, "| `sample.interval` | positive duration | `2m` | edited |")
    doc = doc.replace("## Durations", "## Durations (edited prose)")
    again = gen_config.reference(doc)
    assert again == committed.replace("## Durations", "## Durations (edited prose)")


def test_the_example_comments_say_the_schema_defaults() -> None:
    text = gen_config.SAMPLE.read_text(encoding="utf-8")
    assert "  # Default: 60s\n  jitter: 60s\n" in text
    assert '    # Default: "" (the system trust store)\n    ca_bundle: ""\n' in text
    assert "  # The snapshot file. Required.\n  path: /etc/ccx-agent/agents.json\n" in text
    assert "#   nfr                 nfr-seat (lab use; never out of compliance)\n" in text
