"""SQLite store: migrations, persistence across restarts, paging, and `consilium audit verify`
catching entries edited, removed or swapped directly in the database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from signaling.audit import AuditLog
from signaling.audit_chain import next_entry
from signaling.cli import main
from signaling.storage.sqlite import MIGRATIONS, SqliteStore, migrate, schema_version


def _fill(store: SqliteStore, n: int, room: str = "ward") -> None:
    log = AuditLog(store, clock=lambda: 1_700_000_000.5)
    for i in range(n):
        log.record("participant-joined", room, f"user-{i}", role="specialist")


def test_fresh_database_is_at_latest_version(tmp_path: Path) -> None:
    store = SqliteStore.in_dir(tmp_path)
    _fill(store, 1)
    store.close()
    conn = sqlite3.connect(tmp_path / "consilium.db")
    assert schema_version(conn) == len(MIGRATIONS)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # Idempotent: running again changes nothing.
    assert migrate(conn) == len(MIGRATIONS)
    conn.close()


def test_old_database_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "consilium.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, MIGRATIONS[:1]) == 1
    # A row written by a version-1 server, before the index existed.
    entry = next_entry(None, "2026-01-01T00:00:00.000Z", "participant-joined", "ward", "a", {})
    conn.execute(
        "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            entry.seq,
            entry.time,
            entry.event,
            entry.room,
            entry.actor,
            "{}",
            entry.prev_hash,
            entry.hash,
        ),
    )
    assert schema_version(conn) == 1
    conn.close()

    store = SqliteStore(path)
    [kept] = store.list_room("ward")
    assert kept == entry
    _fill(store, 2)
    assert AuditLog(store).verify().ok and AuditLog(store).verify().count == 3
    store.close()
    conn = sqlite3.connect(path)
    assert schema_version(conn) == len(MIGRATIONS)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "audit_room_seq" in names
    conn.close()


def test_failed_migration_rolls_back(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, [*MIGRATIONS, "CREATE TABLE t (a INTEGER); SELECT * FROM nowhere;"])
    assert schema_version(conn) == len(MIGRATIONS)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "t" not in tables
    conn.close()


def test_entries_survive_a_restart(tmp_path: Path) -> None:
    store = SqliteStore.in_dir(tmp_path)
    _fill(store, 3)
    store.close()
    again = SqliteStore.in_dir(tmp_path)
    log = AuditLog(again)
    log.record("participant-left", "ward", "user-0", reason="left")
    entries = log.entries()
    assert [e["seq"] for e in entries] == [1, 2, 3, 4]
    assert entries[-1]["reason"] == "left" and entries[0]["role"] == "specialist"
    assert entries[0]["time"] == "2023-11-14T22:13:20.500Z"
    assert log.verify().ok
    again.close()


def test_paging_by_room(tmp_path: Path) -> None:
    store = SqliteStore.in_dir(tmp_path)
    _fill(store, 3, room="a")
    _fill(store, 2, room="b")
    _fill(store, 2, room="a")
    page1 = store.list_room("a", after=0, limit=3)
    assert [e.seq for e in page1] == [1, 2, 3]
    page2 = store.list_room("a", after=page1[-1].seq, limit=3)
    assert [e.seq for e in page2] == [6, 7]
    assert [e.seq for e in store.list_room("b")] == [4, 5]
    assert [e.seq for e in store.iter_all()] == list(range(1, 8))
    store.close()


def _tamper(db: Path, sql: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript(sql)
    conn.close()


SWAP = """
UPDATE audit SET seq = -1 WHERE seq = 3;
UPDATE audit SET seq = 3 WHERE seq = 4;
UPDATE audit SET seq = 4 WHERE seq = -1;
"""


@pytest.mark.parametrize(
    ("name", "sql"),
    [
        ("edited", 'UPDATE audit SET details = \'{"role":"host"}\' WHERE seq = 3;'),
        ("removed", "DELETE FROM audit WHERE seq = 3;"),
        ("swapped", SWAP),
        ("renamed room", "UPDATE audit SET room = 'other' WHERE seq = 3;"),
    ],
)
def test_cli_verify_finds_tampering(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, sql: str
) -> None:
    store = SqliteStore.in_dir(tmp_path)
    _fill(store, 5)
    store.close()
    assert main(["audit", "verify", "--data-dir", str(tmp_path)]) == 0
    assert "OK: 5 audit entries" in capsys.readouterr().out

    _tamper(tmp_path / "consilium.db", sql)
    assert main(["audit", "verify", "--data-dir", str(tmp_path)]) == 1, name
    out = capsys.readouterr().out
    assert "FAILED at entry 3:" in out, (name, out)


def test_cli_verify_reads_env_and_reports_missing_db(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONSILIUM_DATA_DIR", str(tmp_path / "nothing"))
    assert main(["audit", "verify"]) == 1
    assert "no audit database" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()
    store = SqliteStore.in_dir(tmp_path)
    _fill(store, 2)
    store.close()
    monkeypatch.setenv("CONSILIUM_DATA_DIR", str(tmp_path))
    assert main(["audit", "verify"]) == 0
    assert "OK: 2 audit entries" in capsys.readouterr().out


def test_anchor_finds_a_trail_cut_short(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = SqliteStore.in_dir(tmp_path)
    _fill(store, 6)
    store.close()
    assert main(["audit", "head", "--data-dir", str(tmp_path)]) == 0
    anchor = capsys.readouterr().out.strip()
    assert anchor.startswith("6:") and len(anchor) == 2 + 64
    assert main(["audit", "verify", "--data-dir", str(tmp_path), "--anchor", anchor]) == 0
    capsys.readouterr()

    # Cutting the last two entries leaves a chain that verifies on its own...
    _tamper(tmp_path / "consilium.db", "DELETE FROM audit WHERE seq > 4;")
    assert main(["audit", "verify", "--data-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    # ...but not against the anchor taken before the cut.
    assert main(["audit", "verify", "--data-dir", str(tmp_path), "--anchor", anchor]) == 1
    out = capsys.readouterr().out
    assert "FAILED at entry 5:" in out and "cut short" in out

    # An anchor whose hash is not the stored entry's (a forged or rewritten chain) fails too.
    wrong = "3:" + "0" * 64
    assert main(["audit", "verify", "--data-dir", str(tmp_path), "--anchor", wrong]) == 1
    assert "FAILED at entry 3:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["audit", "verify", "--data-dir", str(tmp_path), "--anchor", "nonsense"])
