"""``tracemark sign``, ``tracemark verify``, ``tracemark certs init`` and
``tracemark credentials list|show|stats|calibrate``.

The manifest store is ``--store`` (default ``./tracemark-store``, or ``$TRACEMARK_STORE``).
``verify`` exits 10/11 when some or every image has no manifest (none embedded, none
recovered), 12 when some image's manifest is invalid, 13 when some image's manifest is
remote (not fetched: ``--fetch-remote``) or unsupported (pre-release).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tracemark.cli import _options as opts
from tracemark.cli._common import (
    Batch,
    JsonLines,
    Tally,
    batch_executor,
    collect_inputs,
    error_dict,
    fail,
    keep_suffix,
    loaded,
    note,
    plan_outputs,
    report_skipped,
)
from tracemark.errors import TracemarkError

__all__ = ["certs_group", "credentials_group", "sign_command", "verify_command"]

DEFAULT_STORE = "tracemark-store"
_SIGN_FORMATS = ("same", "jpg", "png", "webp")


def _store_option(f: Any) -> Any:
    return opts.store_option(what="manifest store directory", default=DEFAULT_STORE)(f)


# --- certs ---------------------------------------------------------------------------------


@click.group("certs")
def certs_group() -> None:
    """Development certificates for signing offline."""


@certs_group.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--days", type=click.IntRange(1, 3650), default=365, show_default=True,
              help="Validity of the CA and the signer.")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def certs_init(directory: Path, days: int, force: bool) -> None:
    """Make a development CA and signing certificate in DIRECTORY -- FOR TESTING ONLY.

    Writes ca.pem (give it to `verify --trust`), signer.pem and signer.key (give them to
    `sign --cert/--key`), ca.key and README.txt. Anyone can make such a CA: use your own
    certificate chain for real credentials.
    """
    from tracemark.credentials.certs import init_dev_ca

    try:
        ca = init_dev_ca(directory, days=days, overwrite=force)
    except TracemarkError as exc:
        raise fail(str(exc)) from None
    JsonLines().item({"ca": str(ca.ca_cert), "cert": str(ca.signer_chain), "key": str(ca.signer_key),
           "not_after": ca.not_after.isoformat(), "note": "development certificates, TEST ONLY"})
    click.echo(f"development CA and signer written to {directory} (TEST ONLY: not for "
               "production)", err=True)


# --- sign ----------------------------------------------------------------------------------


@click.command("sign")
@click.argument("inputs", metavar="INPUTS...", nargs=-1, required=True)
@opts.out_option(help="Output folder (the same tree as the folder inputs), or the output "
                 "file when one file goes in.")
@opts.force_option
@opts.signing_options(required=False)
@opts.external_signer_options
@click.option("--manifest", "definition", type=click.Path(path_type=Path), default=None,
              metavar="FILE.json",
              help="A c2patool manifest definition (title, claim_generator_info, assertions, "
              "ingredients) merged with tracemark's own assertions; see docs/credentials.md.")
@_store_option
@click.option("--ai-generated", is_flag=True,
              help="Declare the image AI-generated: the same as --create "
              "trainedAlgorithmicMedia.")
@click.option("--create", "create_type", default=None, metavar="TYPE",
              help="Declare the image created (a c2pa.created action, as c2patool's "
              "--create) with this IPTC digital source type: digitalCapture, digitalCreation, "
              "trainedAlgorithmicMedia, compositeWithTrainedAlgorithmicMedia, "
              "algorithmicMedia, screenCapture... or its http://cv.iptc.org/newscodes/"
              "digitalsourcetype/ URL [default: an edit of the input, its parent ingredient].")
@click.option("--edit", "edit", is_flag=True,
              help="Declare the signing an edit of the input (the default; c2patool's "
              "--edit): the input becomes the parent ingredient.")
@click.option("--title", default=None, help="Manifest title [default: the output file name].")
@click.option("--author", default=None, help="Author recorded in a CreativeWork assertion.")
@opts.format_option(choices=_SIGN_FORMATS, help="Format written; same keeps JPEG, PNG, "
                    "WebP, TIFF, GIF, AVIF and HEIC/HEIF inputs as they are and writes other "
                    "inputs as PNG.")
@opts.quality_option
@click.option("--resign", is_flag=True,
              help="Sign inputs again that the store already signed into --out (by default "
              "a re-run skips them).")
@opts.formats_option
@opts.ray_option
def sign_command(inputs: tuple[str, ...], out: Path, force: bool, cert: Path | None,
                 key: Path | None, signer_command: str | None, signer_timeout: float,
                 alg: str | None, tsa_url: str | None, definition: Path | None,
                 store: opts.StoreLocation, ai_generated: bool, create_type: str | None,
                 edit: bool, title: str | None,
                 author: str | None, fmt: str, quality: int | None, resign: bool,
                 formats: Any, ray_address: str | None) -> None:
    """Watermark INPUTS with a manifest id, sign a C2PA manifest, store it; write --out.

    The manifest (created or edited actions, soft bindings to the watermark and the
    fingerprint) goes into the output and into the manifest store, which also indexes the
    output's fingerprint. The store is created when missing, and removed again when this
    run created it and signed nothing. A re-run resumes: an input the store already signed
    into its output (same input bytes, output unchanged) is not signed again (its line says
    "skipped": true), and its existing output needs no --force; --resign signs it again.
    An image that already carries the store's mark keeps it: the new manifest supersedes
    the earlier one. One JSON line per input: source, output, manifest_id, label, ...
    and error.

    With --ray, each image is read, marked, signed and fingerprinted as a Ray task (the
    workers read --cert, --key, the store's secret and the inputs at the same paths: one
    machine or a shared file system); this process reserves the manifest ids and writes
    the store and the files, committing in batches: a line is printed once its manifest,
    fingerprint and file are durable. Lines come in completion order.
    """
    from tracemark.credentials.manifest import MEDIA_TYPES
    from tracemark.credentials.sign import SignOptions, sign_image
    from tracemark.credentials.store import SECRET_NAME, CredentialStore

    creds, signer = opts.signing_setup(cert, key, signer_command, signer_timeout, alg)
    if signer is not None and ray_address is not None:
        raise click.UsageError("--signer-command is not available with --ray (the workers "
                               "sign with --key)")
    user_definition = _load_definition(definition)
    if creds.development:
        note("note: signing with a development certificate (TEST ONLY)")
    lines = JsonLines()
    found = collect_inputs(inputs, lines, report=False, formats=formats)
    existed = store.path.exists()
    had_store = existed and (store.path / SECRET_NAME).exists()
    # an input this store already signed keeps the output it was signed into, wherever the
    # earlier run's clash renames put it (found by the input's and the output's bytes), and
    # is skipped below (--resign signs it again, into that output); new inputs are named
    # around those outputs. Other existing outputs are checked below: they need --force.
    earlier: dict[Path, set[str]] = {}
    if had_store:
        try:
            with CredentialStore.open(store.path, read_only=True) as ro:
                earlier = _earlier_outputs(ro, found.paths)
        except TracemarkError as exc:
            raise fail(str(exc)) from None
    hashes: dict[Path, str | None] = {}
    plan = plan_outputs(found, out, keep_suffix(fmt, writable=MEDIA_TYPES), force=True,
                        resumed=lambda src, candidates: _pick_output(earlier, src, candidates,
                                                                     hashes))
    existing = [(src, dest) for src, dest in plan if dest.exists() or dest.is_symlink()]
    if existing and not force and (resign or not had_store):
        raise fail(f"{existing[0][1]} exists: give --force to overwrite it, or choose "
                   "another --out")
    report_skipped(found, lines)
    if edit and (create_type is not None or ai_generated):
        raise click.UsageError("--edit declares an edit: not with --create or --ai-generated")
    try:
        sign_opts = SignOptions(ai_generated=ai_generated, title=title, author=author,
                                quality=quality, resign=resign, formats=formats,
                                source_type=create_type, signer=signer, tsa_url=tsa_url,
                                definition=user_definition)
    except TracemarkError as exc:
        raise fail(f"--create/--tsa-url/--manifest: {exc}") from None
    executor = batch_executor(ray_address) if ray_address is not None else None
    try:
        cs = CredentialStore.open_or_create(store.path)
    except TracemarkError as exc:
        if executor is not None:
            executor.close()
        raise fail(str(exc)) from None
    resumed = 0
    try:
        if not force:
            for src, dest in existing:
                if not _signed_here(cs, src, dest):
                    raise fail(f"{dest} exists and is not the file this store signed from "
                               f"{src}: give --force to overwrite it, or choose another --out")
        with cs, Batch(len(plan), "sign", lines, skipped=len(found.skipped)) as batch:
            if executor is not None:
                resumed = _sign_on_ray(cs, plan, executor, batch, cert=cert, key=key,
                                       creds=creds, options=sign_opts)
            for src, dest in plan if executor is None else ():

                def sign(row: dict[str, Any], src: Path = src, dest: Path = dest) -> None:
                    nonlocal resumed
                    res, _ = sign_image(cs, src, dest, creds, sign_opts)
                    row.update(res.to_dict())
                    resumed += res.skipped

                batch.run(src, {"source": str(src), "output": None}, sign)
    finally:
        if executor is not None:
            executor.close()
        if not had_store:
            _remove_if_empty(cs, store.path, remove_dir=not existed)
    tally = batch.tally
    note(f"signed {tally.ok - resumed} of {len(plan)} images into {out} (manifests in "
         f"{store.path}); {resumed} already signed, {tally.failed} failed, "
         f"{tally.skipped} skipped")
    tally.finish()


def _load_definition(path: Path | None) -> Any:
    """``--manifest``'s definition (:func:`tracemark.credentials.definition.load_definition`),
    or None; a bad file is a usage error (exit code 2)."""
    if path is None:
        return None
    from tracemark.credentials.definition import load_definition

    try:
        return load_definition(path)
    except TracemarkError as exc:
        raise fail(f"--manifest: {exc}") from None


def _sign_on_ray(cs: Any, plan: list[tuple[Path, Path]], executor: Any, batch: Batch, *,
                 cert: Path, key: Path, creds: Any, options: Any) -> int:
    """``sign --ray``: :func:`tracemark.batch.sign_sources`, one line per item through
    ``batch``; the number of inputs resumed. A store error at a commit stops the job (what
    was printed is durable): a stderr line and a failed count."""
    from tracemark.batch import sign_sources

    resumed = 0

    def on_item(source: str, res: Any, error: TracemarkError | None) -> None:
        def work(row: dict[str, Any]) -> None:
            nonlocal resumed
            if error is not None:
                raise error
            row.update(res.to_dict())
            resumed += res.skipped

        batch.run(source, {"source": source, "output": None}, work)

    try:
        sign_sources(cs, [(str(s), str(d)) for s, d in plan], executor, cert=cert, key=key,
                     creds=creds, options=options, on_item=on_item)
    except TracemarkError as exc:
        note(f"stopped: {exc}", batch.progress)
        batch.tally.failed += 1
    return resumed


def _earlier_outputs(cs: Any, sources: list[Path]) -> dict[Path, set[str]]:
    """For each source this store signed (by the SHA-256 of its bytes): the SHA-256 of the
    files its active manifests were signed into. Sources it never signed are left out."""
    import hashlib

    found: dict[Path, set[str]] = {}
    for src in sources:
        try:
            sha = hashlib.sha256(src.read_bytes()).hexdigest()
        except OSError:
            continue  # reported by the sign itself
        outputs = {rec.file_sha256 for rec in cs.signed_from(sha) if rec.file_sha256}
        if outputs:
            found[src] = outputs
    return found


def _pick_output(earlier: dict[Path, set[str]], src: Path, candidates: list[Path],
                 hashes: dict[Path, str | None]) -> Path | None:
    """The candidate file that is one of ``src``'s signed outputs (same bytes), or None;
    ``hashes`` caches the candidates' SHA-256 between calls."""
    import hashlib

    wanted = earlier.get(src)
    if not wanted:
        return None
    for path in candidates:
        if path not in hashes:
            try:
                hashes[path] = (hashlib.sha256(path.read_bytes()).hexdigest()
                                if path.is_file() else None)
            except OSError:
                hashes[path] = None
        if hashes[path] in wanted:
            return path
    return None


