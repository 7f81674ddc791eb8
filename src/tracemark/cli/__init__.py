"""The ``tracemark`` command line: the only package of tracemark that imports click.

Each command group lives in its own module (attack, watermark, copydetect, credentials,
service, bench, doctor, guard); :mod:`tracemark.cli._common` holds what they share (exit codes,
progress, JSON Lines, input expansion, output planning) and :mod:`tracemark.cli._options`
the shared options. Library code never imports this package. Heavy imports (numpy,
OpenCV, FAISS, c2pa) happen inside the commands, so ``tracemark --help`` starts fast.
"""

from __future__ import annotations

import click

from tracemark.cli._common import EXIT_CODES

__all__ = ["main"]


def _epilog() -> str:
    rows = "\n".join(f"  {code:<3} {text}" for code, text in EXIT_CODES.items())
    return "\b\nExit codes (every command):\n" + rows


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=_epilog())
@click.version_option(package_name="tracemark")
def main() -> None:
    """tracemark: image provenance — watermarks, fingerprints and copy detection, attacks
    and benchmarks, content credentials.

    JSON Lines on stdout (one line per item, each with an "error" key), progress and
    summaries on stderr.
    """


def _wire() -> None:
    from tracemark.cli.attack import attack_command, attacks_group, suites_group
    from tracemark.cli.bench import bench_group
    from tracemark.cli.copydetect import (
        dedup_command,
        index_group,
        scan_command,
        search_command,
    )
    from tracemark.cli.credentials import (
        certs_group,
        credentials_group,
        sign_command,
        verify_command,
    )
    from tracemark.cli.doctor import doctor_command
    from tracemark.cli.guard import guard_group
    from tracemark.cli.service import serve_command, service_group
    from tracemark.cli.watermark import watermark_group

    for cmd in (attack_command, attacks_group, suites_group, watermark_group, index_group,
                search_command, scan_command, dedup_command, sign_command, verify_command,
                certs_group, credentials_group, serve_command, service_group, bench_group,
                doctor_command, guard_group):
        main.add_command(cmd)


_wire()

if __name__ == "__main__":  # pragma: no cover
    main()
