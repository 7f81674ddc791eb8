"""The benign background the prompt screen is calibrated on.

A screen's false-positive rate is only as honest as the prompts it is measured on, so the
background is generated (deterministically, from a seed) over everyday subjects, actions,
styles, settings and camera terms, plus the kind words a protected concept shares with
ordinary requests ("a cartoon character", "an oil painting in a famous style", "a mascot
for a cereal brand"), plus, for the registered concepts, near-misses that use ONE of a
concept's traits in an everyday frame (a prompt that shares one trait with a character is
not a request for it). The p-value of a score is its rank among the background's scores
(:mod:`tracemark.guard.screen`).

These templates are tracemark's own and are independent of the evaluation set in
``benchmarks/data/guard`` (different words and frames), so the evaluation measures the
calibration on prompts it was not fitted to.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from tracemark.guard.types import Concept, PromptSet

__all__ = ["background_prompts", "near_miss_prompts", "DEFAULT_BACKGROUND_SIZE"]

DEFAULT_BACKGROUND_SIZE = 1200
"""Generated everyday prompts in the default background (near-misses come on top)."""

_SUBJECTS = [
    "an old fisherman mending nets", "a golden retriever puppy", "a bowl of ramen",
    "a red vintage bicycle", "a lighthouse on a cliff", "two children flying a kite",
    "a tabby cat asleep on a windowsill", "a bustling night market", "a snowy mountain cabin",
    "a stack of pancakes with berries", "a hummingbird at a flower", "a steam locomotive",
    "a woman reading in a cafe", "a herd of elephants at a waterhole", "a glass of iced coffee",
    "a medieval castle", "a sailboat at sunset", "a field of sunflowers", "a city skyline",
    "a robot vacuum cleaner", "a grandmother baking bread", "a koi pond", "a desert canyon",
    "a street musician playing violin", "a bowl of fruit on a table", "a foggy forest path",
    "a vintage typewriter", "a hot air balloon", "a surfer riding a wave", "a cozy library",
    "a farmer with a tractor", "a jellyfish in dark water", "a plate of sushi",
    "a wooden rowboat on a lake", "a black horse in a meadow", "a child blowing bubbles",
    "a busy train station", "a potted cactus", "a pair of running shoes", "a rainy street",
    "a fox in the snow", "a cup of tea and a book", "an astronaut floating in space",
    "a basket of apples", "a barn owl on a fence post", "a chef tossing vegetables in a wok",
    "a bridge over a river", "a group of friends at a picnic", "a vintage car",
    "a parrot on a branch", "a mountain lake", "a bakery window display", "a tiny house",
    "a soccer match in a stadium", "a lion resting in tall grass", "a violin on a chair",
    "a street food vendor", "a wedding cake", "a wind turbine farm", "a dragonfly on a reed",
    "a knight in armor", "a wizard with a staff", "a dragon flying over hills",
    "a fairy in a garden", "a pirate ship", "a friendly robot", "a spaceship", "a mermaid",
    "a mouse eating cheese", "a rabbit in a field", "a bear catching salmon",
    "a penguin on the ice", "a frog on a lily pad", "a squirrel with an acorn",
    "a teenage skateboarder", "a businessman with an umbrella", "a ballet dancer",
    "a firefighter", "a nurse in scrubs", "a detective in a trench coat", "a cowboy on a horse",
    "a samurai", "a ninja on a rooftop", "a princess in a tower", "a superhero in a cape",
    "a cartoon dog", "a cartoon mouse", "a cartoon duck", "a yellow sponge", "a blue bird",
    "a talking car", "a magical girl", "a giant monster in a city", "a little mermaid",
    "a brave little toaster", "a plumber in overalls", "a hedgehog", "a red fox cub",
    "a snowman", "a gingerbread man", "a teddy bear", "a clown", "a mascot costume",
]
_STYLES = [
    "photograph", "watercolor painting", "oil painting", "pencil sketch", "3d render",
    "pixel art", "anime style illustration", "cartoon illustration", "comic book panel",
    "studio photo", "charcoal drawing", "children's book illustration", "vector art",
    "claymation still", "low poly render", "impressionist painting", "ukiyo-e print",
    "art nouveau poster", "cinematic still", "polaroid photo", "flat illustration",
    "digital painting", "stained glass", "embroidery", "isometric illustration",
]
_SETTINGS = [
    "in the rain", "at golden hour", "under neon lights", "in a snowy village",
    "on a beach", "in a busy city", "at night", "in a misty forest", "in the desert",
    "on a rooftop", "in a kitchen", "in outer space", "underwater", "in autumn",
    "in a flower garden", "in a small town", "in the mountains", "in a classroom",
    "on a farm", "in a futuristic city", "in a medieval market", "at a carnival",
]
_EXTRAS = [
    "highly detailed", "soft lighting", "wide angle", "35mm", "bokeh", "8k", "trending",
    "pastel colors", "dramatic lighting", "vibrant colors", "muted tones", "symmetrical",
    "close-up", "aerial view", "minimalist", "intricate", "cozy atmosphere", "sharp focus",
]
_KIND_FRAMES = [
    "an original cartoon character waving", "a famous painting in a museum",
    "an oil painting in the style of the old masters", "a mascot for a cereal brand",
    "a portrait of a celebrity on a red carpet", "a superhero team poster",
    "a logo for a coffee shop", "a sneaker advertisement", "a movie poster for a fantasy film",
    "an anime character with big eyes", "a video game hero", "fan art of a comic book",
    "a toy figurine on a shelf", "a plush toy", "a cosplay photo at a convention",
    "a soda can product shot", "a painting inspired by impressionism",
    "album cover art in a bold style", "a children's cartoon show still",
    "a brand new smartphone on a desk",
]


def background_prompts(n: int = DEFAULT_BACKGROUND_SIZE, seed: int = 0) -> list[PromptSet]:
    """``n`` everyday requests (a positive prompt each; one in eight with an ordinary
    negative prompt), deterministic for ``seed``."""
    rng = random.Random(seed)
    out: list[PromptSet] = []
    negatives = ["blurry, low quality", "text, watermark", "extra fingers, deformed",
                 "oversaturated", "cropped"]
    for i in range(n):
        r = rng.random()
        if r < 0.12:
            text = f"{rng.choice(_KIND_FRAMES)}, {rng.choice(_EXTRAS)}"
        elif r < 0.55:
            text = f"{rng.choice(_SUBJECTS)} {rng.choice(_SETTINGS)}, {rng.choice(_STYLES)}"
        elif r < 0.8:
            text = (f"a {rng.choice(_STYLES)} of {rng.choice(_SUBJECTS)}, "
                    f"{rng.choice(_EXTRAS)}, {rng.choice(_EXTRAS)}")
        else:
            a, b = rng.sample(_SUBJECTS, 2)
            text = f"{a} and {b} {rng.choice(_SETTINGS)}"
        neg = rng.choice(negatives) if i % 8 == 7 else None
        out.append(PromptSet.of(text, neg))
    return out


_TRAIT_FRAMES = [
    "a photo of {t} on a sunny day", "{t}, watercolor", "a drawing of {t} in a park",
    "{t} in a shop window",
]


def near_miss_prompts(concepts: Sequence[Concept], per_trait: int = 1,
                      seed: int = 0) -> list[PromptSet]:
    """For each concept, each trait alone in ``per_trait`` everyday frames (without the
    name): what an ordinary request that shares one trait with a protected concept
    looks like."""
    rng = random.Random(seed)
    out: list[PromptSet] = []
    for c in concepts:
        for t in c.traits:
            for frame in rng.sample(_TRAIT_FRAMES, min(per_trait, len(_TRAIT_FRAMES))):
                out.append(PromptSet.of(frame.format(t=t)))
    return out