def _signed_here(cs: Any, src: Path, dest: Path) -> bool:
    """Whether ``dest`` is the file this store signed from ``src`` (same bytes of both)."""
    import hashlib

    try:
        src_sha = hashlib.sha256(src.read_bytes()).hexdigest()
        dest_sha = hashlib.sha256(dest.read_bytes()).hexdigest()
    except OSError:
        return False
    return any(rec.file_sha256 == dest_sha for rec in cs.signed_from(src_sha))


def _remove_if_empty(cs: Any, path: Path, *, remove_dir: bool) -> None:
    """Remove a store this run created when nothing was signed into it: its files, and its
    directory when the run created that too. A store with a manifest or a fingerprint, or
    a file this run did not make, is left as it is."""
    import shutil

    from tracemark.credentials.store import INDEX_DIR, SECRET_NAME, SQLITE_NAME, CredentialStore

    cs.close()
    try:
        with CredentialStore.open(path, read_only=True) as ro:
            stats = ro.stats()
            empty = stats["manifests"] == 0 and stats["pending"] == 0 \
                and ro.fingerprint_count() == 0
    except TracemarkError:
        return
    if not empty:
        return
    ours = {SECRET_NAME, SQLITE_NAME, INDEX_DIR, f"{SQLITE_NAME}-wal", f"{SQLITE_NAME}-shm",
            f"{SQLITE_NAME}-journal"}
    if any(p.name not in ours for p in path.iterdir()):
        return
    for p in path.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    if remove_dir:
        path.rmdir()


