"""``tracemark watermark embed|detect``: mark images, and look for the mark, from the shell.

One JSON line per input goes to stdout; a progress bar and a summary go to stderr. A bad
input is reported in its line (``"error": {"type", "message", "source"}``) and the batch
carries on. Keys never appear on the command line (process lists show it to every user):
they come from a file (``--key-file``, raw bytes), an environment variable holding hex
(``--key-env``), or an environment variable holding a passphrase (``--passphrase-env``).

The command helpers (``iter_inputs``, the progress bar, the shared exit codes) live in
:mod:`tracemark.cli`, which adds :data:`watermark_group` to ``tracemark``; they are
imported when a command runs, so either module may be imported first.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tracemark.errors import (
    ConfigError,
    ImageSourceError,
    PayloadError,
    TracemarkError,
    WatermarkKeyError,
)

if TYPE_CHECKING:
    from tracemark.watermark.base import WatermarkMethod
    from tracemark.watermark.keys import WatermarkKey

__all__ = [
    "EXIT_NOT_FOUND",
    "EXIT_SOME_FOUND",
    "parse_payload",
    "read_key",
    "plan_outputs",
    "watermark_group",
]

EXIT_NOT_FOUND = 10
"""``detect``: every input was read, and the mark was found in none of them."""
EXIT_SOME_FOUND = 11
"""``detect``: every input was read; the mark was found in some of them, not all."""

_FORMATS = {"png": ".png", "jpg": ".jpg", "webp": ".webp"}
_LOSSY_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".webp"})
_DEFAULT_QUALITY = 95


# --- pure helpers -----------------------------------------------------------------------


def parse_payload(spec: str, n_bits: int) -> bytes:
    """The payload written as ``0x<hex>``, a decimal integer or ``text:<utf-8>``, as bytes.

    The result has the method's capacity rounded up to whole bytes, big-endian and
    left-padded with zeros, the same form ``detect`` reports. A payload that is malformed
    or does not fit ``n_bits`` raises :class:`~tracemark.errors.PayloadError`.
    """
    from tracemark.watermark.base import bits_to_bytes, payload_to_bits

    value: int | bytes
    if spec.startswith("text:"):
        value = spec[len("text:") :].encode("utf-8")
        if not value:
            raise PayloadError("text payload is empty")
        if len(value) * 8 > n_bits:
            raise PayloadError(
                f"text payload is {len(value)} bytes in UTF-8; the method carries at most "
                f"{n_bits // 8} bytes ({n_bits} bits)"
            )
    elif spec[:2].lower() == "0x":
        digits = spec[2:]
        if not digits or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise PayloadError(f"{spec!r} is not hexadecimal (0x followed by 0-9, a-f)")
        value = int(digits, 16)
    elif spec.isascii() and spec.isdigit():
        value = int(spec)
    else:
        raise PayloadError(
            f"cannot read payload {spec!r}: give 0x<hex>, a decimal integer or text:<utf-8 text>"
        )
    return bits_to_bytes(payload_to_bits(value, n_bits))


def read_key(
    *,
    key_file: str | os.PathLike[str] | None = None,
    key_env: str | None = None,
    passphrase_env: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> WatermarkKey | None:
    """The key from at most one source, or None when none is given.

    ``key_file``: the file's bytes are the key material, as they are (at least 16 bytes;
    a trailing newline is part of the key). ``key_env``: the named environment variable
    holds the key in hex (whitespace and a ``0x`` prefix allowed). ``passphrase_env``: the
    named variable holds a passphrase, stretched with scrypt
    (:func:`tracemark.watermark.keys.as_key`). ``environ`` defaults to ``os.environ``.
    Raises :class:`~tracemark.errors.WatermarkKeyError` or
    :class:`~tracemark.errors.ConfigError`; messages never contain key material.
    """
    from tracemark.watermark.keys import as_key

    given = [
        n
        for n, v in (
            ("--key-file", key_file),
            ("--key-env", key_env),
            ("--passphrase-env", passphrase_env),
        )
        if v is not None
    ]
    if len(given) > 1:
        raise ConfigError(f"give one key source, not {' and '.join(given)}")
    env = os.environ if environ is None else environ
    if key_file is not None:
        try:
            material = Path(key_file).read_bytes()
        except OSError as exc:
            raise WatermarkKeyError(
                f"cannot read the key file: {exc.strerror or exc}", source=os.fspath(key_file)
            ) from exc
        return as_key(material)
    if key_env is not None:
        text = _env_value(env, key_env)
        digits = "".join(text.split())
        if digits[:2].lower() == "0x":
            digits = digits[2:]
        try:
            material = bytes.fromhex(digits)
        except ValueError:
            raise WatermarkKeyError(
                f"environment variable {key_env} must hold the key in hex (an even number of "
                "0-9, a-f digits)"
            ) from None
        return as_key(material)
    if passphrase_env is not None:
        return as_key(_env_value(env, passphrase_env))
    return None


def _env_value(env: Mapping[str, str], name: str) -> str:
    if name not in env:
        raise WatermarkKeyError(f"environment variable {name} is not set")
    return env[name]


def plan_outputs(
    inputs: Iterable[str], out_dir: Path, suffix: str | None
) -> list[tuple[Path, Path]]:
    """``(source, destination)`` for every image of ``inputs`` (files, folders recursively).

    A file in a folder argument keeps its path relative to that folder; a file argument
    keeps its stem. The suffix is ``suffix``, or the source's own (lower-cased) when None.
    A name already used in this batch, or naming an input file, gets ``-2``, ``-3``...;
    other files already in ``out_dir`` (an earlier run's outputs) are replaced.
    A folder argument that is ``out_dir`` or holds it raises
    :class:`~tracemark.errors.ConfigError` (the outputs would be read back as inputs).
    """
    from tracemark.cli import iter_inputs

    out_real = out_dir.resolve()
    planned: list[tuple[Path, Path]] = []
    for raw in inputs:
        root = Path(raw)
        if root.is_dir():
            root_real = root.resolve()
            if out_real == root_real or root_real in out_real.parents:
                raise ConfigError(
                    f"--out {out_dir} is, or is inside, the input folder {raw}; the marked images "
                    "would be read back as inputs: choose a folder outside it"
                )
            planned.extend((p, p.relative_to(root).with_suffix("")) for p in iter_inputs([raw]))
        else:
            planned.extend((p, Path(p.stem or "image")) for p in iter_inputs([raw]))
    taken = {p.resolve() for p, _ in planned}
    plan: list[tuple[Path, Path]] = []
    for src, rel in planned:
        ext = suffix if suffix is not None else src.suffix.lower()
        dest, k = out_dir / f"{rel}{ext}", 2
        while dest.resolve() in taken:
            dest, k = out_dir / f"{rel}-{k}{ext}", k + 1
        taken.add(dest.resolve())
        plan.append((src, dest))
    return plan


def _finite(x: float | None, ndigits: int | None = None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return (round(x, ndigits) if ndigits is not None else float(x)) + 0.0  # no -0.0


# --- click plumbing ---------------------------------------------------------------------


def _key_options(f: Any) -> Any:
    for opt in reversed(
        [
            click.option(
                "--key-file",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                default=None,
                help="File whose raw bytes are the key (at least 16 bytes).",
            ),
            click.option(
                "--key-env",
                metavar="VAR",
                default=None,
                help="Environment variable holding the key in hex.",
            ),
            click.option(
                "--passphrase-env",
                metavar="VAR",
                default=None,
                help="Environment variable holding a passphrase (stretched with scrypt).",
            ),
        ]
    ):
        f = opt(f)
    return f


def _method(name: str, strength: float | None) -> WatermarkMethod:
    from tracemark.watermark import get_method

    try:
        method = get_method(name)
        if strength is not None:
            accepted = inspect.signature(type(method)).parameters
            if "psnr" not in accepted:
                raise click.UsageError(f"method {name!r} has no --strength setting")
            method = get_method(name, psnr=strength)
    except TracemarkError as exc:
        raise click.UsageError(exc.message) from exc
    return method


def _key(method: WatermarkMethod, **sources: Any) -> WatermarkKey | None:
    try:
        key = read_key(**sources)
    except TracemarkError as exc:
        raise click.UsageError(str(exc)) from exc
    if method.keyed and key is None:
        raise click.UsageError(
            f"method {method.name!r} needs a key: give --key-file FILE, --key-env VAR (hex) or "
            "--passphrase-env VAR (keys are never taken on the command line)"
        )
    if not method.keyed and key is not None:
        raise click.UsageError(f"method {method.name!r} is keyless; do not give a key")
    return key


def _write(bar: Any, line: dict[str, Any] | str, *, err: bool = False) -> None:
    """A JSON line to stdout (or a message to stderr) without tearing the progress bar."""
    text = line if isinstance(line, str) else json.dumps(line)
    with type(bar).external_write_mode(file=sys.stderr if err else sys.stdout):
        click.echo(text, err=err)


def _finish(n_ok: int, n_bad: int) -> None:
    from tracemark.cli import EXIT_NOTHING, EXIT_PARTIAL

    if n_ok == 0:
        sys.exit(EXIT_NOTHING)
    if n_bad:
        sys.exit(EXIT_PARTIAL)


@click.group("watermark")
def watermark_group() -> None:
    """Embed and detect invisible watermarks (JSON Lines on stdout)."""


# --- embed ------------------------------------------------------------------------------


@watermark_group.command("embed")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Output folder (created if needed); inputs are never overwritten.",
)
@click.option(
    "--payload",
    "payload_spec",
    required=True,
    help="0x<hex>, a decimal integer, or text:<utf-8 text>; must fit the capacity.",
)
@click.option(
    "--method",
    "method_name",
    default="lattice",
    show_default=True,
    help="Registered watermark method.",
)
@_key_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["png", "jpg", "webp", "same"]),
    default="png",
    show_default=True,
    help="Format written; png keeps the mark exactly, same keeps each input's suffix.",
)
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=None,
    help=f"JPEG/WebP quality (jpg, webp; same for JPEG/WebP inputs) [default: {_DEFAULT_QUALITY}].",
)
@click.option(
    "--strength",
    type=float,
    default=None,
    help="Target PSNR of the mark in dB (lower is stronger), for methods that take it.",
)
@click.argument("inputs", nargs=-1, required=True)
def embed_cmd(
    out_dir: Path,
    payload_spec: str,
    method_name: str,
    key_file: Path | None,
    key_env: str | None,
    passphrase_env: str | None,
    fmt: str,
    quality: int | None,
    strength: float | None,
    inputs: tuple[str, ...],
) -> None:
    """Embed PAYLOAD into every INPUT image (files or folders, recursively).

    Writes OUT/<path relative to the folder argument, or the file's stem>.<format>, with
    -2, -3... on name clashes, and prints one JSON line per input: source, output, method,
    payload (hex, the capacity in whole bytes), psnr (of the written file against the
    input, dB) and error (null, or {type, message, source}). Images are written upright
    (EXIF orientation applied) in RGB, without metadata.

    Exit codes: 0 every input marked; 1 some inputs failed (reported, the rest done);
    2 usage error; 3 no input could be marked.
    """
    from tracemark.cli import _progress
    from tracemark.imageio import load_image, save_image
    from tracemark.metrics import psnr

    if quality is not None and fmt == "png":
        raise click.UsageError("--quality applies to --format jpg, webp or same, not png")
    method = _method(method_name, strength)
    key = _key(method, key_file=key_file, key_env=key_env, passphrase_env=passphrase_env)
    try:
        payload = parse_payload(payload_spec, method.payload_bits)
    except PayloadError as exc:
        raise click.BadParameter(exc.message, param_hint="'--payload'") from exc
    try:
        plan = plan_outputs(inputs, out_dir, _FORMATS.get(fmt))
    except ConfigError as exc:
        raise click.UsageError(exc.message) from exc
    if not plan:
        raise click.UsageError("no input images found")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.UsageError(f"cannot create --out {out_dir}: {exc.strerror or exc}") from exc

    n_ok = n_bad = 0
    with _progress(len(plan), f"embed {method.name}") as bar:
        for src, dest in plan:
            bar.update(1)
            row: dict[str, Any] = {
                "source": str(src),
                "output": None,
                "method": method.name,
                "payload": payload.hex(),
                "psnr": None,
                "error": None,
            }
            try:
                image = load_image(src)
                marked = method.embed(image, payload, key)
                _mkdir(dest.parent)
                lossy = dest.suffix.lower() in _LOSSY_SUFFIXES
                save_image(marked, dest, quality=(quality or _DEFAULT_QUALITY) if lossy else None)
                row["psnr"] = _finite(psnr(image, load_image(dest)), 3)
                row["output"] = str(dest)
                n_ok += 1
            except TracemarkError as exc:
                n_bad += 1
                row["error"] = exc.to_dict()
                _write(bar, f"failed {src}: {exc.message}", err=True)
            _write(bar, row)
    click.echo(f"{n_ok} images marked into {out_dir}; {n_bad} failed", err=True)
    _finish(n_ok, n_bad)


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageSourceError(
            f"cannot create the output folder: {exc.strerror or exc}", source=str(folder)
        ) from exc


# --- detect -----------------------------------------------------------------------------


@watermark_group.command("detect")
@click.option(
    "--method",
    "method_name",
    default="lattice",
    show_default=True,
    help="Registered watermark method.",
)
@_key_options
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=1e-4,
    show_default=True,
    help="False-positive rate: an unmarked image is called marked with at most this "
    "probability (methods with a calibrated p-value).",
)
@click.argument("inputs", nargs=-1, required=True)
def detect_cmd(
    method_name: str,
    key_file: Path | None,
    key_env: str | None,
    passphrase_env: str | None,
    alpha: float,
    inputs: tuple[str, ...],
) -> None:
    """Look for the watermark in every INPUT image (files or folders, recursively).

    Prints one JSON line per input: source, method, present, payload (hex, or null when
    not read), p_value (null for uncalibrated methods), score, bit_errors and error (null,
    or {type, message, source}). An image without the mark is a normal result
    (present: false), not an error.

    \b
    Exit codes:
      0   the mark was found in every input
      10  every input was read; the mark was found in none
      11  every input was read; the mark was found in some, not all
      1   some inputs could not be read (reported, the rest done)
      2   usage error
      3   no input could be read
    """
    from tracemark.cli import _progress, iter_inputs
    from tracemark.imageio import load_image

    method = _method(method_name, None)
    key = _key(method, key_file=key_file, key_env=key_env, passphrase_env=passphrase_env)
    paths = list(iter_inputs(inputs))
    if not paths:
        raise click.UsageError("no input images found")

    n_found = n_ok = n_bad = 0
    with _progress(len(paths), f"detect {method.name}") as bar:
        for src in paths:
            bar.update(1)
            row: dict[str, Any] = {
                "source": str(src),
                "method": method.name,
                "present": None,
                "payload": None,
                "p_value": None,
                "score": None,
                "bit_errors": None,
                "error": None,
            }
            try:
                det = method.detect(load_image(src), key, alpha=alpha)
                row.update(
                    present=bool(det.present),
                    payload=None if det.payload is None else det.payload.hex(),
                    p_value=_finite(det.p_value),
                    score=_finite(det.score),
                    bit_errors=det.bit_errors,
                )
                n_ok += 1
                n_found += bool(det.present)
            except TracemarkError as exc:
                n_bad += 1
                row["error"] = exc.to_dict()
                _write(bar, f"failed {src}: {exc.message}", err=True)
            _write(bar, row)
    click.echo(f"mark found in {n_found} of {n_ok} images read; {n_bad} failed", err=True)
    _finish(n_ok, n_bad)
    if n_found == 0:
        sys.exit(EXIT_NOT_FOUND)
    if n_found < n_ok:
        sys.exit(EXIT_SOME_FOUND)
