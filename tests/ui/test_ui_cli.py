"""`lorakit ui`'s safety rules at the command line, before anything is served."""

from __future__ import annotations

from conftest import run_cli


def test_a_network_address_needs_a_password(monkeypatch, capsys) -> None:
    monkeypatch.delenv("LORAKIT_UI_AUTH", raising=False)
    code, out = run_cli(monkeypatch, capsys, "ui", "--host", "0.0.0.0")
    assert code == 2 and "--host 0.0.0.0 would let other machines use the UI without a password" in out
    code, out = run_cli(monkeypatch, capsys, "ui", "--host", "0.0.0.0", "--auth", "nocolon")
    assert code == 2 and "user:password" in out


def test_help_names_the_options(monkeypatch, capsys) -> None:
    code, out = run_cli(monkeypatch, capsys, "ui", "--help")
    assert code == 0 and all(option in out for option in ("--host", "--port", "--auth", "--home", "--lang"))
