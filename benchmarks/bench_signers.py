"""Sign time per image with the key in tracemark (PEM) and with external signers (a Python
callable through c2pa's callback signer; ``openssl dgst -sign`` as a command), five 512 px
corpus crops each, JPEG output, after one warm-up signing.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_signers.py

Prints one line per signer (ms per image); numbers go to the closing note by hand.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from tests.conftest import CORPUS, corpus_crop  # noqa: E402

from tracemark.credentials import (  # noqa: E402
    CommandSigner,
    CredentialStore,
    SignOptions,
    init_dev_ca,
    load_signing_certificate,
    load_signing_credentials,
    sign_image,
)


def main() -> None:
    names = sorted(os.listdir(CORPUS / "photo"))[:5]
    images = [corpus_crop("photo/" + n, 512) for n in names]
    d = Path(tempfile.mkdtemp())
    try:
        ca = init_dev_ca(d / "ca")
        key = serialization.load_pem_private_key(ca.signer_key.read_bytes(), None)
        own = load_signing_credentials(ca.signer_chain, ca.signer_key)
        chain = load_signing_certificate(ca.signer_chain)
        openssl = shutil.which("openssl") or "openssl"
        runs = {
            "pem key": (own, SignOptions()),
            "python callable": (chain, SignOptions(
                signer=lambda b: key.sign(b, ec.ECDSA(hashes.SHA256())))),
            "openssl command": (chain, SignOptions(signer=CommandSigner(
                f"{openssl} dgst -sha256 -sign {ca.signer_key}", alg="es256"))),
        }
        for name, (creds, opts) in runs.items():
            with CredentialStore.create(d / name.replace(" ", "_")) as st:
                sign_image(st, images[0][::-1].copy(), d / f"warm-{name}.jpg", creds, opts)
                t = time.perf_counter()
                for i, im in enumerate(images):
                    sign_image(st, im, d / f"{name}-{i}.jpg", creds, opts)
                ms = (time.perf_counter() - t) / len(images) * 1000
                print(f"{name}: {ms:.0f} ms/image (512 px, JPEG)")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
