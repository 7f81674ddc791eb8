"""Regenerate the committed credential-store fixture ``tests/data/credentials_v1/``.

    .venv/bin/python tests/data/make_credentials_fixture.py [--force]

The fixture guards the store's on-disk format (version 1) and the watermark it embeds:
``tests/test_credentials.py`` copies it, opens the store read-only and verifies the signed
files (embedded manifest, and a re-encoded copy through the watermark). It holds:

    ca.pem, signer.pem, signer.key   a development CA (valid 10 years from generation)
    store/                           a credential store with two manifests
    signed/one.jpg, signed/two.png   the two signed files
    expected.json                    what the test checks (manifest ids, labels, hashes)

Regenerate it only on purpose (a format change bumps ``FORMAT_VERSION`` and adds a new
fixture beside this one). Needs the shared corpus beside the checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np

from tracemark.credentials import (
    CredentialStore,
    SignOptions,
    init_dev_ca,
    load_signing_credentials,
    sign_image,
)
from tracemark.imageio import load_image

HERE = Path(__file__).resolve().parent
TARGET = HERE / "credentials_v1"
CORPUS = HERE.parents[2] / "shared" / "data" / "corpus"
SIZE = 160

# (corpus image, signed file, options)
ITEMS = (
    ("photo/gcompris_100.jpg", "signed/one.jpg",
     SignOptions(title="fixture one", author="Fixture Author")),
    ("art/debian_2.jpg", "signed/two.png", SignOptions(title="fixture two", ai_generated=True)),
)


def small(rel: str, size: int = SIZE) -> np.ndarray:
    """A centred ``size`` x ``size`` crop of a corpus image, subsampled first."""
    im = load_image(CORPUS / rel)
    f = max(1, min(im.shape[:2]) // size)
    im = im[::f, ::f]
    h, w = im.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(im[y : y + size, x : x + size])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--force", action="store_true", help="replace an existing fixture")
    args = ap.parse_args()
    if TARGET.exists():
        if not args.force:
            raise SystemExit(f"{TARGET} exists (use --force to replace it)")
        shutil.rmtree(TARGET)
    ca = init_dev_ca(TARGET, days=3650)
    ca.ca_key.unlink()  # not needed to verify; keep the fixture to what the test reads
    (TARGET / "README.txt").unlink()
    creds = load_signing_credentials(ca.signer_chain, ca.signer_key)
    os.chdir(TARGET)  # relative outputs: the index records them as sources
    expected: dict[str, object] = {"files": {}}
    with CredentialStore.create("store") as store:
        expected["store_id"] = store.store_id
        for rel, out, opts in ITEMS:
            res, _ = sign_image(store, small(rel), out, creds, opts)
            expected["files"][out] = {  # type: ignore[index]
                "source": rel,
                "manifest_id": res.manifest_id,
                "label": res.label,
                "media_type": res.media_type,
                "file_sha256": res.file_sha256,
                "title": opts.title,
                "author": opts.author,
                "ai_generated": opts.ai_generated,
            }
    (TARGET / "store" / "index" / "write.lock").unlink(missing_ok=True)
    (TARGET / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    total = sum(p.stat().st_size for p in TARGET.rglob("*") if p.is_file())
    print(f"wrote {TARGET} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
