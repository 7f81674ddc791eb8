"""What every ``tracemark`` command shares: exit codes, options, inputs, outputs, progress.

Conventions (the README's command-line table lists them):

* one JSON line per item on stdout, each with an ``error`` key (null, or
  ``{"type", "message", "source"}``); people's messages, progress and a summary on stderr;
* inputs are files or folders (walked recursively, sorted); a file in a folder whose
  suffix the loader does not read, and whose first bytes are no image either, is reported
  as skipped (a JSON line with ``"skipped": true`` and a stderr line), never dropped
  silently; hidden files and folders (names starting with ``.``) are counted as skipped;
* ``--out`` names the output (a folder, or a file when one file goes in); an existing
  output is refused unless ``--force``; an input is never written over, even with
  ``--force``;
* ``--store`` names the data location of every command that keeps data; a store named on
  the command line (or by ``TRACEMARK_STORE``) that does not exist is an error;
* the exit codes of :data:`EXIT_CODES`;
* a command that writes to a store prints an item's line only once the write is committed
  (:class:`Acknowledgements`): a run killed at any point has made durable every item whose
  line it printed.

This module imports only click and the standard library at import time, so that
``tracemark --help`` starts fast.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import click

__all__ = [
    "DEFAULT_QUALITY",
    "EXIT_CODES",
    "EXIT_INVALID",
    "EXIT_NONE_FOUND",
    "EXIT_NOTHING",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_SOME_FOUND",
    "EXIT_UNKNOWN",
    "EXIT_USAGE",
    "Acknowledgements",
    "Batch",
    "ConfigurationError",
    "Inputs",
    "JsonLines",
    "is_lossy",
    "Progress",
    "Tally",
    "batch_executor",
    "collect_sources",
    "expand_inputs",
    "loaded",
    "plan_outputs",
    "source_for",
]

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_NOTHING = 3
EXIT_NONE_FOUND = 10
EXIT_SOME_FOUND = 11
EXIT_INVALID = 12
EXIT_UNKNOWN = 13

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success: every item was processed (and, for a command that looks for "
             "something, it was found in every item)",
    EXIT_PARTIAL: "some items failed (each reported in its JSON line; the rest were done)",
    EXIT_USAGE: "usage or configuration error (bad option, missing store, unreadable key or "
                "certificate, existing output without --force): nothing was done",
    EXIT_NOTHING: "no item could be processed",
    EXIT_NONE_FOUND: "every item was processed; what the command looks for (a watermark, a "
                     "copy, a manifest, a replication) was found in none",
    EXIT_SOME_FOUND: "every item was processed; it was found in some items, not all",
    EXIT_INVALID: "verify: some image carries an invalid (tampered) manifest",
    EXIT_UNKNOWN: "every item was processed; for some, the method cannot tell whether what "
                  "it looks for is there (watermark detect with a peer method: bits read, "
                  "presence unknown; verify: a remote manifest not fetched, or one c2pa "
                  "does not validate)",
}
"""The one exit-code table of every command (``tracemark --help`` prints it)."""

DEFAULT_QUALITY = 95
"""JPEG/WebP quality of every written lossy image unless ``--quality`` says otherwise."""

def is_lossy(suffix: str) -> bool:
    """Is an output with this suffix written with a quality setting (JPEG, WebP, AVIF,
    HEIF/HEIC)?"""
    from tracemark.imageio import written_suffixes

    return written_suffixes().get(suffix.lower()) in ("JPEG", "WEBP", "AVIF", "HEIF")

PROGRESS_SECONDS_ENV = "TRACEMARK_PROGRESS_SECONDS"
"""Seconds between plain progress lines when stderr is not a terminal (default 10)."""


class ConfigurationError(click.ClickException):
    """A usage or configuration error found after parsing (missing store, bad key,
    existing output...): exit code 2, message on stderr."""

    exit_code = EXIT_USAGE


def fail(message: str) -> ConfigurationError:
    """The error to raise for a configuration problem (exit code 2)."""
    return ConfigurationError(message)


# --- JSON Lines ---------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None (JSON has no NaN or infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def dumps(record: dict[str, Any]) -> str:
    """One JSON line (numpy scalars as numbers, paths as strings, NaN as null)."""
    return json.dumps(_clean(record), default=lambda o: o.item() if hasattr(o, "item") else str(o))


class JsonLines:
    """Writes one JSON object per line to ``stream`` (stdout by default), with an ``error``
    key in every item line (null unless given), without tearing a progress bar."""

    def __init__(self, stream: TextIO | None = None, progress: Progress | None = None) -> None:
        self.stream = stream
        self.progress = progress

    def item(self, record: dict[str, Any]) -> None:
        record = {**record}
        record.setdefault("error", None)
        self._write(dumps(record))

    def record(self, record: dict[str, Any]) -> None:
        """A line that is not an item (a summary): written as it is."""
        self._write(dumps(record))

    def _write(self, text: str) -> None:
        stream = self.stream or sys.stdout
        if self.progress is not None:
            self.progress.clear()
        stream.write(text + "\n")
        stream.flush()
        if self.progress is not None:
            self.progress.refresh()


class Acknowledgements:
    """The lines of a command's writes, printed only once a commit made them durable.

    :meth:`wait` keeps a line back until the next commit; :meth:`tick` commits when
    ``every`` lines wait or ``seconds`` passed since the last commit (``seconds=0``: at every
    tick), then prints the waiting lines in order; :meth:`flush` commits and prints what is
    left (call it at the end, and only on success: lines still waiting when the command
    fails are never printed, because their writes are not committed). A killed command has
    printed only lines whose writes were committed.
    """

    def __init__(self, emit: Callable[[dict[str, Any]], None], commit: Callable[[], None], *,
                 every: int | None = None, seconds: float = 0.0) -> None:
        self._emit, self._commit = emit, commit
        self.every, self.seconds = every, seconds
        self._waiting: list[dict[str, Any]] = []
        self._last = time.monotonic()

    def wait(self, row: dict[str, Any]) -> None:
        """Hold ``row`` back until the next commit."""
        self._waiting.append(row)

    def tick(self) -> None:
        """Commit and print the waiting lines when a commit is due."""
        due = time.monotonic() - self._last >= self.seconds or (
            self.every is not None and len(self._waiting) >= self.every)
        if due:
            self.flush()

    def flush(self) -> None:
        """Commit, then print every waiting line."""
        self._commit()
        self._last = time.monotonic()
        waiting, self._waiting = self._waiting, []
        for row in waiting:
            self._emit(row)


def note(message: str, progress: Progress | None = None) -> None:
    """A message for people on stderr."""
    if progress is not None:
        progress.clear()
    click.echo(message, err=True)
    if progress is not None:
        progress.refresh()


# --- progress -----------------------------------------------------------------------------


class Progress:
    """Progress on stderr: a tqdm bar on a terminal; otherwise (CI logs, pipes, files) a
    plain line such as ``index add: 120/5000 images, 14.2 img/s, 2 failed`` at the first
    item, every ``interval`` seconds (``$TRACEMARK_PROGRESS_SECONDS``, default 10) and at
    the end."""

    def __init__(self, total: int | None, desc: str, *, unit: str = "images",
                 stream: TextIO | None = None, interval: float | None = None) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.stream = stream or sys.stderr
        self.done = 0
        self.failed = 0
        self._t0 = time.monotonic()
        self._last = -math.inf
        self._printed = 0
        if interval is None:
            try:
                interval = float(os.environ.get(PROGRESS_SECONDS_ENV, "10"))
            except ValueError:
                interval = 10.0
        self.interval = max(0.0, interval)
        self._bar: Any = None
        isatty = getattr(self.stream, "isatty", None)
        if isatty is not None and isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="img", file=self.stream, leave=False)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1, *, failed: int = 0) -> None:
        self.done += n
        self.failed += failed
        if self._bar is not None:
            self._bar.update(n)
            if failed:
                self._bar.set_postfix(failed=self.failed, refresh=False)
            return
        now = time.monotonic()
        if self._printed == 0 or now - self._last >= self.interval:
            self._line()
            self._last = now

    def _line(self) -> None:
        self._printed = self.done
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        total = "" if self.total is None else f"/{self.total}"
        self.stream.write(f"{self.desc}: {self.done}{total} {self.unit}, "
                          f"{self.done / elapsed:.1f} img/s, {self.failed} failed\n")
        self.stream.flush()

    def clear(self) -> None:
        if self._bar is not None:
            self._bar.clear()

    def refresh(self) -> None:
        if self._bar is not None:
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.done and self._printed != self.done:
            self._line()


# --- inputs -------------------------------------------------------------------------------


@dataclass
class Inputs:
    """The expansion of the command line's inputs: ``paths`` to process (sorted within each
    folder, in argument order) and ``skipped`` files of folders that are not images
    (``(path, reason)``)."""

    paths: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    roots: dict[Path, Path] = field(default_factory=dict)
    """Each path found in a folder argument, mapped to that folder."""


def _is_image_file(path: Path, formats: Any = "default") -> tuple[bool, str]:
    from tracemark.imageio import format_of_suffix, sniff_format

    if format_of_suffix(path.suffix, formats) is not None:
        return True, ""
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError as exc:
        return False, f"cannot read: {exc.strerror or exc}"
    if sniff_format(head, formats) is not None:
        return True, ""
    other = format_of_suffix(path.suffix, "all") or sniff_format(head, "all")
    if other is not None:
        return False, f"a {other} image: read only with --formats all (or a list naming it)"
    return False, f"not an image tracemark reads (suffix {path.suffix or '(none)'!r})"


def expand_inputs(inputs: Iterable[str | os.PathLike[str]], *,
                  formats: Any = "default") -> Inputs:
    """Expand files and folders (recursively) into the files to process.

    A file named on the command line is always kept, whatever its suffix, so that a bad
    file is reported by the command. In a folder, a file is kept when the loader reads its
    suffix (:func:`tracemark.imageio.image_suffixes` of ``formats``, the command's
    ``--formats``; any case) or its first bytes are an image of those formats
    (:func:`tracemark.imageio.sniff_format`); other files, and hidden files and
    folders, are returned in ``skipped`` with the reason. Symbolic links to folders are
    followed, once each (a link back into the walk is reported as skipped).
    """
    out = Inputs()
    for raw in inputs:
        p = Path(raw)
        if not p.is_dir():
            out.paths.append(p)
            continue
        kept: list[Path] = []
        seen = {os.path.realpath(p)}
        for dirpath, dirnames, filenames in os.walk(p, followlinks=True):
            base = Path(dirpath)
            walk = []
            for d in sorted(dirnames):
                if d.startswith("."):
                    out.skipped.append((base / d, "hidden folder"))
                    continue
                real = os.path.realpath(base / d)
                if real in seen:  # a symbolic link back into the walk: a loop
                    out.skipped.append((base / d, "symbolic link to a folder already walked"))
                    continue
                seen.add(real)
                walk.append(d)
            dirnames[:] = walk
            for name in sorted(filenames):
                f = base / name
                if name.startswith("."):
                    out.skipped.append((f, "hidden file"))
                    continue
                if not f.is_file():
                    out.skipped.append((f, "not a regular file (a broken link, a pipe...)"))
                    continue
                ok, reason = _is_image_file(f, formats)
                if ok:
                    kept.append(f)
                    out.roots[f] = p
                else:
                    out.skipped.append((f, reason))
        out.paths.extend(sorted(kept))
    return out


def source_for(formats: Any) -> Callable[[Path], Any]:
    """What to hand a library call that loads images itself (copy detection, the
    credential store) for a ``path``, under the command's ``--formats``: the path itself
    for the default set (the library reads it), else the image decoded here with those
    formats (:func:`tracemark.imageio.load_image`; its typed error is raised here)."""
    if formats == "default":
        return lambda path: path
    from tracemark.imageio import load_image

    return lambda path: load_image(path, formats=formats)


def loaded(paths: Iterable[Path], formats: Any) -> list[Any]:
    """:func:`source_for` of each path, for a call that skips images it cannot read
    (calibration): the paths for the default set; otherwise the images decoded up front,
    leaving out those that cannot be read."""
    from tracemark.errors import TracemarkError

    load, out = source_for(formats), []
    for path in paths:
        try:
            out.append(load(path))
        except TracemarkError:
            continue
    return out


def report_skipped(inputs: Inputs, lines: JsonLines | None, *, what: str = "source") -> None:
    """Report every skipped file: a JSON line ``{what: path, "skipped": true, "error":
    {"type": "SkippedFile", ...}}`` (when ``lines``) and a stderr line."""
    for path, reason in inputs.skipped:
        if lines is not None:
            lines.item({what: str(path), "skipped": True,
                        "error": {"type": "SkippedFile", "message": reason, "source": str(path)}})
        note(f"skipped {path}: {reason}")


def collect_inputs(inputs: Sequence[str], lines: JsonLines | None, *, what: str = "input",
                   key: str = "source", report: bool = True, formats: Any = "default") -> Inputs:
    """:func:`expand_inputs` (with the command's ``--formats``), skipped files reported
    (unless ``report`` is false: the caller reports them with :func:`report_skipped` once
    it has checked its outputs); no image at all is a usage error."""
    found = expand_inputs(inputs, formats=formats)
    if report:
        report_skipped(found, lines, what=key)
    if not found.paths:
        raise click.UsageError(f"no {what} images found"
                               + (f" ({len(found.skipped)} files skipped)" if found.skipped else ""))
    return found


def collect_sources(inputs: Sequence[str], lines: JsonLines | None, *, what: str = "input",
                    key: str = "source", formats: Any = "default") -> Inputs:
    """:func:`collect_inputs` for a batch job (``--ray``): an input may also be an fsspec
    URL (``file:///data/``, ``s3://bucket/prefix/``), a folder of which is expanded by
    suffix (:func:`tracemark.batch.expand_url`); ``paths`` are then strings (a local
    path as :func:`expand_inputs` gives it, or a URL). A URL that cannot be listed (an
    unreachable host, a 404) is kept as one input: its worker reports why it cannot be
    read, and the batch carries on."""
    from tracemark.batch import expand_url, is_url
    from tracemark.errors import ConfigError

    out = Inputs()
    for raw in inputs:
        if is_url(raw):
            try:
                sources, skipped = expand_url(raw, formats=formats)
            except ConfigError as exc:
                # an input the batch reports (its worker's error) and carries on without
                note(f"cannot list {raw} ({exc.message}): read as one image")
                sources, skipped = [raw], []
            out.paths.extend(sources)  # type: ignore[arg-type]
            out.skipped.extend(skipped)  # type: ignore[arg-type]
        else:
            found = expand_inputs([raw], formats=formats)
            out.paths.extend(found.paths)
            out.skipped.extend(found.skipped)
            out.roots.update(found.roots)
    report_skipped(out, lines, what=key)
    if not out.paths:
        raise click.UsageError(f"no {what} images found"
                               + (f" ({len(out.skipped)} files skipped)" if out.skipped else ""))
    return out


def batch_executor(ray_address: str | None) -> Any:
    """The executor of a batch command: :class:`tracemark.batch.RayExecutor` for ``--ray``
    (a missing extra or an unreachable cluster is a usage error, exit code 2), else a
    :class:`tracemark.batch.LocalExecutor`."""
    from tracemark.batch import open_executor
    from tracemark.errors import TracemarkError

    try:
        return open_executor(ray_address)
    except TracemarkError as exc:
        raise fail(f"--ray: {exc.message}") from exc


# --- outputs ------------------------------------------------------------------------------


def plan_outputs(found: Inputs, out: Path, suffix: Callable[[Path], str], *,
                 force: bool,
                 resumed: Callable[[Path, list[Path]], Path | None] | None = None,
                 ) -> list[tuple[Path, Path]]:
    """``(source, destination)`` for every input.

    ``out`` is a folder, or, when a single file goes in and ``out`` has an image suffix and
    is not an existing folder, the output file itself. In a folder, a file found in a
    folder argument keeps its path relative to it, a file argument keeps its stem;
    ``suffix(source)`` gives the extension. Two inputs that would land on the same name
    (compared case-insensitively), or a name that is an input's (also through a symbolic
    or hard link), get ``-2``, ``-3``... and a note on stderr says so.

    ``resumed(source, candidates)``, when given, names the output a previous run already
    wrote for ``source`` (a resume): ``candidates`` are the existing files in ``out`` named
    like its output (``name``, ``name-2``, ``name-3``... with its extension; not yet claimed
    by another input), and the one returned is kept as its destination. These are settled
    first, so a new input never takes the name of an earlier run's output and earlier inputs
    keep theirs, whatever the clash renames of that run were.

    Raises :class:`ConfigurationError` when an output exists and ``force`` is false, when
    the output file named is an input (never written over, even with ``force``), or when ``out`` is inside a folder
    argument (the outputs would be read back as inputs).
    """
    from tracemark.imageio import format_of_suffix

    sources = found.paths
    inputs_real = {_key(p) for p in sources}
    inputs_ids = {i for i in (_file_id(p) for p in sources) if i is not None}
    roots_real = [Path(os.path.realpath(r)) for r in set(found.roots.values())]

    def inside_an_input_folder(dest: Path) -> Path | None:
        real = Path(os.path.realpath(dest.parent))
        for root in roots_real:
            if real == root or root in real.parents:
                return root
        return None

    if len(sources) == 1 and not found.roots and _key(out) in inputs_real:
        raise fail(f"--out {out} is the input: tracemark never writes over an input")
    kept: dict[Path, Path] = {}  # source -> an earlier run's output (``resumed``)
    single_file = (len(sources) == 1 and not found.roots and not out.is_dir()
                   and format_of_suffix(out.suffix) is not None)
    if single_file:
        plan = [(sources[0], out)]
    else:
        for root in roots_real:
            out_real = Path(os.path.realpath(out))
            if out_real == root or root in out_real.parents:
                raise fail(f"--out {out} is, or is inside, an input folder ({root}): the "
                           "outputs would be read back as inputs; choose a folder outside it")
        taken: set[str] = set(inputs_real)  # an input's name is never an output's
        names: dict[Path, tuple[Path, str]] = {}
        for src in sources:
            root = found.roots.get(src)
            rel = src.relative_to(root).with_suffix("") if root is not None else Path(src.stem or "image")
            names[src] = (rel, suffix(src))
        if resumed is not None:
            for src, (rel, ext) in names.items():
                same_name = re.compile(rf"{re.escape(rel.name)}(-[0-9]+)?{re.escape(ext)}")
                folder = (out / rel).parent
                candidates = sorted(
                    (p for p in folder.iterdir() if same_name.fullmatch(p.name)
                     and _key(p) not in taken and _file_id(p) not in inputs_ids),
                    key=lambda p: (len(p.name), p.name)) if folder.is_dir() else []
                dest = resumed(src, candidates) if candidates else None
                if dest is not None:
                    kept[src] = dest
                    taken.add(_key(dest))
        plan = []
        for src in sources:
            if src in kept:
                plan.append((src, kept[src]))
                continue
            rel, ext = names[src]
            dest, k = out / f"{rel}{ext}", 2
            while _key(dest) in taken or _file_id(dest) in inputs_ids:
                dest, k = out / f"{rel}-{k}{ext}", k + 1
            if k > 2:
                note(f"note: {src} is written as {dest.name} (its name was taken by an input "
                     "or another output)")
            taken.add(_key(dest))
            plan.append((src, dest))
    for _src, dest in plan:
        if _key(dest) in inputs_real or _file_id(dest) in inputs_ids:
            raise fail(f"{dest} is an input: tracemark never writes over an input (choose "
                       "another --out)")
        root = inside_an_input_folder(dest)
        if root is not None:
            raise fail(f"{dest} lands inside the input folder {root} (through a link): the "
                       "outputs would be read back as inputs; choose another --out")
        if (dest.exists() or dest.is_symlink()) and not force and _src not in kept:
            raise fail(f"{dest} exists: give --force to overwrite it, or choose another --out")
    return plan


def _key(path: Path) -> str:
    """A path's identity for name clashes: its real path, case-folded (so that outputs
    never clash on a case-insensitive file system either)."""
    return os.path.realpath(path).casefold()


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing file (hard links share it), else None."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


_CANONICAL_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif",
                     "BMP": ".bmp", "GIF": ".gif", "AVIF": ".avif", "HEIF": ".heic"}


def keep_suffix(fmt: str | None, *, writable: Iterable[str] | None = None,
                fallback: str = ".png") -> Callable[[Path], str]:
    """The output suffix rule: ``fmt`` (``"png"``, ``"jpg"``, ``"webp"``) when given;
    otherwise (``"same"``) the input's format, told by its first bytes: its own suffix
    (lower case) when that names the format, else the format's usual suffix (a JPEG
    without a suffix or named ``.mpo`` is written as ``.jpg``); ``fallback`` when the
    format is not in ``writable`` (default: every format the loader writes)."""
    if fmt is not None and fmt != "same":
        ext = "." + fmt
        return lambda _src: ext

    def same(src: Path) -> str:
        from tracemark.imageio import format_of_suffix, sniff_format

        try:
            with src.open("rb") as fh:
                actual = sniff_format(fh.read(64))
        except OSError:
            actual = None
        own = src.suffix.lower()
        actual = actual or format_of_suffix(own)
        if actual not in _CANONICAL_SUFFIX:  # unknown, or read only (PSD, JPEG 2000...)
            return fallback
        ext = own if format_of_suffix(own) == actual and own not in (".mpo", ".apng") \
            else _CANONICAL_SUFFIX[actual]
        ok = set(writable) if writable is not None else None
        return ext if ok is None or ext in ok else fallback

    return same


# --- tallies and exit codes ---------------------------------------------------------------


@dataclass
class Tally:
    """Counts of one batch and the exit code they give (:data:`EXIT_CODES`)."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    found: int = 0
    invalid: int = 0
    unknown: int = 0
    """Items processed for which the method cannot tell whether it found anything."""

    def exit_code(self, *, finding: bool = False) -> int:
        """``finding``: the command looks for something in each item (10/11/13 apply)."""
        if self.ok == 0:
            return EXIT_NOTHING
        if self.failed:
            return EXIT_PARTIAL
        if self.invalid:
            return EXIT_INVALID
        if finding and self.unknown:
            return EXIT_UNKNOWN
        if finding and self.found == 0:
            return EXIT_NONE_FOUND
        if finding and self.found < self.ok:
            return EXIT_SOME_FOUND
        return EXIT_OK

    def finish(self, *, finding: bool = False) -> None:
        """Exit with :meth:`exit_code` when it is not 0."""
        code = self.exit_code(finding=finding)
        if code:
            sys.exit(code)


