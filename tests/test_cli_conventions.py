"""The command line's one vocabulary, and the layering of the package.

* imports run downward only: nothing outside ``tracemark/cli`` imports click or
  ``tracemark.cli``; importing the libraries does not load the command line; no module
  imports a higher layer, and the packages form no cycle;
* every folder command processes every file the loader reads (``.jfif``, ``.jpe``, ``.mpo``,
  ``.JPG``...) and reports the file it skips;
* every command writes plain progress lines to a stderr that is not a terminal;
* ``sign`` and ``watermark embed`` refuse to overwrite without ``--force`` and never write
  over an input;
* the README's command, option and exit-code tables match the command line.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from PIL import Image

from tracemark.cli import main
from tracemark.cli._common import EXIT_CODES
from tracemark.cli._options import ENVIRONMENT

from .conftest import REPO, corpus_crop

SRC = REPO / "src" / "tracemark"

# --- layering ------------------------------------------------------------------------------

LAYERS: list[set[str]] = [
    {"errors", "_optional", "_db", "_lifecycle"},
    {"imageio", "metrics"},
    {"attacks", "fingerprint", "watermark", "index"},
    {"copydetect"},
    {"credentials"},
    {"guard"},
    {"batch", "service", "bench", "diagnostics"},
    {"cli"},
]
"""tracemark's top-level modules by layer: a module may import its own layer's modules and
those of layers above it in this list, never those below."""


def _layer(top: str) -> int:
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"tracemark.{top} is in no layer: add it to LAYERS")


def _imports(path: Path) -> list[str]:
    """Every module a file imports, at module level or inside functions (absolute names)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    rel = path.relative_to(SRC.parent).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                names.append(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.append(node.module)
    return names


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        out.append((parts[0] if parts[0] != "__init__" else "", path))
    return out


def test_only_the_cli_package_imports_click_or_the_cli() -> None:
    offenders = []
    for top, path in _modules():
        if top == "cli":
            continue
        for name in _imports(path):
            if name == "click" or name.startswith("click.") or name.startswith("tracemark.cli"):
                offenders.append(f"{path.relative_to(SRC)} imports {name}")
    assert offenders == []


def test_imports_run_downward_only() -> None:
    upward = []
    graph: dict[str, set[str]] = {}
    for top, path in _modules():
        if not top:
            continue
        for name in _imports(path):
            if not name.startswith("tracemark."):
                continue
            target = name.split(".")[1]
            if target == top:
                continue
            graph.setdefault(top, set()).add(target)
            if _layer(target) > _layer(top):
                upward.append(f"{path.relative_to(SRC)} imports {name}")
    assert upward == []
    # no cycle between packages
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*trail, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


@pytest.mark.parametrize("module", ["tracemark.watermark", "tracemark.credentials",
                                    "tracemark.service.app", "tracemark.copydetect",
                                    "tracemark.bench.watermark", "tracemark.bench.copydetect",
                                    "tracemark.bench.credentials", "tracemark.bench.guard"])
def test_importing_a_library_does_not_load_the_command_line(module: str) -> None:
    code = (f"import sys, {module}; "
            "bad = [m for m in sys.modules if m == 'click' or m.startswith('tracemark.cli')]; "
            "print(bad)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"


# --- one image vocabulary: folder walks ----------------------------------------------------


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Path:
    """Four images under the suffixes a camera or a browser gives (.jfif, .jpe, .mpo, .JPG),
    a PNG without a suffix (found by its bytes) and a text file."""
    root = tmp_path_factory.mktemp("odd") / "in"
    (root / "sub").mkdir(parents=True)
    photos = sorted(p.name for p in (corpus_dir / "photo").glob("*.jpg"))
    crops = [corpus_crop("photo/" + photos[i], 320) for i in range(5)]
    Image.fromarray(crops[0]).save(root / "a.jfif", "JPEG", quality=95)
    Image.fromarray(crops[1]).save(root / "b.jpe", "JPEG", quality=95)
    Image.fromarray(crops[2]).save(root / "sub" / "c.mpo", "MPO", quality=95, save_all=True,
                                   append_images=[Image.fromarray(crops[2][::2, ::2])])
    Image.fromarray(crops[3]).save(root / "D.JPG", "JPEG", quality=95)
    Image.fromarray(crops[4]).save(root / "e_no_suffix", "PNG")
    (root / "notes.txt").write_text("not an image\n")
    return root


IMAGES = {"a.jfif", "b.jpe", "c.mpo", "D.JPG", "e_no_suffix"}


def _run(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed command in a subprocess, stderr to a file (not a terminal)."""
    full_env = {**os.environ, "TRACEMARK_PROGRESS_SECONDS": "0", **(env or {})}
    return subprocess.run([sys.executable, "-c", "from tracemark.cli import main; main()",
                           *map(str, args)], capture_output=True, text=True, env=full_env,
                          timeout=600)


def _lines(res: subprocess.CompletedProcess[str]) -> list[dict]:
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


PROGRESS = re.compile(r"^\S.*: \d+/\d+ images, [\d.]+ img/s, \d+ failed$", re.M)


def _check(res: subprocess.CompletedProcess[str], *, codes: tuple[int, ...] = (0,),
           key: str = "source") -> list[dict]:
    assert res.returncode in codes, res.stderr + res.stdout
    rows = _lines(res)
    skipped = [r for r in rows if r.get("skipped")]
    assert [Path(r[key]).name for r in skipped] == ["notes.txt"], rows
    assert skipped[0]["error"]["type"] == "SkippedFile"
    assert "skipped" in res.stderr and "notes.txt" in res.stderr
    assert PROGRESS.search(res.stderr), res.stderr  # plain progress lines on a non-terminal
    return [r for r in rows if not r.get("skipped")]


def test_watermark_embed_and_detect_process_every_image(odd_folder: Path, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(bytes(range(32)))
    res = _run("watermark", "embed", odd_folder, "--out", tmp_path / "m", "--payload", "0x2a",
               "--key-file", key)
    rows = _check(res)
    assert {Path(r["source"]).name for r in rows} == IMAGES
    assert all(r["error"] is None for r in rows)
    # each output keeps its input's format and suffix (lower case)
    assert sorted(str(p.relative_to(tmp_path / "m")) for p in (tmp_path / "m").rglob("*")
                  if p.is_file()) == sorted(["a.jfif", "b.jpe", "sub/c.jpg", "D.jpg",
                                             "e_no_suffix.png"])
    res = _run("watermark", "detect", odd_folder, "--key-file", key)
    rows = _check(res, codes=(10,))  # nothing marked in the inputs: exit 10
    assert {Path(r["source"]).name for r in rows} == IMAGES


def test_attack_processes_every_image(odd_folder: Path, tmp_path: Path) -> None:
    res = _run("attack", "--suite", "credential-strip", "--out", tmp_path / "a", odd_folder)
    rows = _check(res)
    assert {Path(r["source"]).name for r in rows} == IMAGES
    assert len(rows) == 3 * len(IMAGES)


def test_index_search_scan_calibrate_process_every_image(odd_folder: Path, tmp_path: Path) -> None:
    store = tmp_path / "ix"
    res = _run("index", "add", odd_folder, "--store", store)
    rows = _check(res)
    assert {Path(r["source"]).name for r in rows} == IMAGES and all(r["id"] for r in rows)
    res = _run("search", odd_folder, "--store", store)
    rows = _check(res, key="query")
    assert {Path(r["query"]).name for r in rows} == IMAGES
    assert all(r["matches"] and r["matches"][0]["decision"] for r in rows)
    res = _run("scan", odd_folder, "--against", store)
    rows = _check(res, key="query")
    assert {Path(r["query"]).name for r in rows if "summary" not in r} == IMAGES
    res = _run("index", "calibrate", odd_folder, "--store", store)  # all in the collection
    assert res.returncode == 2 and "notes.txt" in res.stderr
    other = tmp_path / "other-ix"
    assert _run("index", "add", odd_folder / "D.JPG", "--store", other).returncode == 0
    res = _run("index", "calibrate", odd_folder, "--store", other)
    (summary,) = _check(res)
    assert summary["used"] == 4 and summary["in_collection"] == 1 and summary["skipped_files"] == 1


@pytest.mark.filterwarnings("ignore")
def test_sign_and_verify_process_every_image(odd_folder: Path, tmp_path: Path) -> None:
    pytest.importorskip("c2pa")
    certs = tmp_path / "certs"
    assert _run("certs", "init", certs).returncode == 0
    store = tmp_path / "store"
    res = _run("sign", odd_folder, "--out", tmp_path / "s", "--store", store,
               "--cert", certs / "signer.pem", "--key", certs / "signer.key")
    rows = _check(res)
    assert {Path(r["source"]).name for r in rows} == IMAGES
    assert all(r["error"] is None and r["manifest_id"] for r in rows), rows
    res = _run("credentials", "calibrate", odd_folder, "--store", store)
    assert res.returncode == 0, res.stderr
    assert "notes.txt" in res.stderr and _lines(res)[-1]["null_samples"] > 0
    res = _run("verify", odd_folder, "--store", store)
    # the inputs carry no manifest; their fingerprints lead to the manifests of their
    # signed copies where the fingerprint route is sure enough: 0, 10 or 11
    rows = _check(res, codes=(0, 10, 11))
    assert {Path(r["source"]).name for r in rows} == IMAGES


# --- never over an input, never over an output without --force ---------------------------


def test_sign_refuses_to_overwrite_and_never_writes_over_its_input(tmp_path: Path) -> None:
    pytest.importorskip("c2pa")
    runner = CliRunner()
    certs = tmp_path / "certs"
    assert runner.invoke(main, ["certs", "init", str(certs)]).exit_code == 0
    src = tmp_path / "in.png"
    Image.fromarray(corpus_crop("art/debian_1.jpg", 256)).save(src)
    original = src.read_bytes()
    sign = ["sign", "--store", str(tmp_path / "store"), "--cert", str(certs / "signer.pem"),
            "--key", str(certs / "signer.key")]
    for force in ([], ["--force"]):
        res = runner.invoke(main, [*sign, str(src), "--out", str(src), *force])
        assert res.exit_code == 2 and "never writes over an input" in res.stderr
        assert src.read_bytes() == original
    out = tmp_path / "out.png"
    out.write_bytes(b"a user's file")
    res = runner.invoke(main, [*sign, str(src), "--out", str(out)])
    assert res.exit_code == 2 and "--force" in res.stderr
    assert out.read_bytes() == b"a user's file"
    res = runner.invoke(main, [*sign, str(src), "--out", str(out), "--force"])
    assert res.exit_code == 0, res.output
    assert out.read_bytes() != b"a user's file" and src.read_bytes() == original
    # a folder run over its own folder: refused
    res = runner.invoke(main, [*sign, str(tmp_path), "--out", str(tmp_path / "signed")])
    assert res.exit_code == 2 and "input folder" in res.stderr


# --- the README matches the command line ---------------------------------------------------


def _leaves(cmd: click.Command, path: list[str]) -> list[tuple[str, click.Command]]:
    if isinstance(cmd, click.Group):
        return [leaf for name in sorted(cmd.commands)
                for leaf in _leaves(cmd.commands[name], [*path, name])]
    return [(" ".join(path), cmd)]


def _readme_table(heading: str) -> list[list[str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row.strip("|").split(" | ")] for row in rows[2:]]


def test_readme_command_table_matches_help() -> None:
    readme = {row[0].strip("`"): row[1] for row in _readme_table("### Commands")}
    actual = {path: cmd.get_short_help_str(limit=300)
              for path, cmd in _leaves(main, ["tracemark"])}
    assert readme == actual, "regenerate the README's command table from `tracemark --help`"


def test_readme_exit_code_table_matches_help() -> None:
    readme = {int(row[0]): row[1] for row in _readme_table("### Exit codes")}
    assert readme == EXIT_CODES
    help_text = CliRunner().invoke(main, ["--help"], terminal_width=400).output
    for code, text in EXIT_CODES.items():
        assert re.search(rf"^\s+{code}\s+{re.escape(text)}$", help_text, re.M), code


def test_every_environment_variable_is_documented_and_wired() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    wired: dict[str, set[str]] = {}
    for path, cmd in _leaves(main, ["tracemark"]):
        for param in cmd.params:
            names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
            for env in names:
                wired.setdefault(env, set()).add(path)
            if isinstance(param, click.Option) and "--store" in param.opts:
                assert param.envvar == "TRACEMARK_STORE", path
            if isinstance(param, click.Option) and "--database-url" in param.opts:
                assert param.envvar == "TRACEMARK_DATABASE_URL", path
    for env in wired:
        assert env in ENVIRONMENT, env
    for env in ENVIRONMENT:
        assert f"`{env}`" in readme, f"{env} is not in the README"
        if env != "TRACEMARK_PROGRESS_SECONDS":
            assert env in wired, f"{env} is documented but no option reads it"


def test_every_data_command_names_its_store_with_store() -> None:
    for path, cmd in _leaves(main, ["tracemark"]):
        opts = {o for p in cmd.params if isinstance(p, click.Option) for o in p.opts}
        assert not ({"--db", "--data"} & opts) or "--store" in opts, path
        hidden = {o for p in cmd.params if isinstance(p, click.Option) and p.hidden
                  for o in p.opts}
        assert {"--db", "--data"} & opts <= hidden, path


def test_help_is_fast_and_loads_no_heavy_module() -> None:
    code = ("import sys; from tracemark.cli import main\n"
            "heavy = [m for m in ('numpy', 'cv2', 'faiss', 'c2pa', 'sqlalchemy', 'PIL') "
            "if m in sys.modules]\nprint(heavy)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"


def test_doctor_reports_extras_and_engines() -> None:
    res = CliRunner().invoke(main, ["doctor", "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    names = {(r["kind"], r["name"]) for r in rows}
    for extra in ("c2pa", "service", "bench", "peers", "dev"):
        assert ("extras", extra) in names
    assert ("engines", "faiss-cpu") in names and all("error" in r for r in rows)


# --- links never lead a write into an input ------------------------------------------------


def _png(path: Path, value: int = 0) -> None:
    Image.new("RGB", (200, 160), (value, 90, 200 - value)).save(path)


def test_outputs_never_write_through_links_into_inputs(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(bytes(range(32)))
    src = tmp_path / "in"
    src.mkdir()
    img = src / "g.png"
    Image.fromarray(corpus_crop("art/debian_1.jpg", 256)).save(img)
    original = img.read_bytes()
    runner = CliRunner()
    embed = ["watermark", "embed", "--payload", "7", "--key-file", str(key)]
    # an output name that is a hard link to the input, with --force
    out = tmp_path / "out"
    out.mkdir()
    os.link(img, out / "hard.png")
    res = runner.invoke(main, [*embed, str(img), "--out", str(out / "hard.png"), "--force"])
    assert res.exit_code == 2 and "never writes over an input" in res.stderr
    # a planned output that is a symbolic link to the input: written beside, never through
    os.symlink(img, out / "g.png")
    res = runner.invoke(main, [*embed, str(img), "--out", str(out), "--force"])
    assert res.exit_code == 0, res.output
    assert Path(json.loads(res.stdout)["output"]).name == "g-2.png" and "g-2.png" in res.stderr
    # attack with --force over links to the input (the attacked files and the manifest)
    att = tmp_path / "att"
    (att / "g").mkdir(parents=True)
    os.symlink(img, att / "g" / "blur_4.png")
    os.link(img, att / "manifest.jsonl")
    res = runner.invoke(main, ["attack", "--suite", "tree-ring", "--out", str(att), str(img),
                               "--force"])
    assert res.exit_code == 0, res.output
    assert img.read_bytes() == original


def test_an_output_folder_linked_into_the_input_folder_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(bytes(range(32)))
    (tmp_path / "in" / "sub").mkdir(parents=True)
    Image.fromarray(corpus_crop("art/debian_1.jpg", 256)).save(tmp_path / "in" / "sub" / "h.png")
    (tmp_path / "out").mkdir()
    os.symlink(tmp_path / "in" / "sub", tmp_path / "out" / "sub")
    res = CliRunner().invoke(main, ["watermark", "embed", str(tmp_path / "in"), "--out",
                                    str(tmp_path / "out"), "--payload", "1", "--key-file",
                                    str(key), "--force"])
    assert res.exit_code == 2 and "inside the input folder" in res.stderr
    assert sorted(p.name for p in (tmp_path / "in" / "sub").iterdir()) == ["h.png"]


def test_folder_links_are_followed_once_and_loops_reported(tmp_path: Path) -> None:
    from tracemark.cli._common import expand_inputs

    (tmp_path / "elsewhere").mkdir()
    _png(tmp_path / "elsewhere" / "x.png")
    (tmp_path / "in" / "sub").mkdir(parents=True)
    _png(tmp_path / "in" / "a.png")
    os.symlink(tmp_path / "elsewhere", tmp_path / "in" / "linked")
    os.symlink("..", tmp_path / "in" / "sub" / "loop")
    found = expand_inputs([tmp_path / "in"])
    assert [p.relative_to(tmp_path / "in").as_posix() for p in found.paths] == [
        "a.png", "linked/x.png"]
    assert [(p.name, why) for p, why in found.skipped] == [
        ("loop", "symbolic link to a folder already walked")]


def test_same_format_follows_the_content(tmp_path: Path) -> None:
    from tracemark.cli._common import keep_suffix

    jpeg_no_suffix = tmp_path / "photo"
    Image.new("RGB", (8, 8)).save(jpeg_no_suffix, "JPEG")
    png_as_jpg = tmp_path / "really.jpg"
    Image.new("RGB", (8, 8)).save(png_as_jpg, "PNG")
    mpo = tmp_path / "c.mpo"
    Image.new("RGB", (8, 8)).save(mpo, "JPEG")
    jfif = tmp_path / "d.JFIF"
    Image.new("RGB", (8, 8)).save(jfif, "JPEG")
    same = keep_suffix("same")
    assert [same(p) for p in (jpeg_no_suffix, png_as_jpg, mpo, jfif)] == [
        ".jpg", ".png", ".jpg", ".jfif"]
    tif = tmp_path / "t.tif"
    Image.new("RGB", (8, 8)).save(tif, "TIFF")
    assert keep_suffix("same", writable={".jpg", ".png", ".webp"})(tif) == ".png"
    assert keep_suffix("webp")(tif) == ".webp"
