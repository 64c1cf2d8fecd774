"""The code fingerprint of ccx_agent/checkconfig.py names the files that decide what a
config means by their paths in the package, and hashes "?" for a missing one: a file
moved without its entry there would silently drop out of the fingerprint, and a record
made by older code would be used after an upgrade that changed the schema."""

from __future__ import annotations

from pathlib import Path

from ccx_agent import checkconfig

PACKAGE = Path(checkconfig.__file__).resolve().parent


def test_every_deciding_file_exists() -> None:
    missing = [name for name in checkconfig._DECIDING if not (PACKAGE / name).is_file()]
    assert missing == []


def test_every_module_of_the_config_package_is_fingerprinted() -> None:
    """The package's modules are what a config file means; ``__init__`` holds none of it."""
    modules = {
        p.relative_to(PACKAGE).as_posix()
        for p in (PACKAGE / "config").glob("*.py")
        if p.name != "__init__.py"
    }
    assert modules <= set(checkconfig._DECIDING), sorted(modules - set(checkconfig._DECIDING))
