"""Signing HEIC, HEIF and AVIF: tracemark writes them (pillow-heif, Pillow's libavif), c2pa
signs them, c2pa-python's Reader and tracemark's verify agree, and the watermark reads back
from the signed file and from a copy stripped of its manifest.

Inputs are generated here: corpus crops (or a synthetic image) written by pillow-heif and
Pillow.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import c2pa
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tracemark.cli import main
from tracemark.credentials import (
    CredentialStore,
    DevCA,
    VerifyOptions,
    init_dev_ca,
    load_signing_credentials,
    load_trust_anchors,
    sign_image,
    verify_image,
)
from tracemark.errors import ConfigError, UnsupportedImageError
from tracemark.imageio import (
    HEIF_AVIF_QUALITY,
    WRITE_FORMATS,
    encode_image,
    load_image,
    media_type,
    sniff_format,
    written_suffixes,
)

from .conftest import CORPUS, corpus_crop
from .test_c2pa_agreement import assert_agree, c2pa_says, tamper_signature

pillow_heif = pytest.importorskip("pillow_heif", reason="the heif extra is not installed")

KINDS = {
    # suffix: (media type tracemark signs, brand in the file's ftyp box, Pillow/our format)
    ".heic": ("image/heic", b"heic", "HEIF"),
    ".heif": ("image/heif", b"heic", "HEIF"),
    ".avif": ("image/avif", b"avif", "AVIF"),
}


def _image(seed: int) -> np.ndarray:
    """A 256x256 corpus crop (a photo or a drawing), or a smooth synthetic image without
    the corpus."""
    if CORPUS.is_dir():
        return corpus_crop(["art/debian_1.jpg", "photo/gcompris_48.jpg"][seed % 2])
    y, x = np.mgrid[0:256, 0:256]
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 30, (256, 256))
    return np.stack([x, y, (x + y + noise) % 256], -1).astype(np.uint8)


def _input_file(rgb: np.ndarray, suffix: str) -> bytes:
    """``rgb`` written the way another program would: pillow-heif for HEIC/HEIF, Pillow for
    AVIF (not through tracemark)."""
    buf = io.BytesIO()
    if suffix == ".avif":
        Image.fromarray(rgb).save(buf, "AVIF", quality=95)
    else:
        pillow_heif.from_pillow(Image.fromarray(rgb)).save(buf, quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ca: DevCA = init_dev_ca(tmp_path_factory.mktemp("ca"))
    return {"ca": ca, "trust": load_trust_anchors(ca.ca_cert),
            "creds": load_signing_credentials(ca.signer_chain, ca.signer_key)}


# --- imageio: the writers ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["HEIF", "HEIC", "AVIF"])
def test_encode_image_writes_heif_and_avif(fmt: str) -> None:
    rgb = _image(0)
    data = encode_image(rgb, fmt)
    assert sniff_format(data[:64]) == ("AVIF" if fmt == "AVIF" else "HEIF")
    back = load_image(data)
    assert back.shape == rgb.shape
    err = np.abs(back.astype(int) - rgb.astype(int)).mean()
    assert err < 4, err  # lossy at HEIF_AVIF_QUALITY, but close
    # the default quality is tracemark's, not the encoder's (pillow-heif 50, Pillow 75)
    assert data == encode_image(rgb, fmt, quality=HEIF_AVIF_QUALITY)
    assert len(encode_image(rgb, fmt, quality=30)) < len(data)


def test_the_write_vocabulary() -> None:
    assert {"AVIF", "HEIF"} <= set(WRITE_FORMATS)
    assert media_type("HEIC") == media_type(".heic") == "image/heic"
    assert media_type("HEIF") == media_type(".hif") == "image/heif"
    assert media_type("avif") == media_type(".avif") == "image/avif"
    table = written_suffixes()
    assert table[".heic"] == table[".heif"] == "HEIF" and table[".avif"] == "AVIF"
    with pytest.raises(UnsupportedImageError, match="not a format tracemark writes"):
        media_type("PSD")
    with pytest.raises(UnsupportedImageError, match="cannot write format 'JXL'"):
        encode_image(_image(0), "JXL")
    with pytest.raises(ConfigError, match="quality must be in 1..100"):
        encode_image(_image(0), "AVIF", quality=0)


def test_heif_output_without_the_extra_names_it(tmp_path: Path) -> None:
    """With pillow-heif blocked from importing: HEIC output is MissingExtraError naming
    tracemark[heif], and signing into .heic says the same (no file written)."""
    code = (
        "import sys; sys.modules['pillow_heif'] = None\n"
        "import numpy as np\n"
        "from tracemark.errors import MissingExtraError\n"
        "from tracemark.imageio import encode_image\n"
        "try:\n"
        "    encode_image(np.zeros((8, 8, 3), np.uint8), 'HEIC')\n"
        "except MissingExtraError as exc:\n"
        "    print('MISSING', exc)\n"
        "print(encode_image(np.zeros((8, 8, 3), np.uint8), 'AVIF')[4:12])\n"
        "from tracemark.credentials.manifest import media_type_for\n"
        "print('SIGNS', media_type_for('.heic'))\n"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "MISSING" in out.stdout and "pip install 'tracemark[heif]'" in out.stdout
    assert "ftypavif" in out.stdout
    assert "SIGNS image/heic" in out.stdout  # the suffix is known; the encoder names the extra


# --- signing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", sorted(KINDS))
def test_sign_keeps_heic_heif_avif_and_c2pa_agrees(pki: dict[str, Any], tmp_path: Path,
                                                   suffix: str) -> None:
    mime, brand, fmt = KINDS[suffix]
    rgb = _image(1 if suffix == ".avif" else 0)
    src = tmp_path / f"in{suffix}"
    src.write_bytes(_input_file(rgb, suffix))
    out = tmp_path / "out"
    res = CliRunner().invoke(main, [
        "sign", str(src), "--out", str(out), "--cert", str(pki["ca"].signer_chain),
        "--key", str(pki["ca"].signer_key), "--store", str(tmp_path / "store")])
    assert res.exit_code == 0, res.output
    (row,) = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    signed_path = Path(row["output"])
    assert signed_path == out / f"in{suffix}"  # the input's format and suffix are kept
    assert row["media_type"] == mime and row["watermark_skipped"] in (None, False)
    data = signed_path.read_bytes()
    assert data[4:12] == b"ftyp" + brand and sniff_format(data[:64]) == fmt

    # c2pa-python's Reader: Trusted with the test anchors; tracemark agrees
    state, failures, _ = c2pa_says(data, mime, pki["trust"])
    assert (state, failures) == ("trusted", [])
    with CredentialStore.open(tmp_path / "store") as store:
        v = verify_image(signed_path, store, VerifyOptions(trust_pem=pki["trust"]))
        assert (v.state, v.route, v.label) == ("trusted", "embedded", row["label"])
        assert_agree(data, mime, pki["trust"])
        assert assert_agree(tamper_signature(data, ""), mime, pki["trust"]).state == "invalid"

        # the watermark reads back from the signed file itself
        det = store.read_mark(load_image(data), assisted=False)
        assert det.present and det.p_value is not None and det.p_value < 1e-4, det.p_value

        # stripped of its manifest (pixels re-encoded in the same format): recovered
        stripped = encode_image(load_image(data), fmt)
        assert c2pa.Reader.try_create(mime, io.BytesIO(stripped)) is None
        r = verify_image(stripped, store, VerifyOptions(trust_pem=pki["trust"]))
        assert (r.state, r.label, r.signature) == ("recovered", row["label"], "trusted")
        assert r.route == "watermark", r.evidence
        assert r.evidence["watermark"]["tag_match"] is True
        assert r.evidence["watermark"]["manifest_id"] == row["manifest_id"]


@pytest.mark.parametrize("suffix", sorted(KINDS))
def test_sign_image_into_heif_avif_from_png(pki: dict[str, Any], tmp_path: Path,
                                           suffix: str) -> None:
    """A PNG input signed into an output named .heic/.heif/.avif: the suffix decides."""
    mime, _brand, fmt = KINDS[suffix]
    src = tmp_path / "in.png"
    src.write_bytes(encode_image(_image(0), "PNG"))
    with CredentialStore.create(tmp_path / "store") as store:
        result, data = sign_image(store, src, tmp_path / f"o{suffix}", pki["creds"])
        assert result.media_type == mime and sniff_format(data[:64]) == fmt
        assert (tmp_path / f"o{suffix}").read_bytes() == data
        assert assert_agree(data, mime, pki["trust"]).state == "trusted"
        with pytest.raises(ConfigError):
            sign_image(store, src, None, pki["creds"], media_type=mime,
                       options=_opts(quality=101))


def _opts(**kw: Any) -> Any:
    from tracemark.credentials import SignOptions

    return SignOptions(**kw)
