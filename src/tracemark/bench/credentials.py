"""Durable content credentials benchmark: sign, strip, verify.

Three disjoint sets of images are drawn from a folder (seeded): ``signed`` are signed by
store A, ``other`` by a second store B with its own key, ``unsigned`` never. Every signed
file is first checked against c2pa's own Reader (state and agreement with our verify).
Then each signed file is stripped four ways -- JPEG 80 re-encode, resize 0.5, a
screenshot-like crop, and all three in a row -- and verified against store A: a success is
``recovered`` with the right manifest id; ``recovered`` with another id is a wrong
recovery. False recoveries are counted on the unsigned images (as they are, and JPEG 80)
and on store B's images (signed, and stripped with JPEG 80) verified against store A.
Tampering: one flipped byte per signed file, and each file's manifest transplanted into
another image; neither may verify as valid or trusted.
"""

from __future__ import annotations

import hashlib
import io
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tracemark.attacks import apply_attack
from tracemark.errors import TracemarkError
from tracemark.imageio import encode_image, load_image

__all__ = ["CredentialsBenchConfig", "STRIPS", "run_credentials_bench", "format_markdown"]

FORMATS = (".jpg", ".png", ".webp")


def strip_jpeg80(rgb: np.ndarray, rng: random.Random) -> bytes:
    return encode_image(rgb, "JPEG", quality=80)


def strip_resize(rgb: np.ndarray, rng: random.Random) -> bytes:
    return encode_image(apply_attack(rgb, "resize", scale=0.5), "PNG")


def strip_screenshot(rgb: np.ndarray, rng: random.Random) -> bytes:
    """A screenshot of part of the image: a crop of 80% of the area at a random place, shown
    in a window (title bar, border) on a desktop at 90% of the frame, saved as PNG."""
    h, w = rgb.shape[:2]
    side = 0.8**0.5
    ch, cw = round(h * side), round(w * side)
    y, x = rng.randint(0, h - ch), rng.randint(0, w - cw)
    crop = rgb[y : y + ch, x : x + cw]
    shot = apply_attack(crop, "screenshot", scale=0.9, bar=0.06,
                        theme=rng.randrange(4), seed=rng.randrange(1 << 30))
    return encode_image(shot, "PNG")


def strip_all(rgb: np.ndarray, rng: random.Random) -> bytes:
    step = load_image(strip_jpeg80(rgb, rng))
    step = load_image(strip_resize(step, rng))
    return strip_screenshot(step, rng)


STRIPS: dict[str, Callable[[np.ndarray, random.Random], bytes]] = {
    "jpeg80": strip_jpeg80,
    "resize0.5": strip_resize,
    "screenshot_crop": strip_screenshot,
    "all_three": strip_all,
}


@dataclass(frozen=True)
class CredentialsBenchConfig:
    signed: int = 100
    other: int = 100
    unsigned: int = 100
    seed: int = 0
    strips: tuple[str, ...] = tuple(STRIPS)


def _app11_segments(jpeg: bytes) -> bytes:
    out, p = [], 2
    while p + 4 <= len(jpeg) and jpeg[p] == 0xFF:
        marker = jpeg[p + 1]
        length = int.from_bytes(jpeg[p + 2 : p + 4], "big")
        if marker == 0xEB:
            out.append(jpeg[p : p + 2 + length])
        if marker == 0xDA:
            break
        p += 2 + length
    return b"".join(out)


def _reader_state(data: bytes, media_type: str, trust_pem: str) -> str:
    import c2pa

    ctx = c2pa.Context.from_dict({"trust": {"user_anchors": trust_pem}})
    try:
        with c2pa.Reader(media_type, io.BytesIO(data), context=ctx) as r:
            return str(r.get_validation_state()).lower()
    except c2pa.C2paError as exc:
        return "error:" + type(exc).__name__.lstrip("_")


def _median_ms(xs: Sequence[float]) -> float | None:
    return round(1000 * statistics.median(xs), 1) if xs else None


