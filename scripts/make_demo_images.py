"""Write the example images shipped in ``src/hf_vit_rollout/demo/images`` (held-out seeds)."""

from __future__ import annotations

from hf_vit_rollout.demo import IMAGES_DIR
from hf_vit_rollout.demo.data import CLASSES, HELD_OUT_SEED, make_sample

#: (seed offset above HELD_OUT_SEED, number of objects)
EXAMPLES = ((101, 1), (205, 1), (303, 2), (404, 2))


def main() -> None:
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    for number, (offset, count) in enumerate(EXAMPLES, start=1):
        sample = make_sample(HELD_OUT_SEED + offset, num_objects=count)
        name = "_".join(CLASSES[label] for label in sample.labels)
        sample.image.save(IMAGES_DIR / f"{number}_{name}.png")
        print(IMAGES_DIR / f"{number}_{name}.png")


if __name__ == "__main__":
    main()
