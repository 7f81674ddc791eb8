"""External signers: the private key stays in a KMS, an HSM or another process.

c2pa-python signs a manifest's claim through a *callback signer*
(``c2pa.Signer.from_callback``): it hands the bytes to sign (the COSE ``Sig_structure``) to
a Python callable and embeds what the callable returns. tracemark takes such a callable as
``SignOptions.signer`` (``(data: bytes) -> bytes``) beside a certificate chain loaded
without its key (:func:`tracemark.credentials.certs.load_signing_certificate`), and builds
one from a command line with :class:`CommandSigner` (c2patool's external signer: the
command reads the bytes on stdin and writes the signature on stdout).

Signature encodings (C2PA 2.1 section 13.2, COSE RFC 9053 section 2.1): ECDSA signatures
are the raw ``r || s`` pair, each integer big-endian and padded to the curve's size (64
bytes for es256, 96 for es384, 132 for es512); tools such as ``openssl dgst -sign`` and
most KMS APIs return them DER-encoded (an ASN.1 ``SEQUENCE`` of two ``INTEGER``), which
:func:`cose_signature` converts. RSASSA-PSS and Ed25519 signatures are used as they come.
"""

from __future__ import annotations

import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tracemark.errors import ConfigError, SigningError

__all__ = ["ECDSA_SIZES", "CommandSigner", "cose_signature"]

ECDSA_SIZES = {"es256": 32, "es384": 48, "es512": 66}
"""Bytes of each of ``r`` and ``s`` in a raw ECDSA signature, by C2PA algorithm (P-256,
P-384, P-521: RFC 9053 section 2.1)."""

STDERR_TAIL = 600
"""Characters of a failing command's stderr quoted in its error (the end of it)."""
MAX_SIGNATURE_BYTES = 1 << 16
"""Most bytes a signer command may write on stdout (64 KiB; an RSA-16384 signature is 2 KiB):
past it the command is killed, so a runaway command cannot fill the memory."""


def cose_signature(signature: bytes, alg: str) -> bytes:
    """``signature`` as COSE wants it for ``alg``: for ECDSA (es256/es384/es512), the raw
    ``r || s`` (returned unchanged when it already has that length, converted from DER
    otherwise); for other algorithms, unchanged.

    Raises :class:`~tracemark.errors.SigningError` for an empty signature or an ECDSA one
    that is neither raw of the right length nor DER."""
    if not signature:
        raise SigningError("the external signer returned an empty signature")
    size = ECDSA_SIZES.get(alg)
    if size is None or len(signature) == 2 * size:
        return signature
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    try:
        r, s = decode_dss_signature(signature)
    except ValueError:
        raise SigningError(f"the external signer returned {len(signature)} bytes: not an "
                           f"{alg} signature (raw r||s of {2 * size} bytes, or DER)") from None
    if r.bit_length() > 8 * size or s.bit_length() > 8 * size:
        raise SigningError(f"the external signer's DER signature does not fit {alg}")
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


@dataclass(frozen=True)
class CommandSigner:
    """A signer that runs ``command`` for each signature: the bytes to sign on its stdin,
    the signature (raw or DER for ECDSA, see :func:`cose_signature`) on its stdout.

    ``command``: a shell-like string (split with :func:`shlex.split`, not run through a
    shell) or an argument list; ``timeout``: seconds before the command is killed.
    Calling it raises :class:`~tracemark.errors.SigningError` when the command cannot be
    started, exits non-zero (quoting the last :data:`STDERR_TAIL` characters of its
    stderr), runs past ``timeout`` (its pipes held open by a child count), writes nothing
    or writes more than :data:`MAX_SIGNATURE_BYTES` (killed at once). Picklable (a batch job's workers can
    run it). Raises :class:`~tracemark.errors.ConfigError` for an empty command."""

    command: str | Sequence[str]
    alg: str
    timeout: float = 30.0

    def __post_init__(self) -> None:
        try:
            argv = (shlex.split(self.command) if isinstance(self.command, str)
                    else [str(a) for a in self.command])
        except ValueError as exc:
            raise ConfigError(f"cannot parse the signer command: {exc}") from None
        if not argv:
            raise ConfigError("the signer command is empty")
        if not self.timeout > 0:
            raise ConfigError(f"the signer timeout must be positive, not {self.timeout!r}")
        object.__setattr__(self, "command", tuple(argv))

    @property
    def argv(self) -> list[str]:
        return list(self.command)

    def __call__(self, data: bytes) -> bytes:
        name = self.argv[0]
        try:
            proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        except OSError as exc:
            raise SigningError(f"cannot run the signer command: {exc.strerror or exc}",
                               source=name) from None
        out, err = bytearray(), bytearray()

        def feed() -> None:
            try:
                proc.stdin.write(data)  # type: ignore[union-attr]
                proc.stdin.close()  # type: ignore[union-attr]
            except OSError:  # the command exited without reading everything
                pass

        def drain(stream: Any, buf: bytearray, limit: int | None) -> None:
            while chunk := stream.read1(1 << 16):
                buf.extend(chunk)
                if limit is None:
                    del buf[:-4 * STDERR_TAIL]  # the tail is all that is quoted
                elif len(buf) > limit:
                    proc.kill()
                    return

        threads = [threading.Thread(target=feed, daemon=True),
                   threading.Thread(target=drain, args=(proc.stdout, out, MAX_SIGNATURE_BYTES),
                                    daemon=True),
                   threading.Thread(target=drain, args=(proc.stderr, err, None), daemon=True)]
        deadline = time.monotonic() + self.timeout
        for t in threads:
            t.start()
        timed_out = False
        try:
            proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            proc.wait()
        for t in threads:  # a child of the command may hold the pipes open past its exit
            t.join(max(0.0, deadline - time.monotonic()))
        if timed_out or any(t.is_alive() for t in threads):
            proc.kill()
            raise SigningError(f"the signer command ran past {self.timeout:g} s and was "
                               f"killed{_tail(bytes(err))}", source=name)
        if len(out) > MAX_SIGNATURE_BYTES:
            raise SigningError(f"the signer command wrote more than {MAX_SIGNATURE_BYTES} "
                               f"bytes: not a signature{_tail(bytes(err))}", source=name)
        if proc.returncode != 0:
            raise SigningError(f"the signer command exited with status {proc.returncode}"
                               f"{_tail(bytes(err))}", source=name)
        if not out:
            raise SigningError(f"the signer command wrote no signature{_tail(bytes(err))}",
                               source=name)
        return cose_signature(bytes(out), self.alg)


def _tail(stderr: bytes | None) -> str:
    text = (stderr or b"").decode("utf-8", errors="replace").strip()
    if not text:
        return ""
    return f"; stderr: {'...' if len(text) > STDERR_TAIL else ''}{text[-STDERR_TAIL:]}"


Signer = Callable[[bytes], bytes]
"""An external signer: the bytes to sign -> the signature (see the module docstring)."""
