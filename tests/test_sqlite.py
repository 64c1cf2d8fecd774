"""The shared SQLite opening and migration rules, with each caller's own error type."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccx_agent.store import sqlite


class Boom(Exception):
    pass


def test_statements_split_where_sqlite_ends_them() -> None:
    script = "CREATE TABLE t (a TEXT DEFAULT ';');\nCREATE TABLE u (b);\n"
    assert [s.strip() for s in sqlite.statements(script, Boom)] == [
        "CREATE TABLE t (a TEXT DEFAULT ';');",
        "CREATE TABLE u (b);",
    ]
    with pytest.raises(Boom, match="incomplete SQL statement"):
        list(sqlite.statements("INSERT INTO v VALUES ('open string", Boom))


def test_migrations_apply_once_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    sqlite.create_private(path)
    assert path.stat().st_mode & 0o777 == 0o600
    conn = sqlite.connect(path, durable=True, what="test database", fail=Boom)
    sqlite.migrate(conn, ["CREATE TABLE a (x)"], path, Boom)
    sqlite.migrate(conn, ["CREATE TABLE a (x)", "CREATE TABLE b (y)"], path, Boom)
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == 2
    with pytest.raises(Boom, match="schema version 2 is newer than this ccx-agent"):
        sqlite.migrate(conn, ["CREATE TABLE a (x)"], path, Boom)
    # A failed step rolls the whole migration back, version included.
    with pytest.raises(Exception, match="already exists"):
        sqlite.migrate(
            conn,
            [
                "CREATE TABLE a (x)",
                "CREATE TABLE b (y)",
                "CREATE TABLE c (z)",
                "CREATE TABLE a (w)",
            ],
            path,
            Boom,
        )
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == 2
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'c'").fetchone()[0] == 0
    assert str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"
    conn.close()


def test_a_database_in_memory() -> None:
    conn = sqlite.connect(None, durable=False, what="test database", fail=Boom)
    sqlite.migrate(conn, ["CREATE TABLE a (x)"], None, Boom)
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    conn.close()
