"""The options shared by several commands, defined once: the same name, meaning, default
and environment variable everywhere (the README's option table lists them)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from tracemark.cli._common import DEFAULT_QUALITY, fail

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "ENVIRONMENT",
    "StoreLocation",
    "alpha_option",
    "database_url_option",
    "vectors_option",
    "force_option",
    "format_option",
    "formats_option",
    "key_options",
    "max_pixels_option",
    "out_option",
    "quality_option",
    "ray_option",
    "store_option",
]

ENVIRONMENT: dict[str, str] = {
    "TRACEMARK_STORE": "--store: the data location (index, manifest store, service data)",
    "TRACEMARK_DATABASE_URL": "--database-url: metadata in this database (PostgreSQL)",
    "TRACEMARK_VECTORS": "--vectors: the vector store (milvus://HOST:PORT; default FAISS files)",
    "TRACEMARK_KEY_FILE": "--key-file: the watermark key file",
    "TRACEMARK_SIGNING_CERT": "--cert: the C2PA signing certificate chain (PEM)",
    "TRACEMARK_SIGNING_KEY": "--key: the C2PA signing private key (PEM)",
    "TRACEMARK_TRUST": "--trust: trust anchors (PEM)",
    "TRACEMARK_MAX_PIXELS": "--max-pixels: the decompression-bomb limit",
    "TRACEMARK_FORMATS": "--formats: the image formats read (default, all, or a list)",
    "TRACEMARK_PROGRESS_SECONDS": "seconds between plain progress lines when stderr is not "
                                  "a terminal (default 10)",
}
"""Every environment variable the command line reads, and what it stands for."""


@dataclass(frozen=True)
class StoreLocation:
    """Where a command's data lives, and whether the user named it (``--store`` or
    ``TRACEMARK_STORE``) or it is the command's default."""

    path: Path
    explicit: bool

    def require_existing(self, what: str) -> Path:
        """The path; a named store that does not exist is a configuration error."""
        if not self.path.exists():
            raise fail(f"no {what} at {self.path}" + ("" if self.explicit else
                       " (the default; name one with --store or TRACEMARK_STORE)"))
        return self.path


def store_option(*, what: str, default: str | None = None,
                 optional: bool = False) -> Callable[[F], F]:
    """``--store PATH`` (env ``TRACEMARK_STORE``) passed as ``store: StoreLocation``;
    ``--db`` and ``--data`` are hidden aliases kept for one release. Without ``default``
    the option is required, unless ``optional`` (then ``store`` may be None)."""

    def deco(f: F) -> F:
        @functools.wraps(f)
        def wrapper(*args: Any, store: Path | None, legacy_db: Path | None,
                    legacy_data: Path | None, **kwargs: Any) -> Any:
            ctx = click.get_current_context()
            source = ctx.get_parameter_source("store")
            explicit = source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
            legacy = legacy_db or legacy_data
            if legacy is not None:
                if source == ParameterSource.COMMANDLINE:
                    raise click.UsageError("give --store once (--db and --data are its old names)")
                click.echo("note: --db and --data are deprecated; use --store", err=True)
                store, explicit = legacy, True
            if store is None:
                if optional:
                    return f(*args, store=None, **kwargs)
                raise click.UsageError(f"give --store PATH (the {what}) or set TRACEMARK_STORE")
            return f(*args, store=StoreLocation(Path(store), explicit), **kwargs)

        wrapper = click.option("--data", "legacy_data", type=click.Path(path_type=Path),
                               default=None, hidden=True)(wrapper)
        wrapper = click.option("--db", "legacy_db", type=click.Path(path_type=Path),
                               default=None, hidden=True)(wrapper)
        return click.option(
            "--store", "store", type=click.Path(path_type=Path), default=default,
            envvar="TRACEMARK_STORE", show_envvar=True, show_default=default is not None,
            help=f"The {what}.",
        )(wrapper)  # type: ignore[return-value]

    return deco


def database_url_option(help: str) -> Callable[[F], F]:
    return click.option("--database-url", default=None, envvar="TRACEMARK_DATABASE_URL",
                        show_envvar=True, help=help)


def vectors_option(help: str) -> Callable[[F], F]:
    return click.option("--vectors", "vectors", default=None, envvar="TRACEMARK_VECTORS",
                        show_envvar=True, metavar="URL", help=help)


def out_option(*, help: str, required: bool = True) -> Callable[[F], F]:
    return click.option("--out", "out", type=click.Path(path_type=Path), required=required,
                        help=help)


force_option = click.option(
    "--force", is_flag=True,
    help="Overwrite existing outputs (an input is never written over).")


def format_option(*, default: str = "same", help: str | None = None,
                  choices: tuple[str, ...] = ("same", "png", "jpg", "webp")) -> Callable[[F], F]:
    return click.option(
        "--format", "fmt", type=click.Choice(list(choices)), default=default, show_default=True,
        help=help or "Format written; same keeps each input's format.")


