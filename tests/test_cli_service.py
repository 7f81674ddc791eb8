"""`tracemark service keys create|list|revoke` and `tracemark serve`'s option checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

pytest.importorskip("fastapi")

from tracemark.cli import main  # noqa: E402
from tracemark.service.keys import KeyStore, service_engine  # noqa: E402


def _run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    data = tmp_path / "data"
    res = _run("service", "keys", "create", "--store", data, "--scope", "read",
               "--collections", "a,b", "--name", "reader")
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)
    assert row["token"].startswith("tm_" + row["id"] + "_")
    assert (row["scope"], row["collections"], row["name"]) == ("read", ["a", "b"], "reader")
    assert "cannot be shown again" in res.stderr
    keys = KeyStore(service_engine(data, None))
    assert keys.check(row["token"]).id == row["id"]

    listed = [json.loads(line) for line in _run("service", "keys", "list", "--store",
                                                 data).stdout.splitlines()]
    assert [k["id"] for k in listed] == [row["id"]]
    assert all("token" not in k and "hash" not in k for k in listed)
    assert row["token"] not in _run("service", "keys", "list", "--store", data).stdout

    res = _run("service", "keys", "revoke", "--store", data, row["id"])
    assert res.exit_code == 0 and keys.check(row["token"]) is None
    res = _run("service", "keys", "revoke", "--store", data, row["id"])
    assert res.exit_code == 3 and "no active key" in res.stderr


def test_keys_create_mistakes(tmp_path: Path) -> None:
    res = _run("service", "keys", "create", "--store", tmp_path, "--scope", "admin")
    assert res.exit_code == 2 and "admin" in res.output
    res = _run("service", "keys", "create", "--store", tmp_path, "--scope", "read",
               "--collections", " , ")
    assert res.exit_code == 2 and "at least one collection" in res.stderr


def test_serve_option_checks(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("x")
    res = _run("serve", "--store", tmp_path / "d", "--cert", tmp_path / "c.pem")
    assert res.exit_code == 2 and "Missing option '--key'" in res.output  # or --signer-command
    (tmp_path / "k.pem").write_text("not a key")
    res = _run("serve", "--store", tmp_path / "d", "--cert", tmp_path / "c.pem",
               "--key", tmp_path / "k.pem")
    assert res.exit_code == 2 and "PEM" in res.stderr
    res = _run("serve", "--store", tmp_path / "d", "--database-url", "nosuchdb://x")
    assert res.exit_code == 2 and "database URL" in res.stderr
