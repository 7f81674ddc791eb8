"""``tracemark doctor``: which extras, engines and optional dependencies are available."""

from __future__ import annotations

import click

from tracemark.cli._common import JsonLines, note

__all__ = ["doctor_command"]


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines on stdout instead of a table.")
def doctor_command(as_json: bool) -> None:
    """Report which extras, engines and image formats this installation has.

    Lists the Python, tracemark's extras (installed or not, with what each adds), the
    engines found (SQLite, FAISS, OpenCV, c2pa, PostgreSQL driver, ONNX Runtime) and the
    image formats the loader reads. Exit code 0 whatever is missing (it only reports)."""
    from tracemark.diagnostics import collect

    report = collect()
    if as_json:
        lines = JsonLines()
        for row in report:
            lines.item(row)
        return
    width = max(len(r["name"]) for r in report)
    current = None
    for r in report:
        if r["kind"] != current:
            current = r["kind"]
            click.echo(f"\n{current}:")
        state = "ok     " if r["available"] else "missing"
        version = r.get("version") or ""
        click.echo(f"  {r['name']:<{width}}  {state}  {version:<12} {r['detail']}")
    missing = sorted({r["extra"] for r in report if not r["available"] and r.get("extra")})
    if missing:
        note("\nto add what is missing: pip install 'tracemark[" + ",".join(missing) + "]' "
             "(from a checkout: pip install -e '.[" + ",".join(missing) + "]')")