quality_option = click.option(
    "--quality", type=click.IntRange(1, 100), default=None,
    help=f"JPEG/WebP/AVIF/HEIC quality of written images [default: {DEFAULT_QUALITY}; "
    "sign: 90 for AVIF and HEIC].")


def alpha_option(*, default: float | None, help: str) -> Callable[[F], F]:
    shown = "" if default is None else f" [default: {default:g}]"
    return click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                        default=default, help=help + shown)


max_pixels_option = click.option(
    "--max-pixels", type=click.IntRange(1), default=100_000_000, envvar="TRACEMARK_MAX_PIXELS",
    show_envvar=True, show_default=True,
    help="Refuse images above this many pixels (decompression bombs).")


def _formats(_ctx: click.Context, param: click.Parameter, value: str) -> Any:
    """``--formats`` as :func:`tracemark.imageio.load_image` takes it: ``"default"``,
    ``"all"``, or a tuple of format names (``default`` and ``all`` in a list stand for
    their sets, so ``default,tga`` adds TGA to the default set)."""
    from tracemark.errors import ConfigError
    from tracemark.imageio import OPTIONAL_FORMATS, READ_FORMATS, resolve_formats

    text = value.strip().lower()
    if text in ("default", "all"):
        return text
    names: list[str] = []
    for item in (t.strip() for t in value.split(",")):
        if item.lower() == "default":
            names += READ_FORMATS
        elif item.lower() == "all":
            names += (*READ_FORMATS, *OPTIONAL_FORMATS)
        elif item:
            names.append(item)
    try:
        return resolve_formats(names)
    except ConfigError as exc:
        raise click.BadParameter(exc.message, param=param) from None


formats_option = click.option(
    "--formats", "formats", default="default", envvar="TRACEMARK_FORMATS", show_envvar=True,
    show_default=True, metavar="default|all|LIST", callback=_formats,
    help="Image formats read (files of others are UnsupportedImageError; folders pick up "
    "their suffixes): default (JPEG, PNG, WebP, TIFF, BMP, GIF, PSD, JPEG 2000, AVIF, HEIF, "
    "Netpbm); all (adds TGA, PCX, XBM, XPM, ICO, CUR, SGI, DDS, QOI, FITS, IM); or a "
    "comma-separated list of names, where default and all stand for those sets "
    "(default,tga).")


def key_options(f: F) -> F:
    """``--key-file`` (env TRACEMARK_KEY_FILE), ``--key-env VAR`` (hex), ``--passphrase-env
    VAR``: the watermark key, never on the command line itself."""
    f = click.option("--passphrase-env", metavar="VAR", default=None,
                     help="Environment variable holding a passphrase (stretched with scrypt).")(f)
    f = click.option("--key-env", metavar="VAR", default=None,
                     help="Environment variable holding the key in hex.")(f)
    return click.option(
        "--key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
        envvar="TRACEMARK_KEY_FILE", show_envvar=True,
        help="File whose raw bytes are the key (at least 16 bytes).")(f)


def signing_options(*, required: bool) -> Callable[[F], F]:
    """``--cert`` and ``--key`` (env TRACEMARK_SIGNING_CERT / TRACEMARK_SIGNING_KEY)."""

    def deco(f: F) -> F:
        f = click.option("--key", "key", type=click.Path(path_type=Path), required=required,
                         envvar="TRACEMARK_SIGNING_KEY", show_envvar=True,
                         help="The signer's private key (PEM, unencrypted).")(f)
        return click.option("--cert", "cert", type=click.Path(path_type=Path),
                            required=required, envvar="TRACEMARK_SIGNING_CERT", show_envvar=True,
                            help="Signing certificate chain (PEM: signer first, then its "
                            "CAs).")(f)

    return deco


trust_option = click.option(
    "--trust", type=click.Path(path_type=Path), default=None, envvar="TRACEMARK_TRUST",
    show_envvar=True, help="Trust anchors (PEM CA certificates) added to c2pa's list.")


def external_signer_options(f: F) -> F:
    """``--signer-command``, ``--signer-timeout``, ``--alg`` and ``--tsa-url`` (with
    :func:`signing_options`; resolved by :func:`signing_setup`)."""
    f = click.option("--tsa-url", default=None, metavar="URL",
                     help="RFC 3161 timestamp authority (http:// or https://) that "
                     "countersigns each manifest's signature; unreachable: the image fails, "
                     "nothing written.")(f)
    f = click.option("--alg", type=click.Choice(["es256", "es384", "es512", "ps256", "ps384",
                                                 "ps512", "ed25519"]), default=None,
                     help="Signing algorithm of --signer-command [default: from the "
                     "certificate's key: es256/es384/es512, ps256, ed25519].")(f)
    f = click.option("--signer-timeout", type=click.FloatRange(0.1, 3600), default=30.0,
                     show_default=True, help="Seconds before --signer-command is killed.")(f)
    return click.option("--signer-command", default=None, metavar="CMD",
                        help="Sign with an external signer instead of --key (c2patool's "
                        "external signer; the key stays in a KMS/HSM): CMD reads the bytes to "
                        "sign on stdin and writes the signature on stdout (ECDSA: DER or raw "
                        "r||s). Split like a shell line, run without a shell.")(f)