# --- verify --------------------------------------------------------------------------------


@click.command("verify")
@click.argument("inputs", metavar="INPUTS...", nargs=-1, required=True)
@opts.trust_option
@opts.trust_list_options
@_store_option
@click.option("--no-store", is_flag=True, help="Read the embedded manifest only.")
@click.option("--manifest/--no-manifest", "with_manifest", default=False,
              help="Include the whole manifest JSON in each line.")
@click.option("--fetch-remote", is_flag=True,
              help="Fetch a remote manifest (http/https URL the file names) and validate "
                   "against it; without it, such a file is state remote.")
@opts.formats_option
def verify_command(inputs: tuple[str, ...], trust: Path | None, allowed_list: Path | None,
                   trust_config: Path | None, store: opts.StoreLocation,
                   no_store: bool, with_manifest: bool, fetch_remote: bool,
                   formats: Any) -> None:
    """Validate the C2PA manifest of each image, or recover it through the store.

    The embedded manifest is validated (trusted, valid or invalid, with c2pa's codes). When
    it is absent, the store's watermark is detected and its manifest id looked up; failing
    that, the image's fingerprint. Each line says the state, the route and its confidence.
    A manifest stored remotely is state remote with its URL (fetched with --fetch-remote),
    one c2pa does not validate (pre-release) unsupported; a photo.c2pa sidecar beside
    photo.jpg is read when the file embeds none.
    A store named with --store or TRACEMARK_STORE must exist; without either, a missing
    default store means embedded manifests only.
    """
    from tracemark.credentials.store import CredentialStore
    from tracemark.credentials.verify import VerifyOptions, verify_image

    trust_pem, allowed_pem, eku_config = opts.trust_setup(trust, allowed_list, trust_config)
    cs = None
    if not no_store:
        if store.path.is_dir() or store.explicit:
            store.require_existing("manifest store")
            try:
                cs = CredentialStore.open(store.path, read_only=True)
            except TracemarkError as exc:
                raise fail(str(exc)) from None
        else:
            note(f"note: no manifest store at {store.path}; reading embedded manifests only")
    lines = JsonLines()
    found = collect_inputs(inputs, lines, formats=formats)
    verify_opts = VerifyOptions(trust_pem=trust_pem, allowed_pem=allowed_pem,
                                trust_config=eku_config, formats=formats,
                                fetch_remote=fetch_remote)
    states: dict[str, int] = {}
    try:
        with Batch(len(found.paths), "verify", lines, skipped=len(found.skipped)) as batch:
            for path in found.paths:

                def verify(row: dict[str, Any], path: Path = path) -> bool:
                    res = verify_image(path, cs, verify_opts)
                    row.update(res.to_dict(with_manifest=with_manifest))
                    states[res.state] = states.get(res.state, 0) + 1
                    if res.state in ("remote", "unsupported"):  # cannot tell: exit 13
                        batch.tally.unknown += 1
                        return False
                    return res.state != "not_found"

                batch.run(path, {"source": str(path)}, verify)
    finally:
        if cs is not None:
            cs.close()
    tally = batch.tally
    note("verified: " + (", ".join(f"{k} {v}" for k, v in sorted(states.items())) or "nothing")
         + f"; {tally.failed} unreadable, {tally.skipped} skipped")
    tally.finish(finding=True)


