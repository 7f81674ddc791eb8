"""Latency of the lexical guard: p50/p95 per prompt, one thread, ~100 concepts x ~5 aliases.

Concepts and prompts are generated from a seed (invented syllable names; prompts from
everyday templates, a third of them naming a concept, some disguised). Target (issue 16):
<= 1 ms per prompt lexical only.

    PYTHONPATH=src python benchmarks/bench_guard_lexical.py [--concepts 100] [--prompts 2000]
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time

from tracemark.guard.lexical import LexicalMatcher
from tracemark.guard.types import Concept, PromptSet

SYL = ["ka", "zor", "blin", "vex", "mur", "tal", "quon", "dri", "fen", "lox", "sar", "py",
       "gral", "tum", "wex", "oth", "nar", "bel", "cyr", "dov", "mi", "ro"]
SUBJECTS = ["a red fox", "an old lighthouse", "a bowl of ramen", "two children playing",
            "a mountain lake", "a vintage car", "a cat on a windowsill", "a busy market"]
STYLES = ["watercolor", "oil painting", "35mm photo", "pencil sketch", "digital art, 4k"]


def name(rng: random.Random, words: int) -> str:
    return " ".join("".join(rng.choice(SYL) for _ in range(rng.randint(2, 3))).title()
                    for _ in range(words))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concepts", type=int, default=100)
    ap.add_argument("--aliases", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    concepts, seen = [], set()
    while len(concepts) < a.concepts:
        n = name(rng, rng.choice([1, 2, 2, 3]))
        if n.casefold() in seen:
            continue
        seen.add(n.casefold())
        concepts.append(Concept(n, aliases=tuple(name(rng, 2) for _ in range(a.aliases)),
                                traits=("a glowing visor", "a long striped scarf")))
    t0 = time.perf_counter()
    m = LexicalMatcher(concepts)
    build = time.perf_counter() - t0
    prompts = []
    for _ in range(a.prompts):
        words = [rng.choice(SUBJECTS), "in the style of", rng.choice(STYLES),
                 "highly detailed, soft light, " * rng.randint(0, 3)]
        if rng.random() < 1 / 3:
            c = rng.choice(concepts)
            n = rng.choice(c.names)
            n = rng.choice([n, n.lower(), " ".join(n), n.replace("o", "0"), n + "'s"])
            words.insert(rng.randint(0, len(words)), n)
        prompts.append(PromptSet.of(" ".join(words)))
    for ps in prompts[:50]:
        m.match(ps)
    times = []
    for ps in prompts:
        t = time.perf_counter()
        m.match(ps)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    q = statistics.quantiles(times, n=100)
    chars = statistics.mean(len(p.prompts[0].text) for p in prompts)
    print(f"{time.strftime('%Y-%m-%d')} {platform.processor() or platform.machine()} "
          f"python {platform.python_version()}")
    print(f"concepts={a.concepts} names={sum(len(c.names) for c in concepts)} "
          f"prompts={a.prompts} mean_chars={chars:.0f} build_ms={build * 1000:.1f}")
    print(f"per prompt ms: p50={q[49]:.3f} p95={q[94]:.3f} max={times[-1]:.3f}")


if __name__ == "__main__":
    main()