def trust_list_options(f: F) -> F:
    """``--allowed-list`` and ``--trust-config`` (c2pa's trust settings beside
    :data:`trust_option`'s anchors; resolved by :func:`trust_setup`)."""
    f = click.option("--trust-config", type=click.Path(path_type=Path), default=None,
                     metavar="FILE", help="c2pa's trust configuration: the extended key usage "
                     "OIDs accepted, one a line.")(f)
    return click.option("--allowed-list", type=click.Path(path_type=Path), default=None,
                        metavar="FILE", help="c2pa's allowed list: signing certificates "
                        "trusted whatever their CA (PEM, or base64 SHA-256 hashes of their "
                        "DER, one a line).")(f)


def signing_setup(cert: Path | None, key: Path | None, signer_command: str | None,
                  timeout: float, alg: str | None) -> tuple[Any, Any]:
    """The signing credentials (:class:`~tracemark.credentials.certs.SigningCredentials`)
    and the external signer (a :class:`~tracemark.credentials.signers.CommandSigner`, or
    None when ``key`` signs) of :func:`signing_options` and :func:`external_signer_options`;
    a missing or unfit option is a usage error (exit code 2)."""
    from tracemark.credentials.certs import load_signing_certificate, load_signing_credentials
    from tracemark.credentials.signers import CommandSigner
    from tracemark.errors import TracemarkError

    if cert is None:
        raise fail("Missing option '--cert' (or TRACEMARK_SIGNING_CERT)")
    if signer_command is None and key is None:
        raise fail("Missing option '--key' (or TRACEMARK_SIGNING_KEY), or give "
                   "--signer-command")
    if signer_command is not None and key is not None:
        raise fail("--signer-command signs instead of --key: give one of them")
    if signer_command is None and alg is not None:
        raise fail("--alg is for --signer-command (with --key, the key decides)")
    try:
        if signer_command is None:
            return load_signing_credentials(cert, key), None  # type: ignore[arg-type]
        creds = load_signing_certificate(cert, alg=alg)
        return creds, CommandSigner(signer_command, alg=creds.alg, timeout=timeout)
    except TracemarkError as exc:
        raise fail(str(exc)) from None


def trust_setup(trust: Path | None, allowed_list: Path | None,
                trust_config: Path | None) -> tuple[str | None, str | None, str | None]:
    """The PEM anchors, the allowed list and the EKU configuration (text, or None each) of
    :data:`trust_option` and :func:`trust_list_options`, checked as c2pa needs them; a bad
    file is a usage error (exit code 2)."""
    from tracemark.credentials.certs import (
        load_allowed_list,
        load_trust_anchors,
        load_trust_config,
    )
    from tracemark.errors import TracemarkError

    try:
        return (load_trust_anchors(trust) if trust is not None else None,
                load_allowed_list(allowed_list) if allowed_list is not None else None,
                load_trust_config(trust_config) if trust_config is not None else None)
    except TracemarkError as exc:
        raise fail(str(exc)) from None


_RAY_ADDRESS = re.compile(r"^(local|auto|ray://\S+|[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5})$")


def _ray_address(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A Ray address (local, auto, HOST:PORT, ray://...); anything else (an input path
    taken as the option's value) is refused, never used as an address."""
    if value is None or _RAY_ADDRESS.match(value):
        return value
    raise click.BadParameter(
        f"{value!r} is not a Ray address (local, auto, HOST:PORT or ray://HOST:PORT); to "
        "start a local cluster write --ray=local, or put --ray before another option",
        param=param)


ray_option = click.option(
    "--ray", "ray_address", is_flag=False, flag_value="local", default=None,
    callback=_ray_address,
    metavar="[ADDRESS]",
    help="Decode and describe the images as Ray tasks (pip install 'tracemark[ray]'); this "
    "process writes the results. Alone: on a local cluster started for this run; with "
    "ADDRESS (auto, HOST:PORT or ray://HOST:10001): on that cluster, whose nodes have "
    "tracemark installed. Inputs may then be fsspec URLs (file:///..., s3://...). Write "
    "--ray=ADDRESS, or --ray before another option (a bare value after it is taken as the "
    "address). Results come in completion order.")
"""``--ray [ADDRESS]`` passed as ``ray_address`` (None without it; ``"local"`` alone)."""