class Batch:
    """The per-item loop every batch command shares: progress on stderr, one JSON line per
    item (with its ``error``), a failed item reported and the batch carried on, and the
    :class:`Tally` that gives the exit code. An item's line is written when its ``work``
    returns, so a ``work`` that writes to a store commits before returning (as
    :func:`tracemark.credentials.sign_image` does); batched commits use
    :class:`Acknowledgements` instead."""

    def __init__(self, total: int, desc: str, lines: JsonLines, *, skipped: int = 0) -> None:
        self.lines = lines
        self.tally = Tally(skipped=skipped)
        self.progress = Progress(total, desc)
        lines.progress = self.progress

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.close()

    def run(self, source: object, row: dict[str, Any],
            work: Callable[[dict[str, Any]], bool | None]) -> dict[str, Any]:
        """Call ``work(row)``, which fills ``row`` and returns whether what the command looks
        for was found (None when it looks for nothing; a command that cannot tell for an
        item counts it in ``tally.unknown`` itself); a :class:`TracemarkError` becomes the
        row's ``error``. Writes the row and returns it."""
        from tracemark.errors import TracemarkError

        row.setdefault("error", None)
        try:
            found = work(row)
            self.tally.ok += 1
            self.tally.found += bool(found)
            self.tally.invalid += row.get("state") == "invalid"
        except TracemarkError as exc:
            self.tally.failed += 1
            row["error"] = error_dict(exc, source)
            note(f"failed {source}: {exc.message}", self.progress)
        self.lines.item(row)
        self.progress.update(failed=int(row["error"] is not None))
        return row


def error_dict(exc: BaseException, source: object) -> dict[str, Any]:
    """``{"type", "message", "source"}`` of an error, with the item as the source."""
    from tracemark.errors import TracemarkError

    if isinstance(exc, TracemarkError):
        d = exc.to_dict()
        d["source"] = d.get("source") or str(source)
        return d
    return {"type": type(exc).__name__, "message": str(exc), "source": str(source)}
