"""``tracemark sign``, ``tracemark verify``, ``tracemark certs init`` and
``tracemark credentials list|show|stats``.

One JSON line per input on stdout, a summary on stderr. The manifest store defaults to
``./tracemark-store`` (or ``$TRACEMARK_STORE``). Exit codes of ``verify``: 0 every input
has a valid, trusted or recovered manifest; 10 some input has none (``not_found``);
11 some input's manifest is invalid (wins over 10); 1 some inputs could not be read;
3 none could.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from tracemark.errors import TracemarkError

__all__ = ["sign_command", "verify_command", "certs_group", "credentials_group",
           "EXIT_NOT_FOUND", "EXIT_INVALID"]

EXIT_NOT_FOUND = 10
EXIT_INVALID = 11
DEFAULT_STORE = "tracemark-store"
_FORMATS = {"jpg": ".jpg", "png": ".png", "webp": ".webp"}


def _store_option(f: Any) -> Any:
    return click.option(
        "--store", "store_path", type=click.Path(path_type=Path), default=DEFAULT_STORE,
        envvar="TRACEMARK_STORE", show_default=True,
        help="The manifest store directory (env TRACEMARK_STORE).",
    )(f)


def _emit(record: dict[str, Any]) -> None:
    click.echo(json.dumps(record, default=str))


def _fail(exc: TracemarkError) -> click.ClickException:
    return click.ClickException(str(exc))


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
        raise _fail(exc) from None
    _emit({"ca": str(ca.ca_cert), "cert": str(ca.signer_chain), "key": str(ca.signer_key),
           "not_after": ca.not_after.isoformat(), "note": "development certificates, TEST ONLY"})
    click.echo(f"development CA and signer written to {directory} (TEST ONLY: not for "
               "production)", err=True)


# --- sign ----------------------------------------------------------------------------------


def _plan(inp: Path, out: Path, fmt: str | None) -> list[tuple[Path, Path]]:
    """(input, output) pairs: a file to a file, or a folder to a folder (same tree)."""
    from tracemark.cli import iter_inputs
    from tracemark.credentials.manifest import MEDIA_TYPES

    if inp.is_dir():
        pairs = []
        for src in iter_inputs([str(inp)]):
            rel = src.relative_to(inp)
            suffix = _FORMATS[fmt] if fmt else (src.suffix.lower() if src.suffix.lower()
                                                in MEDIA_TYPES else ".png")
            pairs.append((src, out / rel.with_suffix(suffix)))
        return pairs
    if out.is_dir() or str(out).endswith(("/", "\\")):
        suffix = _FORMATS[fmt] if fmt else (inp.suffix.lower() if inp.suffix.lower()
                                            in MEDIA_TYPES else ".png")
        return [(inp, out / (inp.stem + suffix))]
    return [(inp, out)]


@click.command("sign")
@click.argument("inp", metavar="IN", type=click.Path(path_type=Path))
@click.argument("out", metavar="OUT", type=click.Path(path_type=Path))
@click.option("--cert", "cert", type=click.Path(path_type=Path), required=True,
              help="Signing certificate chain (PEM: signer first, then its CAs).")
@click.option("--key", "key", type=click.Path(path_type=Path), required=True,
              help="The signer's private key (PEM, unencrypted).")
@_store_option
@click.option("--ai-generated", is_flag=True,
              help="Declare the image AI-generated (digital source type trainedAlgorithmicMedia).")
@click.option("--title", default=None, help="Manifest title [default: the output file name].")
@click.option("--author", default=None, help="Author recorded in a CreativeWork assertion.")
@click.option("--format", "fmt", type=click.Choice(sorted(_FORMATS)), default=None,
              help="Output format for folder inputs [default: keep jpg/png/webp, else png].")
@click.option("--quality", type=click.IntRange(1, 100), default=None,
              help="JPEG/WebP quality of the signed file [default: 92].")
def sign_command(inp: Path, out: Path, cert: Path, key: Path, store_path: Path,
                 ai_generated: bool, title: str | None, author: str | None,
                 fmt: str | None, quality: int | None) -> None:
    """Watermark IN with a manifest id, sign a C2PA manifest, store it; write OUT.

    IN and OUT are files, or folders (every image under IN, same tree under OUT). The
    manifest (created or edited actions, soft bindings to the watermark and fingerprint)
    goes into OUT and into the manifest store, which also indexes OUT's fingerprint.
    """
    from tracemark.cli import EXIT_NOTHING, EXIT_PARTIAL
    from tracemark.credentials.certs import load_signing_credentials
    from tracemark.credentials.sign import SignOptions, sign_image
    from tracemark.credentials.store import CredentialStore

    try:
        creds = load_signing_credentials(cert, key)
    except TracemarkError as exc:
        raise _fail(exc) from None
    if creds.development:
        click.echo("note: signing with a development certificate (TEST ONLY)", err=True)
    if not inp.exists():
        raise click.ClickException(f"{inp}: no such file or directory")
    pairs = _plan(inp, out, fmt)
    if not pairs:
        raise click.ClickException(f"{inp}: no images found")
    opts = SignOptions(ai_generated=ai_generated, title=title, author=author, quality=quality)
    n_ok = n_bad = 0
    try:
        store = CredentialStore.open_or_create(store_path)
    except TracemarkError as exc:
        raise _fail(exc) from None
    with store:
        for src, dest in pairs:
            try:
                res, _ = sign_image(store, src, dest, creds, opts)
                _emit(res.to_dict())
                n_ok += 1
            except TracemarkError as exc:
                err = exc.to_dict()
                err["source"] = err.get("source") or str(src)
                _emit({"source": str(src), "output": str(dest), "error": err})
                n_bad += 1
    click.echo(f"signed {n_ok} of {n_ok + n_bad} images into {store_path}", err=True)
    if n_ok == 0:
        sys.exit(EXIT_NOTHING)
    if n_bad:
        sys.exit(EXIT_PARTIAL)


# --- verify --------------------------------------------------------------------------------


@click.command("verify")
@click.argument("inputs", metavar="IN...", nargs=-1, required=True)
@click.option("--trust", type=click.Path(path_type=Path), default=None,
              help="Trust anchors (PEM CA certificates) added to c2pa's list.")
@_store_option
@click.option("--no-store", is_flag=True, help="Read the embedded manifest only.")
@click.option("--manifest/--no-manifest", "with_manifest", default=False,
              help="Include the whole manifest JSON in each line.")
def verify_command(inputs: tuple[str, ...], trust: Path | None, store_path: Path,
                   no_store: bool, with_manifest: bool) -> None:
    """Validate the C2PA manifest of each image, or recover it through the store.

    The embedded manifest is validated (trusted, valid or invalid, with c2pa's codes). When
    it is absent, the store's watermark is detected and its manifest id looked up; failing
    that, the image's fingerprint. Each line says the state, the route and its confidence.
    """
    from tracemark.cli import EXIT_NOTHING, EXIT_PARTIAL, iter_inputs
    from tracemark.credentials.certs import load_trust_anchors
    from tracemark.credentials.store import CredentialStore
    from tracemark.credentials.verify import VerifyOptions, verify_image

    try:
        trust_pem = load_trust_anchors(trust) if trust is not None else None
    except TracemarkError as exc:
        raise _fail(exc) from None
    store = None
    if not no_store:
        if store_path.is_dir():
            try:
                store = CredentialStore.open(store_path, read_only=True)
            except TracemarkError as exc:
                raise _fail(exc) from None
        else:
            click.echo(f"note: no manifest store at {store_path}; reading embedded manifests "
                       "only", err=True)
    opts = VerifyOptions(trust_pem=trust_pem)
    states: dict[str, int] = {}
    n_bad = 0
    try:
        for path in iter_inputs(inputs):
            try:
                res = verify_image(path, store, opts)
                _emit(res.to_dict(with_manifest=with_manifest))
                states[res.state] = states.get(res.state, 0) + 1
            except TracemarkError as exc:
                err = exc.to_dict()
                err["source"] = err.get("source") or str(path)
                _emit({"source": str(path), "error": err})
                n_bad += 1
    finally:
        if store is not None:
            store.close()
    n_ok = sum(states.values())
    click.echo("verified: " + (", ".join(f"{k} {v}" for k, v in sorted(states.items()))
                               or "nothing") + (f"; {n_bad} unreadable" if n_bad else ""), err=True)
    if n_ok == 0:
        sys.exit(EXIT_NOTHING)
    if n_bad:
        sys.exit(EXIT_PARTIAL)
    if states.get("invalid"):
        sys.exit(EXIT_INVALID)
    if states.get("not_found"):
        sys.exit(EXIT_NOT_FOUND)


# --- credentials ---------------------------------------------------------------------------


@click.group("credentials")
def credentials_group() -> None:
    """Inspect a manifest store."""


def _open_ro(store_path: Path) -> Any:
    from tracemark.credentials.store import CredentialStore

    try:
        return CredentialStore.open(store_path, read_only=True)
    except TracemarkError as exc:
        raise _fail(exc) from None


@credentials_group.command("stats")
@_store_option
def credentials_stats(store_path: Path) -> None:
    """Counts and identity of the store."""
    with _open_ro(store_path) as store:
        _emit(store.stats())


@credentials_group.command("list")
@_store_option
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
def credentials_list(store_path: Path, limit: int, offset: int) -> None:
    """One JSON line per stored manifest (without the manifest itself)."""
    with _open_ro(store_path) as store:
        for rec in store.list(limit=limit, offset=offset):
            _emit(rec.summary())


@credentials_group.command("show")
@_store_option
@click.argument("manifest_id", type=int)
def credentials_show(store_path: Path, manifest_id: int) -> None:
    """The stored manifest MANIFEST_ID as JSON."""
    with _open_ro(store_path) as store:
        try:
            rec = store.get(manifest_id)
        except TracemarkError as exc:
            raise _fail(exc) from None
        _emit({**rec.summary(), "manifest": rec.manifest})


@credentials_group.command("calibrate")
@_store_option
@click.argument("background", nargs=-1, required=True)
def credentials_calibrate(store_path: Path, background: tuple[str, ...]) -> None:
    """Calibrate the store's fingerprint route on BACKGROUND images it never signed.

    Afterwards the fingerprint route decides on a p-value against that background (as
    `tracemark index calibrate` does for a collection) instead of an inlier count.
    """
    from tracemark.cli import iter_inputs
    from tracemark.credentials.store import CredentialStore

    paths = list(iter_inputs(background))
    try:
        with CredentialStore.open(store_path) as store:
            summary = store.index.calibrate(paths)
    except TracemarkError as exc:
        raise _fail(exc) from None
    _emit(summary)
