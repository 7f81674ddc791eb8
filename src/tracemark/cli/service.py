"""``tracemark serve`` and ``tracemark service keys create|list|revoke``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tracemark.cli import _options as opts
from tracemark.cli._common import JsonLines, fail

__all__ = ["serve_command", "service_group"]

DEFAULT_DATA = "tracemark-data"


def _data_option(f: Any) -> Any:
    """``--store`` (the service data directory) passed on as ``data_dir: Path``."""
    import functools

    @functools.wraps(f)
    def wrapper(*args: Any, store: opts.StoreLocation, **kwargs: Any) -> Any:
        return f(*args, data_dir=store.path, **kwargs)

    return opts.store_option(what="service data directory: collections, API keys, and the "
                             "SQLite metadata by default", default=DEFAULT_DATA)(wrapper)


def _db_option(f: Any) -> Any:
    return opts.database_url_option(
        "Metadata database (e.g. postgresql+psycopg://user@host/db) instead of SQLite.")(f)


def _settings(data_dir: Path, database_url: str | None, **kw: Any) -> Any:
    from tracemark._optional import require

    require("fastapi", "service", purpose="the HTTP service")
    from tracemark.service.app import ServiceSettings

    return ServiceSettings(data_dir=data_dir, database_url=database_url, **kw)


@click.command("serve")
@_data_option
@_db_option
@opts.vectors_option("Vector store of the collections: milvus://HOST:PORT (default: FAISS files "
                     "in the data directory). With --database-url on PostgreSQL and Milvus, "
                     "any number of replicas serve the same collections.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@opts.signing_options(required=False)
@opts.external_signer_options
@opts.trust_option
@opts.trust_list_options
@click.option("--max-upload-mb", type=click.FloatRange(0.01, 1024), default=20.0, show_default=True)
@click.option("--max-pixels", type=click.IntRange(1), default=40_000_000, show_default=True,
              envvar="TRACEMARK_MAX_PIXELS", show_envvar=True,
              help="Refuse uploads above this many pixels.")
@opts.formats_option
@click.option("--timeout", "request_timeout", type=click.FloatRange(0.1, 3600), default=30.0,
              show_default=True, help="Seconds a request's work may take, time queued for a "
              "worker included, before a 503 (nothing committed; a queued request that "
              "never started gets Retry-After).")
@click.option("--body-timeout", type=click.FloatRange(0.1, 3600), default=60.0,
              show_default=True, help="Seconds within which a request's body must arrive "
              "before a 408.")
@click.option("--header-timeout", type=click.FloatRange(0.1, 3600), default=30.0,
              show_default=True, help="Seconds within which a request's head (request line "
              "and headers) must arrive, counted from the connection or the previous "
              "response; else 408 and the connection is closed.")
@click.option("--concurrency", "max_concurrency", type=click.IntRange(1, 256), default=4,
              show_default=True, help="Blocking jobs (decode, watermark, search) run at once.")
@click.option("--memory-budget-mb", type=click.FloatRange(0, min_open=True), default=2048.0,
              show_default=True, help="Memory the running image jobs may take together, MiB: "
              "each upload weighs 32 bytes a pixel; jobs wait for room like for a worker (a "
              "job heavier than the budget runs alone).")
@click.option("--flush-seconds", "vector_flush_seconds", type=click.FloatRange(0), default=30.0,
              show_default=True, help="Rewrite a collection's FAISS files at most this often; "
              "adds are acknowledged after the database commit (0: after every write).")
@click.option("--guard-matchers", default=None, metavar="NAMES",
              help="Prompt-screen matchers, comma-separated: lexical, or lexical,semantic "
              "[default: every installed one].")
def serve_command(data_dir: Path, database_url: str | None, vectors: str | None, host: str,
                  port: int,
                  cert: Path | None, key: Path | None, signer_command: str | None,
                  signer_timeout: float, alg: str | None, tsa_url: str | None,
                  trust: Path | None, allowed_list: Path | None, trust_config: Path | None,
                  max_upload_mb: float,
                  max_pixels: int, formats: Any, request_timeout: float, body_timeout: float,
                  header_timeout: float, max_concurrency: int, memory_budget_mb: float,
                  vector_flush_seconds: float, guard_matchers: str | None) -> None:
    """Run the HTTP service (FastAPI on uvicorn; OpenAPI schema at /openapi.json).

    One process serves a data directory (collections hold a writer lock); concurrency
    comes from worker threads. With --database-url (PostgreSQL) and --vectors (Milvus),
    the collections live on those servers and any number of replicas, each with its own
    data directory, serve them. Create API keys first with `tracemark service keys create`.
    """
    from tracemark.errors import TracemarkError

    signer = None
    if cert is not None or key is not None or signer_command is not None:
        _creds, signer = opts.signing_setup(cert, key, signer_command, signer_timeout, alg)
    elif alg is not None or tsa_url is not None:
        raise click.UsageError("--alg and --tsa-url sign: give --cert with --key or "
                               "--signer-command")
    opts.trust_setup(trust, allowed_list, trust_config)  # a bad file: exit 2 before serving
    try:
        settings = _settings(data_dir, database_url, cert=cert, key=key, signer=signer,
                             signer_alg=alg, tsa_url=tsa_url, trust=trust,
                             allowed_list=allowed_list, trust_config=trust_config,
                             max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                             max_pixels=max_pixels, formats=formats,
                             request_timeout=request_timeout, body_timeout=body_timeout,
                             max_concurrency=max_concurrency,
                             memory_budget_mb=memory_budget_mb,
                             vector_flush_seconds=vector_flush_seconds, vectors=vectors,
                             guard_warmup=True,
                             guard_matchers=None if guard_matchers is None else
                             [n.strip() for n in guard_matchers.split(",") if n.strip()])
        from tracemark.service.app import create_app

        app = create_app(settings)
    except TracemarkError as exc:
        raise fail(str(exc)) from None
    import uvicorn

    from tracemark.service.protocol import protocol_class

    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=10,
                http=protocol_class(header_timeout))


@click.group("service")
def service_group() -> None:
    """Administer the HTTP service (API keys)."""


@service_group.group("keys")
def keys_group() -> None:
    """Create, list and revoke API keys (stored hashed)."""


def _keystore(data_dir: Path, database_url: str | None) -> Any:
    from tracemark.service.keys import KeyStore, service_engine

    return KeyStore(service_engine(data_dir, database_url))


@keys_group.command("create")
@_data_option
@_db_option
@click.option("--scope", type=click.Choice(["read", "write"]), required=True)
@click.option("--collections", default="*", show_default=True,
              help="Comma-separated collection names, or * for all.")
@click.option("--name", default=None, help="A label for the key.")
def keys_create(data_dir: Path, database_url: str | None, scope: str, collections: str,
                name: str | None) -> None:
    """Create a key; its token is printed once (only its hash is stored)."""
    from tracemark.errors import TracemarkError

    try:
        token, rec = _keystore(data_dir, database_url).create(
            scope=scope, collections=collections.split(","), name=name)
    except TracemarkError as exc:
        raise fail(str(exc)) from None
    JsonLines().item({"token": token, **rec.to_dict()})
    click.echo("store the token now: it cannot be shown again", err=True)


@keys_group.command("list")
@_data_option
@_db_option
def keys_list(data_dir: Path, database_url: str | None) -> None:
    """One JSON line per key (never the token)."""
    for rec in _keystore(data_dir, database_url).list():
        JsonLines().item(rec.to_dict())


@keys_group.command("revoke")
@_data_option
@_db_option
@click.argument("key_id")
def keys_revoke(data_dir: Path, database_url: str | None, key_id: str) -> None:
    """Revoke the key KEY_ID (the 8 hex characters after tm_)."""
    if not _keystore(data_dir, database_url).revoke(key_id):
        JsonLines().item({"revoked": None, "error": {
            "type": "KeyNotFoundError", "message": f"no active key {key_id}", "source": key_id}})
        click.echo(f"no active key {key_id}", err=True)
        raise SystemExit(3)
    JsonLines().item({"revoked": key_id})