def run_credentials_bench(
    images: Sequence[Path],
    config: CredentialsBenchConfig | None = None,
    *,
    workdir: Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the benchmark on ``images`` (at least signed + other + unsigned of them)."""
    from tracemark.credentials import (
        CredentialStore,
        SignOptions,
        VerifyOptions,
        init_dev_ca,
        load_signing_credentials,
        load_trust_anchors,
        sign_image,
        verify_image,
    )
    from tracemark.credentials.manifest import MEDIA_TYPES

    cfg = config or CredentialsBenchConfig()
    need = cfg.signed + cfg.other + cfg.unsigned
    paths = sorted(images)
    if len(paths) < need:
        raise TracemarkError(f"need {need} images, got {len(paths)}")
    rng = random.Random(cfg.seed)
    rng.shuffle(paths)
    sets = {"signed": paths[: cfg.signed],
            "other": paths[cfg.signed : cfg.signed + cfg.other],
            "unsigned": paths[cfg.signed + cfg.other : need]}
    own_tmp = workdir is None
    root = Path(tempfile.mkdtemp(prefix="tm-cred-")) if own_tmp else Path(workdir)  # type: ignore[arg-type]
    root.mkdir(parents=True, exist_ok=True)
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if progress else (lambda m: None)
    try:
        ca = init_dev_ca(root / "certs", overwrite=True)
        creds = load_signing_credentials(ca.signer_chain, ca.signer_key)
        trust = load_trust_anchors(ca.ca_cert)
        vopts = VerifyOptions(trust_pem=trust)
        t_start = time.perf_counter()
        stores = {}
        signed: dict[str, list[tuple[Path, Path, int, np.ndarray]]] = {"signed": [], "other": []}
        sign_times: list[float] = []
        sign_errors: list[dict[str, Any]] = []
        for name, store_dir in (("signed", "store-a"), ("other", "store-b")):
            shutil.rmtree(root / store_dir, ignore_errors=True)
            secret = hashlib.sha256(f"tracemark-bench-{cfg.seed}-{store_dir}".encode()).digest()
            store = CredentialStore.create(root / store_dir, secret=secret)
            stores[name] = store
            for i, src in enumerate(sets[name]):
                out = root / f"out-{store_dir}" / f"{i:03d}-{src.stem}{FORMATS[i % 3]}"
                t0 = time.perf_counter()
                try:
                    res, data = sign_image(store, src, out, creds,
                                           SignOptions(ai_generated=(i % 2 == 0)))
                except TracemarkError as exc:
                    sign_errors.append({"source": str(src), **exc.to_dict()})
                    continue
                sign_times.append(time.perf_counter() - t0)
                signed[name].append((src, out, res.manifest_id, load_image(data)))
            say(f"{name}: signed {len(signed[name])} of {len(sets[name])}")
        store_a = stores["signed"]

        # 1. every signed file validates in c2pa's Reader, and our verify agrees
        agree = Counter()
        embedded_times: list[float] = []
        reader_states = Counter()
        for _src, out, mid, _rgb in signed["signed"]:
            data = out.read_bytes()
            rs = _reader_state(data, MEDIA_TYPES[out.suffix], trust)
            reader_states[rs] += 1
            v = verify_image(data, store_a, vopts)
            embedded_times.append(v.seconds)
            agree["agree" if (v.state == rs and v.manifest_id == mid) else "disagree"] += 1

        # 2. strip and recover
        recovery: dict[str, dict[str, Any]] = {}
        for strip in cfg.strips:
            fn = STRIPS[strip]
            srng = random.Random(f"{cfg.seed}-{strip}")
            counts = Counter()
            routes = Counter()
            times: list[float] = []
            fp_inliers: list[int] = []
            failures = []
            for src, _out, mid, rgb in signed["signed"]:
                data = fn(rgb, srng)
                try:
                    v = verify_image(data, store_a, vopts)
                except TracemarkError as exc:
                    counts["error"] += 1
                    failures.append({"source": src.name, "error": exc.to_dict()})
                    continue
                times.append(v.seconds)
                fp = v.evidence.get("fingerprint") or {}
                if fp.get("inliers") is not None:
                    fp_inliers.append(int(fp["inliers"]))
                if v.state == "recovered" and v.manifest_id == mid:
                    counts["correct"] += 1
                    routes[v.route] += 1
                    counts[f"signature_{v.signature}"] += 1
                elif v.state == "recovered":
                    counts["wrong"] += 1
                    failures.append({"source": src.name, "wrong_id": v.manifest_id})
                else:
                    counts[v.state] += 1
                    failures.append({"source": src.name, "state": v.state,
                                     "evidence": v.evidence})
            n = len(signed["signed"])
            recovery[strip] = {
                "n": n, "recovered": counts["correct"], "rate": round(counts["correct"] / n, 4),
                "wrong": counts["wrong"], "not_found": counts["not_found"],
                "errors": counts["error"], "routes": dict(routes),
                "signature_trusted": counts["signature_trusted"],
                "median_ms": _median_ms(times), "failures": failures[:20],
                "fingerprint_inliers": sorted(fp_inliers),
            }
            say(f"{strip}: {counts['correct']}/{n} recovered, routes {dict(routes)}")

        # 3. false recoveries: unsigned images, and store B's images, against store A
        negatives: dict[str, dict[str, Any]] = {}
        margins: dict[str, dict[str, Any]] = {}

        def count_negatives(name: str, items: list[bytes]) -> None:
            c = Counter()
            inliers, p_values = [], []
            for data in items:
                try:
                    v = verify_image(data, store_a, vopts)
                except TracemarkError:
                    c["error"] += 1
                    continue
                c["manifest_returned" if v.manifest_id is not None or v.state == "recovered"
                  else v.state] += 1
                wm, fp = v.evidence.get("watermark"), v.evidence.get("fingerprint")
                if wm is not None and wm.get("p_value") is not None:
                    p_values.append(float(wm["p_value"]))
                if fp is not None and fp.get("inliers") is not None:
                    inliers.append(int(fp["inliers"]))
            negatives[name] = {"n": len(items), **dict(c)}
            margins[name] = {"max_inliers": max(inliers) if inliers else None,
                             "min_watermark_p": min(p_values) if p_values else None}

        unsigned_files = [p.read_bytes() for p in sets["unsigned"]]
        count_negatives("unsigned", unsigned_files)
        count_negatives("unsigned_jpeg80",
                        [strip_jpeg80(load_image(b), rng) for b in unsigned_files])
        count_negatives("other_store_signed", [o.read_bytes() for _s, o, _m, _r in signed["other"]])
        count_negatives("other_store_jpeg80",
                        [strip_jpeg80(rgb, rng) for _s, _o, _m, rgb in signed["other"]])
        count_negatives("other_store_screenshot_crop",
                        [strip_screenshot(rgb, rng) for _s, _o, _m, rgb in signed["other"]])
        say(f"negatives: {negatives}")

        # 4. tampering
        tamper = {"flip": Counter(), "transplant": Counter(), "flip_reader": Counter()}
        trng = random.Random(f"{cfg.seed}-tamper")
        items = signed["signed"]
        for k, (_src, out, _mid, _rgb) in enumerate(items):
            data = bytearray(out.read_bytes())
            pos = trng.randrange(len(data))
            data[pos] ^= 1 << trng.randrange(8)
            try:
                state = verify_image(bytes(data), store_a, vopts).state
            except TracemarkError as exc:
                state = "error:" + type(exc).__name__
            tamper["flip"][state] += 1
            tamper["flip_reader"][_reader_state(bytes(data), MEDIA_TYPES[out.suffix], trust)] += 1
            if out.suffix == ".jpg":
                donor = next((o for _s, o, _m, _r in items[k + 1:] + items[:k]
                              if o.suffix == ".jpg"), None)
                if donor is not None:
                    victim = _src.read_bytes()
                    if victim[:2] == b"\xff\xd8":
                        forged = victim[:2] + _app11_segments(donor.read_bytes()) + victim[2:]
                        try:
                            state = verify_image(forged, store_a, vopts).state
                        except TracemarkError as exc:
                            state = "error:" + type(exc).__name__
                        tamper["transplant"][state] += 1
        total_s = time.perf_counter() - t_start
        return {
            "benchmark": "credentials",
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
            "config": asdict(cfg),
            "images": {k: len(v) for k, v in sets.items()},
            "sign_errors": sign_errors,
            "sign_median_ms": _median_ms(sign_times),
            "embedded": {"reader_states": dict(reader_states), "agreement": dict(agree),
                         "verify_median_ms": _median_ms(embedded_times)},
            "recovery": recovery,
            "negatives": negatives,
            "negative_margins": margins,
            "tamper": {k: dict(v) for k, v in tamper.items()},
            "seconds": round(total_s, 1),
        }
    finally:
        for s in locals().get("stores", {}).values():
            s.close()
        if own_tmp:
            shutil.rmtree(root, ignore_errors=True)


def format_markdown(result: dict[str, Any], command: str) -> str:
    r = result
    lines = [
        f"Run {r['date']} on {r['machine']} (`{command}`), {r['seconds']} s. Images: "
        f"{r['images']['signed']} signed by store A (formats cycling JPEG/PNG/WebP, half "
        f"declared AI-generated), {r['images']['other']} signed by store B, "
        f"{r['images']['unsigned']} unsigned; drawn from the corpus with seed "
        f"{r['config']['seed']}. Median sign time {r['sign_median_ms']} ms per image.",
        "",
        "Signed files in c2pa-python's own Reader (with the test CA as trust anchor): "
        + ", ".join(f"{k} {v}" for k, v in sorted(r["embedded"]["reader_states"].items()))
        + "; our verify agrees on state and manifest id: "
        + ", ".join(f"{k} {v}" for k, v in sorted(r["embedded"]["agreement"].items()))
        + f" (median {r['embedded']['verify_median_ms']} ms).",
        "",
        "| strip | n | recovered (right manifest) | recovered % | wrong manifest | not found | errors | by watermark | by fingerprint | recovered signature trusted | median verify ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in r["recovery"].items():
        lines.append(
            f"| {name} | {s['n']} | {s['recovered']} | {100 * s['rate']:.1f} | {s['wrong']} | "
            f"{s['not_found']} | {s['errors']} | {s['routes'].get('watermark', 0)} | "
            f"{s['routes'].get('fingerprint', 0)} | {s['signature_trusted']} | {s['median_ms']} |"
        )
    fp_lines = []
    for name, s in r["recovery"].items():
        xs = s.get("fingerprint_inliers") or []
        if xs:
            below = sum(1 for x in xs if x < 16)
            fp_lines.append(f"{name}: {len(xs)} copies, median {statistics.median(xs):g} "
                            f"inliers, {below} below 16")
    if fp_lines:
        lines += ["", "Verified inliers of the stripped copies that reached the fingerprint route "
                  "(the watermark was not found): " + "; ".join(fp_lines) + "."]
    lines += ["", "False recoveries against store A (a manifest returned for an image store A did "
              "not sign), with the closest any came to a decision (the fingerprint route needs "
              "16 inliers on an uncalibrated index; the watermark route p <= 1e-4):", "",
              "| set | n | manifest returned | outcomes | most fingerprint inliers | "
              "smallest watermark p |", "|---|---|---|---|---|---|"]
    margins = r.get("negative_margins", {})
    for name, s in r["negatives"].items():
        rest = {k: v for k, v in s.items() if k not in ("n", "manifest_returned")}
        m = margins.get(name, {})
        p = m.get("min_watermark_p")
        lines.append(f"| {name} | {s['n']} | **{s.get('manifest_returned', 0)}** | "
                     + ", ".join(f"{k} {v}" for k, v in sorted(rest.items()))
                     + f" | {m.get('max_inliers', '-')} | {'-' if p is None else f'{p:.2g}'} |")
    t = r["tamper"]
    lines += ["", "Tampering (one flipped bit at a random byte of each signed file; each JPEG's "
              "manifest transplanted into another image): our verify — flip: "
              + ", ".join(f"{k} {v}" for k, v in sorted(t["flip"].items()))
              + "; transplant: " + ", ".join(f"{k} {v}" for k, v in sorted(t["transplant"].items()))
              + ". c2pa's Reader alone on the same flipped files: "
              + ", ".join(f"{k} {v}" for k, v in sorted(t["flip_reader"].items())) + "."]
    return "\n".join(lines)
