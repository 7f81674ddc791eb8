"""`tracemark watermark embed|detect`: JSON lines, exit codes, key sources, payload forms."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from tracemark.cli._common import expand_inputs, keep_suffix, plan_outputs
from tracemark.cli.watermark import watermark_group
from tracemark.errors import PayloadError
from tracemark.imageio import encode_image, load_image, open_image_info
from tracemark.watermark import get_method, parse_payload

from .conftest import CORPUS

# Two corpus images on which the lattice prototype detects with a wide margin.
IMAGES = ("art/debian_1.jpg", "art/debian_2.jpg")
KEY = bytes(range(100, 132))
PAYLOAD = 0xC0FFEE
PAYLOAD_HEX = "0x" + PAYLOAD.to_bytes(8, "big").hex()


def _run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(watermark_group, list(args), env=env)


def _rows(res: Result) -> list[dict]:
    return [json.loads(line) for line in res.stdout.splitlines()]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not beside the checkout ({CORPUS})")
    root = tmp_path_factory.mktemp("wm")
    (root / "in").mkdir()
    for rel in IMAGES:
        shutil.copy(CORPUS / rel, root / "in" / Path(rel).name)
    (root / "key").write_bytes(KEY)
    (root / "other.key").write_bytes(bytes(range(200, 232)))  # another random-looking key
    return root


@pytest.fixture(scope="module")
def marked(work: Path) -> Path:
    """The two inputs marked with KEY and PAYLOAD as PNG (the round trip's embed half)."""
    out = work / "marked"
    res = _run(
        "embed",
        str(work / "in"),
        "--out",
        str(out),
        "--format",
        "png",
        "--payload",
        hex(PAYLOAD),
        "--key-file",
        str(work / "key"),
    )
    assert res.exit_code == 0, res.output
    return out


# --- round trip ------------------------------------------------------------------------


def test_embed_writes_marked_pngs_and_one_line_per_input(work: Path, marked: Path) -> None:
    res = _run(
        "embed",
        str(work / "in"),
        "--out",
        str(work / "again"),
        "--format",
        "png",
        "--payload",
        str(PAYLOAD),
        "--key-file",
        str(work / "key"),
    )
    assert res.exit_code == 0, res.output
    rows = _rows(res)
    assert [Path(r["source"]).name for r in rows] == ["debian_1.jpg", "debian_2.jpg"]
    wm = get_method("lattice")
    for r in rows:
        assert set(r) == {"source", "output", "method", "payload", "psnr", "mark", "alpha",
                          "error"}
        assert r["error"] is None and r["method"] == "lattice" and r["payload"] == PAYLOAD_HEX
        out = Path(r["output"])
        assert out.parent == work / "again" and out.suffix == ".png"
        # decimal and hex payloads give the same marked pixels as the Python API
        expected = wm.embed(load_image(r["source"]), PAYLOAD, KEY)
        assert (load_image(out) == expected).all()
        assert (load_image(marked / out.name) == expected).all()
        assert abs(r["psnr"] - wm.psnr) < 2.0  # the default strength, measured on the file
    assert sorted(p.name for p in (work / "in").iterdir()) == ["debian_1.jpg", "debian_2.jpg"]


def test_detect_recovers_the_payload(work: Path, marked: Path) -> None:
    res = _run("detect", str(marked), "--key-file", str(work / "key"))
    assert res.exit_code == 0, res.output
    rows = _rows(res)
    assert len(rows) == 2
    for r in rows:
        assert set(r) == {
            "source",
            "method",
            "present",
            "payload",
            "p_value",
            "score",
            "bit_errors",
            "route",
            "error",
        }
        assert r["present"] is True and r["payload"] == PAYLOAD_HEX and r["error"] is None
        assert r["p_value"] < 1e-4 and r["score"] > 4


def test_unmarked_images_are_not_found(work: Path) -> None:
    res = _run("detect", str(work / "in"), "--key-file", str(work / "key"))
    assert res.exit_code == 10, res.output
    rows = _rows(res)
    assert len(rows) == 2
    assert all(r["present"] is False and r["payload"] is None and r["error"] is None for r in rows)


def test_mixed_batch_exits_11(work: Path, marked: Path) -> None:
    res = _run(
        "detect",
        str(marked / "debian_1.png"),
        str(work / "in" / "debian_2.jpg"),
        "--key-file",
        str(work / "key"),
    )
    assert res.exit_code == 11, res.output
    assert [r["present"] for r in _rows(res)] == [True, False]


def test_wrong_key_does_not_find_the_mark(work: Path, marked: Path) -> None:
    res = _run("detect", str(marked), "--key-file", str(work / "other.key"))
    assert res.exit_code == 10, res.output
    assert [r["present"] for r in _rows(res)] == [False, False]


def test_alpha_is_passed_to_the_detector(work: Path, marked: Path) -> None:
    res = _run("detect", str(marked), "--key-file", str(work / "key"), "--alpha", "1e-300")
    assert res.exit_code == 10, res.output  # p-values near 1e-40 are not below 1e-300
    assert (
        _run("detect", str(marked), "--key-file", str(work / "key"), "--alpha", "1").exit_code == 2
    )


# --- bad inputs in a batch ---------------------------------------------------------------


def test_corrupt_files_are_reported_and_the_batch_carries_on(
    work: Path, marked: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not a jpeg")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    good = marked / "debian_1.png"
    res = _run(
        "detect",
        str(broken),
        str(good),
        str(empty),
        str(tmp_path / "missing.jpg"),
        "--key-file",
        str(work / "key"),
    )
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    rows = _rows(res)
    assert [Path(r["source"]).name for r in rows] == [
        "broken.jpg",
        "debian_1.png",
        "empty.png",
        "missing.jpg",
    ]
    assert rows[1]["present"] is True and rows[1]["error"] is None
    errors = [r["error"] for r in rows if r["error"] is not None]
    assert [e["type"] for e in errors] == [
        "CorruptImageError",
        "EmptyImageError",
        "ImageSourceError",
    ]
    assert all(r["present"] is None for r in rows if r["error"])

    only_bad = _run("detect", str(broken), str(empty), "--key-file", str(work / "key"))
    assert only_bad.exit_code == 3, only_bad.output


def test_embed_reports_bad_and_too_small_inputs(work: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    tiny = tmp_path / "tiny.png"
    tiny.write_bytes(encode_image(load_image(work / "in" / "debian_1.jpg")[:60, :60], "PNG"))
    out = tmp_path / "out"
    res = _run(
        "embed",
        str(broken),
        str(work / "in" / "debian_1.jpg"),
        str(tiny),
        "--out",
        str(out),
        "--payload",
        "7",
        "--key-file",
        str(work / "key"),
    )
    assert res.exit_code == 1, res.output
    rows = _rows(res)
    assert [r["error"] and r["error"]["type"] for r in rows] == [
        "CorruptImageError",
        None,
        "ImageTooSmallError",
    ]
    assert rows[0]["output"] is None and rows[0]["psnr"] is None
    # the output keeps the input's format by default
    assert sorted(p.name for p in out.iterdir()) == ["debian_1.jpg"]

    nothing = _run(
        "embed", str(broken), "--out", str(out), "--payload", "7", "--key-file", str(work / "key")
    )
    assert nothing.exit_code == 3, nothing.output


# --- usage errors ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["embed", "detect"])
def test_missing_key_for_a_keyed_method_is_a_usage_error(
    work: Path, command: str, tmp_path: Path
) -> None:
    extra = ["--out", str(tmp_path / "o"), "--payload", "1"] if command == "embed" else []
    res = _run(command, str(work / "in"), *extra)
    assert res.exit_code == 2
    assert "needs a key" in res.output and "--key-file" in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "payload",
    ["0x1" + "0" * 16, str(2**64), "text:nine byte", "0xZZ", "0x", "hello", "-1", "text:", "1.5"],
)
def test_bad_payload_is_a_usage_error(work: Path, tmp_path: Path, payload: str) -> None:
    res = _run(
        "embed",
        str(work / "in"),
        "--out",
        str(tmp_path / "o"),
        "--payload",
        payload,
        "--key-file",
        str(work / "key"),
    )
    assert res.exit_code == 2, res.output
    assert "--payload" in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--key-env", "TM_KEY"], {}, "TM_KEY is not set"),
        (["--key-env", "TM_KEY"], {"TM_KEY": "not hex"}, "in hex"),
        (["--key-env", "TM_KEY"], {"TM_KEY": "00" * 15}, "at least 16 bytes"),
        (["--passphrase-env", "TM_PASS"], {"TM_PASS": ""}, "must not be empty"),
        (
            ["--key-env", "TM_KEY", "--passphrase-env", "TM_PASS"],
            {"TM_KEY": "00" * 16, "TM_PASS": "x"},
            "one key source",
        ),
        (["--key-file", "SHORT"], {}, "at least 16 bytes"),
    ],
)
def test_bad_key_sources_are_usage_errors(
    work: Path, tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(b"0123456789")
    args = [str(short) if a == "SHORT" else a for a in args]
    res = _run("detect", str(work / "in"), *args, env={"TM_KEY": None, "TM_PASS": None, **env})
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "0123456789" not in res.output  # key material never echoed


def test_out_inside_an_input_folder_is_refused(work: Path, tmp_path: Path) -> None:
    src = tmp_path / "photos"
    shutil.copytree(work / "in", src)
    for out in (src, src / "marked"):
        res = _run(
            "embed", str(src), "--out", str(out), "--payload", "1", "--key-file", str(work / "key")
        )
        assert res.exit_code == 2, res.output
        assert "input folder" in res.output
    assert sorted(p.name for p in src.iterdir()) == ["debian_1.jpg", "debian_2.jpg"]


def test_unknown_method_and_bad_strength_are_usage_errors(work: Path, tmp_path: Path) -> None:
    base = [
        "embed",
        str(work / "in"),
        "--out",
        str(tmp_path / "o"),
        "--payload",
        "1",
        "--key-file",
        str(work / "key"),
    ]
    res = _run(*base, "--method", "nope")
    assert res.exit_code == 2 and "unknown watermark method 'nope'" in res.output
    res = _run(*base, "--strength", "5")
    assert res.exit_code == 2 and "psnr must be in" in res.output
    res = _run(*base, "--quality", "90", "--format", "png")
    assert res.exit_code == 2 and "--quality" in res.output


# --- key sources, formats, strength --------------------------------------------------------


def test_key_in_hex_env_var_equals_the_key_file(work: Path, marked: Path) -> None:
    res = _run(
        "detect", str(marked), "--key-env", "TM_KEY", env={"TM_KEY": "0x" + KEY.hex().upper()}
    )
    assert res.exit_code == 0, res.output
    assert [r["payload"] for r in _rows(res)] == [PAYLOAD_HEX] * 2


def test_passphrase_env_round_trip(work: Path, tmp_path: Path) -> None:
    env = {"TM_PASS": "correct horse battery staple"}
    out = tmp_path / "out"
    res = _run(
        "embed",
        str(work / "in" / "debian_2.jpg"),
        "--out",
        str(out),
        "--payload",
        "text:tracemrk",
        "--passphrase-env",
        "TM_PASS",
        env=env,
    )
    assert res.exit_code == 0, res.output
    assert _rows(res)[0]["payload"] == "0x" + b"tracemrk".hex()
    found = _run("detect", str(out), "--passphrase-env", "TM_PASS", env=env)
    assert found.exit_code == 0, found.output
    assert bytes.fromhex(_rows(found)[0]["payload"].removeprefix("0x")) == b"tracemrk"
    other = _run("detect", str(out), "--passphrase-env", "TM_PASS", env={"TM_PASS": "a wrong passphrase"})
    assert other.exit_code == 10, other.output


def test_jpeg_output_at_quality_90_is_still_detected(work: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = _run(
        "embed",
        str(work / "in"),
        "--out",
        str(out),
        "--payload",
        hex(PAYLOAD),
        "--key-file",
        str(work / "key"),
        "--format",
        "jpg",
        "--quality",
        "90",
    )
    assert res.exit_code == 0, res.output
    wm = get_method("lattice")
    for r in _rows(res):
        dest = Path(r["output"])
        assert dest.suffix == ".jpg" and open_image_info(dest).format == "JPEG"
        marked = wm.embed(load_image(r["source"]), PAYLOAD, KEY)
        assert dest.read_bytes() == encode_image(marked, "JPEG", quality=90)
    found = _run("detect", str(out), "--key-file", str(work / "key"))
    assert found.exit_code == 0, found.output
    assert [r["payload"] for r in _rows(found)] == [PAYLOAD_HEX] * 2


def test_strength_sets_the_psnr(work: Path, tmp_path: Path) -> None:
    res = _run(
        "embed",
        str(work / "in" / "debian_1.jpg"),
        "--out",
        str(tmp_path / "o"),
        "--payload",
        "1",
        "--key-file",
        str(work / "key"),
        "--strength",
        "35",
    )
    assert res.exit_code == 0, res.output
    assert 33.0 < _rows(res)[0]["psnr"] < 37.0


def test_output_names_are_relative_unique_and_never_an_input(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "sub").mkdir(parents=True)
    b.mkdir()
    for f in (a / "x.jpg", a / "x.png", a / "sub" / "y.jpg", b / "x.jpg", a / "notes.txt"):
        f.write_bytes(b"")
    out = tmp_path / "out"
    out.mkdir()
    (out / "z.png").write_bytes(b"")
    found = expand_inputs([str(a), str(b / "x.jpg"), str(out / "z.png")])
    assert [str(f.relative_to(tmp_path)) for f, _ in found.skipped] == ["a/notes.txt"]
    plan = plan_outputs(found, out, keep_suffix("png"), force=False)
    names = [(str(s.relative_to(tmp_path)), str(d.relative_to(out))) for s, d in plan]
    assert names == [
        ("a/sub/y.jpg", "sub/y.png"),
        ("a/x.jpg", "x.png"),
        ("a/x.png", "x-2.png"),
        ("b/x.jpg", "x-3.png"),
        ("out/z.png", "z-2.png"),
    ]
    same = plan_outputs(expand_inputs([str(a)]), out, keep_suffix("same"), force=False)
    assert [d.name for _, d in same] == ["y.jpg", "x.jpg", "x.png"]
    (out / "x.jpg").write_bytes(b"")  # an earlier run's output: refused without --force
    with pytest.raises(click.ClickException, match="--force"):
        plan_outputs(expand_inputs([str(a)]), out, keep_suffix("same"), force=False)
    assert len(plan_outputs(expand_inputs([str(a)]), out, keep_suffix("same"), force=True)) == 3
    with pytest.raises(click.ClickException, match="never writes over an input"):
        plan_outputs(expand_inputs([str(a / "x.jpg")]), a / "x.jpg", keep_suffix("same"),
                     force=True)


# --- payload parsing -----------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_hex_and_decimal_payloads_agree_with_int_to_bytes(value: int) -> None:
    expected = value.to_bytes(8, "big")
    assert parse_payload(hex(value), 64) == expected
    assert parse_payload(f"0X{value:X}", 64) == expected
    assert parse_payload(str(value), 64) == expected


@given(st.text(min_size=1).filter(lambda t: len(t.encode("utf-8")) <= 8))
def test_text_payload_is_its_utf8_bytes_left_padded(text: str) -> None:
    assert parse_payload("text:" + text, 64) == text.encode("utf-8").rjust(8, b"\0")


def test_payload_capacity_is_the_methods() -> None:
    assert parse_payload("0x1ff", 9) == b"\x01\xff"
    with pytest.raises(PayloadError):
        parse_payload("0x200", 9)
    with pytest.raises(PayloadError, match="at most 1 bytes"):
        parse_payload("text:ab", 9)


def test_the_group_is_part_of_the_tracemark_command(work: Path, marked: Path) -> None:
    from tracemark.cli import main

    res = CliRunner().invoke(
        main, ["watermark", "detect", str(marked), "--key-file", str(work / "key")]
    )
    assert res.exit_code == 0, res.output


@given(st.binary(min_size=8, max_size=8))
def test_printed_payloads_are_accepted_back(payload: bytes) -> None:
    from tracemark.watermark import format_payload

    assert parse_payload(format_payload(payload), 64) == payload


def test_detect_output_payload_feeds_embed(work: Path, marked: Path, tmp_path: Path) -> None:
    printed = _rows(_run("detect", str(marked), "--key-file", str(work / "key")))[0]["payload"]
    res = _run("embed", str(work / "in" / "debian_1.jpg"), "--out", str(tmp_path / "o.png"),
               "--payload", printed, "--key-file", str(work / "key"))
    assert res.exit_code == 0, res.output
    assert _rows(res)[0]["payload"] == printed


# --- embedding over a mark (issue 12, kind 7) ----------------------------------------------


def test_embedding_over_a_mark_keeps_it_or_refuses(work: Path, tmp_path: Path) -> None:
    """The reported chain: embed 0x111, then 0x111 again (kept, pixels unchanged), then
    0x222 (refused, the batch goes on), --allow-remark stacks on purpose."""
    src = work / "in" / Path(IMAGES[0]).name
    key = str(work / "key")
    first = tmp_path / "m1.png"
    res = _run("embed", str(src), "--out", str(first), "--payload", "0x111", "--key-file", key)
    assert res.exit_code == 0, res.output
    assert _rows(res)[0]["mark"] == "embedded"
    again = tmp_path / "m2.png"
    res = _run("embed", str(first), "--out", str(again), "--payload", "0x111", "--key-file", key)
    assert res.exit_code == 0, res.output
    row = _rows(res)[0]
    assert row["mark"] == "kept"
    assert (load_image(again) == load_image(first)).all()
    # another payload: an error line for that image, the clean image beside it is marked
    batch = tmp_path / "batch"
    batch.mkdir()
    shutil.copy(first, batch / "marked.png")
    shutil.copy(work / "in" / Path(IMAGES[1]).name, batch / "clean.jpg")
    res = _run("embed", str(batch), "--out", str(tmp_path / "b-out"), "--payload", "0x222",
               "--key-file", key, "--format", "png")
    rows = {Path(r["source"]).name: r for r in _rows(res)}
    assert res.exit_code != 0
    assert rows["marked.png"]["output"] is None
    assert "AlreadyMarkedError" in json.dumps(rows["marked.png"]["error"])
    assert "0x" in json.dumps(rows["marked.png"]["error"])
    assert rows["clean.jpg"]["error"] is None and rows["clean.jpg"]["mark"] == "embedded"
    assert not (tmp_path / "b-out" / "marked.png").exists()
    res = _run("embed", str(first), "--out", str(tmp_path / "m3.png"), "--payload", "0x222",
               "--key-file", key, "--allow-remark")
    assert res.exit_code == 0, res.output
    assert _rows(res)[0]["mark"] == "remarked"
    # another key's mark is not this key's: embedded normally
    res = _run("embed", str(first), "--out", str(tmp_path / "m4.png"), "--payload", "0x333",
               "--key-file", str(work / "other.key"))
    assert res.exit_code == 0 and _rows(res)[0]["mark"] == "embedded", res.output


def test_embed_once_library() -> None:
    """The library primitive always embeds; embed_once checks first."""
    from tracemark.errors import AlreadyMarkedError
    from tracemark.watermark import embed_once

    if not CORPUS.is_dir():
        pytest.skip("no corpus")
    method = get_method("lattice")
    image = load_image(CORPUS / IMAGES[0])
    marked, outcome = embed_once(method, image, 0x111, KEY)
    assert outcome == "embedded"
    same, outcome = embed_once(method, marked, 0x111, KEY)
    assert outcome == "kept" and (same == marked).all()
    with pytest.raises(AlreadyMarkedError, match="0x0000000000000111"):
        embed_once(method, marked, 0x222, KEY)
    stacked, outcome = embed_once(method, marked, 0x222, KEY, allow_remark=True)
    assert outcome == "remarked" and not (stacked == marked).all()
