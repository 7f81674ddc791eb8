"""The semantic prompt matcher: latency per request on one core, and its separation on the
development set.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_guard_semantic.py [--concepts 100]
        [--traits 6] [--repeats 3] [--threads 1]

Latency: a :class:`~tracemark.guard.semantic.SemanticMatcher` over ``--concepts``
concepts of ``--traits`` traits each (the development set's 14 concepts, then concepts
made deterministically from templates, seed 0) screens every prompt of
``benchmarks/data/guard/dev_semantic.json`` (indirect and benign, one prompt per request)
``--repeats`` times after a warm-up; p50/p95/max per request are reported on the wall
clock and on the process CPU clock (onnxruntime on ``--threads`` intra-op threads, so the
CPU clock is what one core spends, whatever else loads the machine).

Separation: on the development set's own 14 concepts, the threshold that lets at most 1 %
of the benign prompts through (the highest benign score when there are fewer than 100)
and the share of indirect prompts whose concept scores above it. Calibration proper
(p-values on benign prompts) is :mod:`tracemark.guard.screen`'s.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from tracemark.guard.encoder import SentenceEncoder  # noqa: E402
from tracemark.guard.semantic import SemanticMatcher  # noqa: E402
from tracemark.guard.types import Concept, PromptSet  # noqa: E402

DEV = Path(__file__).resolve().parent / "data" / "guard" / "dev_semantic.json"

_COLOURS = ["red", "blue", "green", "golden", "silver", "violet", "orange", "teal", "black",
            "white", "crimson", "amber"]
_CREATURES = ["fox", "otter", "badger", "lynx", "heron", "squirrel", "lizard", "beetle", "moth",
              "whale", "raven", "goat", "knight", "robot", "witch", "sailor", "baker", "clown"]
_THINGS = ["cape", "helmet", "scarf", "boots", "gloves", "satchel", "lantern", "umbrella", "crown",
           "mask", "apron", "backpack"]
_DOES = ("juggles glowing orbs", "rides a unicycle", "sings to the moon", "collects old keys",
         "bakes bread at dawn", "paints on clouds", "sails a paper boat", "guards a bridge",
         "tells riddles", "plays a tiny violin", "sleeps in a teacup", "flies a kite in storms")
_PLACES = ("a floating island", "a lighthouse", "an underground market", "a desert oasis",
           "a snowy pass", "a clock tower", "a coral reef", "a bamboo forest")


def synthetic_concepts(n: int, traits: int, seed: int = 0) -> list[Concept]:
    """``n`` invented concepts of ``traits`` traits each, deterministic in ``seed``."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        colour, creature = rng.choice(_COLOURS), rng.choice(_CREATURES)
        pool = [f"a {colour} {creature}",
                f"a {rng.choice(_COLOURS)} {rng.choice(_THINGS)}",
                f"wears a {rng.choice(_COLOURS)} {rng.choice(_THINGS)}",
                rng.choice(_DOES), f"lives in {rng.choice(_PLACES)}",
                f"a {rng.choice(_THINGS)} with a {rng.choice(_COLOURS)} star",
                f"carries a {rng.choice(_THINGS)}", rng.choice(_DOES)]
        uniq = list(dict.fromkeys(pool))[:traits]
        out.append(Concept(name=f"Synthetic {i:03d}", traits=tuple(uniq)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concepts", type=int, default=100)
    ap.add_argument("--traits", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    dev = json.loads(DEV.read_text("utf-8"))
    dev_concepts = [Concept(**c) for c in dev["concepts"]]
    prompts = [x["text"] for x in dev["indirect"]] + list(dev["benign"])
    encoder = SentenceEncoder(threads=args.threads)
    t = time.perf_counter()
    encoder.load()
    print(f"model loaded in {time.perf_counter() - t:.2f} s", file=sys.stderr)

    # separation on the development set
    m = SemanticMatcher(dev_concepts, encoder=encoder)
    ids = [c.id for c in dev_concepts]
    ind = np.array([m.scores(PromptSet.of(x["text"]))[0][ids.index(x["concept"])]
                    for x in dev["indirect"]])
    ben = np.array([m.scores(PromptSet.of(b))[0].max() for b in dev["benign"]])
    allowed = int(len(ben) * 0.01)
    thr = float(np.sort(ben)[::-1][allowed])
    print(f"dev separation: {len(ind)} indirect, {len(ben)} benign; threshold {thr:.3f} "
          f"(benign above: {int((ben > thr).sum())}); indirect detected "
          f"{(ind > thr).mean():.3f}", flush=True)

    # latency
    concepts = (dev_concepts + synthetic_concepts(args.concepts, args.traits))[:args.concepts]
    t = time.perf_counter()
    matcher = SemanticMatcher(concepts, encoder=encoder)
    n_traits = sum(len(c.traits) for c in concepts)
    print(f"{len(concepts)} concepts, {n_traits} traits embedded in "
          f"{time.perf_counter() - t:.2f} s", file=sys.stderr)
    for p in prompts[:5]:
        matcher.match(PromptSet.of(p))
    # one prompt per request, then longer prompts: three of them joined (about 30 words)
    rng = random.Random(0)
    joined = [", ".join(rng.sample(prompts, 3)) for _ in range(len(prompts) // 2)]
    for label, texts in (("dev prompts", prompts), ("3 joined", joined)):
        latency(matcher, texts, args.repeats, label)
    return 0


def latency(matcher: SemanticMatcher, prompts: list[str], repeats: int, label: str) -> None:
    """Print p50/p95/max per request of ``matcher`` over ``prompts``."""
    wall, cpu, parts = [], [], []
    for r in range(repeats):
        for i, p in enumerate(prompts):
            ps = PromptSet.of(p)
            w0, c0 = time.perf_counter(), time.process_time()
            matcher.match(ps)
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
            if r == 0:
                parts.append(len(matcher.parts(ps)))
            if i % 50 == 0:
                print(f"  {label}, repeat {r + 1}/{repeats}: {i}/{len(prompts)}",
                      file=sys.stderr)

    def q(xs: list[float], p: float) -> float:
        return float(np.percentile(np.asarray(xs) * 1000, p))

    words = np.mean([len(p.split()) for p in prompts])
    print(f"[{label}] date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {_cpu()}, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; python "
          f"{platform.python_version()}; intra-op threads {matcher.encoder.threads}")
    print(f"[{label}] {len(prompts)} prompts x {repeats}, {words:.1f} words and "
          f"{np.mean(parts):.1f} parts per prompt (max {max(parts)})")
    print(f"[{label}] wall ms per request: p50 {q(wall, 50):.2f}  p95 {q(wall, 95):.2f}  "
          f"max {q(wall, 100):.2f}")
    print(f"[{label}] cpu  ms per request: p50 {q(cpu, 50):.2f}  p95 {q(cpu, 95):.2f}  "
          f"max {q(cpu, 100):.2f}", flush=True)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


if __name__ == "__main__":
    sys.exit(main())
