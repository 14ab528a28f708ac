"""Fine-tuning the last backbone stage: time per epoch with the cache of the last frozen stage against running the
whole backbone on decoded images every epoch (`--no-feature-cache`), same settings, side by side.

    python benchmarks/finetune_speed.py --data-dir ../shared/aimonk-dataset

Per-epoch time is the difference between runs of more and fewer epochs, so start-up, feature extraction and the
final save cancel out. Random ResNet18 weights (none can be downloaded here): the work is the same as pretrained.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

from common import ROOT, Stopwatch, machine

from aimonk.config import TrainConfig
from aimonk.training import train


def timed(settings: dict, epochs: int) -> tuple[float, str]:
    with Stopwatch() as watch:
        train(TrainConfig(epochs=epochs, **settings))
    return watch.seconds, watch.note()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT)
    parser.add_argument("--trainable-stages", type=int, default=1)
    parser.add_argument("--precision", default="bf16")
    args = parser.parse_args()
    warnings.simplefilter("ignore", UserWarning)  # the real dataset lists 3 missing images
    print(machine())
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        settings = dict(data_dir=str(args.data_dir), out_dir=out, cache_dir=cache, weights="none", lr=1e-3,
                        trainable_stages=args.trainable_stages, val_fraction=0.0, precision=args.precision,
                        progress=False)
        cold, _ = timed(settings, 1)
        print(f"cached, first run (extracts the frozen stages' output, 1 epoch): {cold:.1f} s", flush=True)
        one, note_one = timed(settings, 1)
        three, note_three = timed(settings, 3)
        cached = (three - one) / 2
        print(f"cached: 1 epoch {one:.1f} s, 3 epochs {three:.1f} s -> {cached:.2f} s per epoch{note_one}{note_three}",
              flush=True)
        uncached_settings = {**settings, "feature_cache": False}
        one, note_one = timed(uncached_settings, 1)
        two, note_two = timed(uncached_settings, 2)
        uncached = two - one
        print(f"whole backbone every epoch: 1 epoch {one:.1f} s, 2 epochs {two:.1f} s -> {uncached:.2f} s per epoch"
              f"{note_one}{note_two}")
    print(f"summary: {args.trainable_stages} stage(s) fine-tuned, {cached:.2f} s per epoch with the stage cache, "
          f"{uncached:.2f} s without: {uncached / cached:.1f}x faster (target: at least 3x)")


if __name__ == "__main__":
    main()