# --- credentials ---------------------------------------------------------------------------


@click.group("credentials")
def credentials_group() -> None:
    """Inspect a manifest store."""


def _open_ro(store: opts.StoreLocation) -> Any:
    from tracemark.credentials.store import CredentialStore

    store.require_existing("manifest store")
    try:
        return CredentialStore.open(store.path, read_only=True)
    except TracemarkError as exc:
        raise fail(str(exc)) from None


@credentials_group.command("stats")
@_store_option
def credentials_stats(store: opts.StoreLocation) -> None:
    """Counts and identity of the store."""
    with _open_ro(store) as cs:
        JsonLines().record(cs.stats())


@credentials_group.command("list")
@_store_option
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
def credentials_list(store: opts.StoreLocation, limit: int, offset: int) -> None:
    """One JSON line per stored manifest (without the manifest itself)."""
    with _open_ro(store) as cs:
        for rec in cs.list(limit=limit, offset=offset):
            JsonLines().record(rec.summary())


@credentials_group.command("show")
@_store_option
@click.argument("manifest_id", type=int)
def credentials_show(store: opts.StoreLocation, manifest_id: int) -> None:
    """The stored manifest MANIFEST_ID as JSON."""
    with _open_ro(store) as cs:
        try:
            rec = cs.get(manifest_id)
        except TracemarkError as exc:
            JsonLines().item({"id": manifest_id, "error": error_dict(exc, manifest_id)})
            note(f"failed: {exc}")
            Tally(ok=0, failed=1).finish()
            return
        JsonLines().item({**rec.summary(), "manifest": rec.manifest})


@credentials_group.command("calibrate")
@_store_option
@opts.formats_option
@click.argument("background", nargs=-1, required=True)
def credentials_calibrate(store: opts.StoreLocation, formats: Any,
                          background: tuple[str, ...]) -> None:
    """Calibrate the store's fingerprint route on BACKGROUND images it never signed.

    Afterwards the fingerprint route decides on a p-value against that background (as
    `tracemark index calibrate` does for a collection) instead of an inlier count.
    """
    from tracemark.credentials.store import CredentialStore

    store.require_existing("manifest store")
    paths = collect_inputs(background, JsonLines(), what="background", formats=formats).paths
    try:
        with CredentialStore.open(store.path) as cs:
            summary = cs.calibrate(loaded(paths, formats))
    except TracemarkError as exc:
        raise fail(str(exc)) from None
    JsonLines().item(summary)
    if "warning" in summary:
        note(f"warning: {summary['warning']}")
