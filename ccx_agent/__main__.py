"""``ccx-agent`` and ``python -m ccx_agent``: hold hang-ups before anything is imported
(:mod:`ccx_agent.daemon.earlysignals`), then run the CLI."""

from __future__ import annotations

from ccx_agent.daemon.earlysignals import hold_hangups


def main() -> None:
    hold_hangups()
    from ccx_agent.cli.main import entry  # noqa: PLC0415 - after the hang-ups are held

    entry()


if __name__ == "__main__":  # pragma: no cover
    main()
