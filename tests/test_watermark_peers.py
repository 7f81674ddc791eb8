"""The invisible-watermark adapters (``peers`` extra): registration, round trips, bad input.

The library itself is the oracle for the colour convention: the adapter on RGB must equal
the library on the same pixels in BGR.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.util import find_spec

import numpy as np
import pytest

from tests.conftest import corpus_images
from tracemark.cli._common import EXIT_OK, EXIT_UNKNOWN
from tracemark.errors import ImageTooSmallError, PayloadError, WatermarkKeyError
from tracemark.imageio import load_image
from tracemark.watermark.base import bits_to_bytes, get_method, list_methods

HAVE_PEERS = all(find_spec(m) is not None for m in ("imwatermark", "onnxruntime", "torch"))
needs_peers = pytest.mark.skipif(
    not HAVE_PEERS, reason="the 'peers' extra is not installed (pip install 'tracemark[peers]')"
)

PEERS = {"dwtDct": 64, "dwtDctSvd": 64, "rivaGan": 32}
# Natural photos (no saturated background, which defeats dwtDct and dwtDctSvd).
ROUND_TRIP_IMAGES = ["gcompris_100.jpg", "gcompris_48.jpg"]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def _payload(n_bits: int) -> np.ndarray:
    return np.random.default_rng(n_bits).integers(0, 2, n_bits).astype(np.uint8)


@pytest.fixture(scope="module")
def small_photo(corpus_dir) -> np.ndarray:
    """A 256 x 256 crop of a corpus photo: the smallest size every peer embeds."""
    return np.ascontiguousarray(load_image(corpus_images("photo", 1)[0])[:256, 100:356])


def test_registering_the_peers_imports_no_library() -> None:
    out = _run(
        "import sys; import tracemark.watermark.peers as p; from tracemark.watermark import base; "
        "assert {'dwtDct', 'dwtDctSvd', 'rivaGan'} <= set(base.list_methods()); "
        "print(sorted(m for m in ('imwatermark', 'torch', 'onnxruntime') if m in sys.modules))"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_missing_extra_names_it() -> None:
    out = _run(
        "import sys; sys.modules['imwatermark'] = None\n"
        "import numpy as np\n"
        "import tracemark.watermark.peers\n"
        "from tracemark.errors import MissingExtraError\n"
        "from tracemark.watermark.base import get_method\n"
        "try:\n"
        "    get_method('dwtDct').embed(np.zeros((256, 256, 3), np.uint8), 1)\n"
        "except MissingExtraError as exc:\n"
        "    print(exc)\n"
    )
    assert out.returncode == 0, out.stderr
    assert "pip install 'tracemark[peers]'" in out.stdout


@pytest.mark.parametrize("name", PEERS)
def test_declared_attributes(name: str) -> None:
    import tracemark.watermark.peers  # noqa: F401

    wm = get_method(name)
    assert name in list_methods()
    assert (wm.name, wm.payload_bits, wm.keyed, wm.calibrated, wm.extra, wm.min_size) == (
        name,
        PEERS[name],
        False,
        False,
        "peers",
        256,
    )


@needs_peers
@pytest.mark.parametrize("name", PEERS)
@pytest.mark.parametrize("filename", ROUND_TRIP_IMAGES)
def test_round_trip_on_corpus_photos(name: str, filename: str, corpus_dir) -> None:
    import tracemark.watermark.peers  # noqa: F401

    wm = get_method(name)
    image = load_image(corpus_dir / "photo" / filename)
    payload = _payload(wm.payload_bits)
    marked = wm.embed(image, payload)
    assert marked.shape == image.shape and marked.dtype == np.uint8
    mse = np.mean((marked.astype(np.float64) - image) ** 2)
    assert 10 * np.log10(255**2 / mse) > 35  # measured about 40 dB

    found = wm.detect(marked)
    assert found.present is None and found.p_value is None and found.method == name
    assert found.details == {"verified": False, "presence": "unknown"}
    assert found.bits is not None and found.bits.shape == (wm.payload_bits,)
    assert found.bits.dtype == np.uint8
    assert found.payload == bits_to_bytes(found.bits)
    assert np.mean(found.bits == payload) >= 0.9  # measured 1.0 on both photos


@needs_peers
@pytest.mark.parametrize("name", PEERS)
def test_unmarked_image_decodes_to_chance(name: str, small_photo: np.ndarray) -> None:
    import tracemark.watermark.peers  # noqa: F401

    wm = get_method(name)
    found = wm.detect(small_photo)
    assert found.present is None  # documented: decodable, but the library cannot tell
    assert found.score == 0.0 and found.p_value is None
    assert np.mean(found.bits == _payload(wm.payload_bits)) < 0.8


@needs_peers
@pytest.mark.parametrize("name", PEERS)
def test_adapter_equals_the_library_on_bgr(name: str, small_photo: np.ndarray) -> None:
    import imwatermark

    import tracemark.watermark.peers  # noqa: F401

    wm = get_method(name)
    payload = _payload(wm.payload_bits)
    if name == "rivaGan":
        imwatermark.WatermarkEncoder.loadModel()
    encoder = imwatermark.WatermarkEncoder()
    encoder.set_watermark("bits", payload.tolist())
    expected = encoder.encode(np.ascontiguousarray(small_photo[..., ::-1]), name)[..., ::-1]
    np.testing.assert_array_equal(wm.embed(small_photo, payload), expected)


@needs_peers
@pytest.mark.parametrize("name", PEERS)
def test_too_small_to_embed(name: str, small_photo: np.ndarray) -> None:
    import tracemark.watermark.peers  # noqa: F401

    with pytest.raises(ImageTooSmallError, match=name):
        get_method(name).embed(small_photo[:255], 1)


@needs_peers
def test_detect_follows_the_library_area_rule(small_photo: np.ndarray) -> None:
    import tracemark.watermark.peers  # noqa: F401

    wm = get_method("dwtDct")
    below = wm.detect(np.ascontiguousarray(small_photo[:200, :300]))  # 60,000 px < 256**2
    assert below.present is None and below.payload is None and below.bits is None
    assert "too small" in below.details["reason"] and below.details["presence"] == "unknown"
    wide = np.ascontiguousarray(np.concatenate([small_photo, small_photo], axis=1)[:200])
    read = wm.detect(wide)  # 200 x 512 = 102,400 px: the library decodes it
    assert read.present is None and read.bits is not None


@needs_peers
@pytest.mark.parametrize("name", PEERS)
def test_payload_too_long(name: str, small_photo: np.ndarray) -> None:
    import tracemark.watermark.peers  # noqa: F401

    wm = get_method(name)
    with pytest.raises(PayloadError):
        wm.embed(small_photo, [1] * (wm.payload_bits + 1))
    with pytest.raises(PayloadError):
        wm.embed(small_photo, 1 << wm.payload_bits)


@needs_peers
@pytest.mark.parametrize("name", PEERS)
def test_a_key_given_to_a_keyless_peer_is_refused(name: str, small_photo: np.ndarray) -> None:
    """As the CLI does: a key given to a keyless method would protect nothing."""
    import tracemark.watermark.peers  # noqa: F401

    wm = get_method(name)
    for key in (12345, b"short", "a valid passphrase", bytes(range(32))):
        with pytest.raises(WatermarkKeyError, match="keyless"):
            wm.embed(small_photo, 1, key=key)
        with pytest.raises(WatermarkKeyError, match="keyless"):
            wm.detect(small_photo, key=key)


# --- presence: the peers cannot tell, and say so (issue 12, kind 11) ------------------------


def _unmarked_images() -> dict[str, np.ndarray]:
    """Generated unmarked 256 x 320 images of the kinds a folder holds: flat, saturated,
    gradients, noise, smooth noise, stripes."""
    rng = np.random.default_rng(11)
    h, w = 256, 320
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    smooth = rng.normal(size=(h // 16, w // 16, 3)).repeat(16, 0).repeat(16, 1)
    images = {
        "black": np.zeros((h, w, 3)),
        "white": np.full((h, w, 3), 255.0),
        "grey": np.full((h, w, 3), 128.0),
        "gradient": np.stack([xx / w * 255, yy / h * 255, (xx + yy) / (w + h) * 255], -1),
        "noise": rng.integers(0, 256, (h, w, 3)),
        "smooth": 128 + 40 * smooth,
        "stripes": np.repeat(((xx // 8) % 2 * 255)[..., None], 3, -1),
    }
    return {k: np.clip(v, 0, 255).astype(np.uint8) for k, v in images.items()}


@needs_peers
@pytest.mark.parametrize("name", PEERS)
def test_unmarked_generated_images_are_never_present(name: str) -> None:
    import tracemark.watermark.peers  # noqa: F401

    wm = get_method(name)
    assert wm.tells_presence is False
    for label, image in _unmarked_images().items():
        det = wm.detect(image)
        assert det.present is None, (name, label)  # never True: the library cannot tell
        assert det.p_value is None and det.details["presence"] == "unknown"


@needs_peers
def test_registry_assistance_leaves_an_unknown_blind_read_as_it_is(small_photo) -> None:
    """``detect_assisted`` does not treat an unknown as a miss (which would warp and re-read
    the image and pick among reads it cannot rank)."""
    from tracemark.copydetect.assist import detect_assisted

    wm = get_method("dwtDct")
    searched: list[object] = []
    det = detect_assisted(lambda im, a: wm.detect(im, alpha=a), small_photo,
                          lambda im: searched.append(im) or [])
    assert det.present is None and det.details["route"] == "blind" and not searched
    assert det.bits is not None and det.p_value is None


@needs_peers
@pytest.mark.parametrize("name", ["dwtDct", "dwtDctSvd"])
def test_cli_detect_with_a_peer_says_presence_unknown(name: str, tmp_path) -> None:
    from click.testing import CliRunner

    from tracemark.cli.watermark import watermark_group
    from tracemark.imageio import save_image

    folder = tmp_path / "unmarked"
    folder.mkdir()
    images = _unmarked_images()
    for label, image in images.items():
        save_image(image, folder / f"{label}.png")
    res = CliRunner().invoke(watermark_group, ["detect", "--method", name, str(folder)])
    assert res.exit_code == EXIT_UNKNOWN != EXIT_OK, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == len(images)
    for row in rows:
        assert row["present"] is None and row["error"] is None and row["p_value"] is None
        assert row["payload"].startswith("0x")  # the decoded bits, unverified
    n = len(images)
    assert f"presence unknown for {n} of {n} images read ({name} cannot tell presence" \
        in res.stderr
    assert "mark found" not in res.stderr

    # an image too small to read is unknown too (nothing read), and so is the batch
    save_image(images["noise"][:100, :100], folder / "tiny.png")
    res = CliRunner().invoke(watermark_group, ["detect", "--method", name, str(folder)])
    assert res.exit_code == EXIT_UNKNOWN, res.output
    tiny = [r for r in map(json.loads, res.stdout.splitlines())
            if r["source"].endswith("tiny.png")]
    assert tiny[0]["present"] is None and tiny[0]["payload"] is None
