"""Write benchmark results into Markdown documents between named markers."""

from __future__ import annotations

from pathlib import Path

__all__ = ["update_section"]


def update_section(path: Path, key: str, body: str) -> None:
    """Replace the text between ``<!-- BEGIN key -->`` and ``<!-- END key -->`` in ``path``.

    The section is appended (with both markers) when absent; the file is created if needed.
    """
    begin, end = f"<!-- BEGIN {key} -->", f"<!-- END {key} -->"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
