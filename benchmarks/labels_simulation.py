"""Check `aimonk audit / complete / next` where the truth is known: flip 5 % of the known labels of a learnable set
and hide 20 %, then score the answers against the labels as they were (aimonk/simulation/).

    python benchmarks/labels_simulation.py --quick             # the demo set, made afresh in a temporary folder
    python benchmarks/labels_simulation.py --data-dir benchmarks/data/learnable --backbone efficientnet_lite0

Per seed: 20 % of the images held out (the labelling curve's judge), the rest corrupted and written as a new
labels file in a temporary folder (never over the original), out-of-fold probabilities as `aimonk audit` computes
them. Prints audit precision and recall at the top k = 2 x flips (and NA entries flagged: must be 0), complete's
realised precision per attribute against the level asked, and the labelling curve (mAP after k labels revealed,
chosen by `next` or at random; mean and t interval over seeds). `--measure self-training`: the recommended recipe
with `--na-mode self_train` against `--na-mode ignore` (one round of self-training on complete's fills of the
training images), trained on the same split and paired on the same bootstrap resamples of its validation images.
Features come from aimonk's feature cache, so a rerun skips the backbone.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

import aimonk.labelling.selftrain  # noqa: F401  (the NA mode self_train, an extra)
from aimonk.cache import disk_stores
from aimonk.data.demo import make_demo_dataset
from aimonk.evaluate.comparison import Comparison
from aimonk.evaluate.experiments import compare, run_experiments
from aimonk.simulation import sentences, simulate

IGNORED, SELF_TRAINED = "na_mode ignore", "na_mode self_train"


def self_training(base: dict, level: float, work: Path) -> tuple[Comparison, list[str]]:
    """The paired comparison of the recommended recipe with NA ignored and with self_train at `level` (seed 0, 20 %
    of the images held out), and the self-trained run's report of its fills."""
    experiments = {IGNORED: {"recipe": "recommended"},
                   SELF_TRAINED: {"recipe": "recommended", "na_mode": "self_train", "self_train_level": level}}
    trained = run_experiments({**base, "val_fraction": 0.2}, experiments, [0], work,
                              disk_stores(cache_dir=base.get("cache_dir")))
    return compare(trained, seed=0, n_bootstrap=1000), trained[-1].result.report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="folder with labels.txt and images/ (default: a fresh demo)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="auto")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budgets", default="0,50,100,200", help="labels revealed, comma-separated")
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--flip", type=float, default=0.05)
    parser.add_argument("--hide", type=float, default=0.2)
    parser.add_argument("--cv-folds", type=int, default=5, help="folds on which lbfgs chooses each attribute's L2")
    parser.add_argument("--measure", choices=["simulation", "self-training", "both"], default="simulation")
    parser.add_argument("--quick", action="store_true", help="one seed, budgets 0 and 50, L2 chosen on 2 folds")
    args = parser.parse_args()
    seeds, budgets = (1, [0, 50]) if args.quick else (args.seeds, [int(k) for k in args.budgets.split(",")])
    base = {"backbone": args.backbone, "weights": args.weights, "image_size": args.image_size, "workers": 1,
            "cv_folds": 2 if args.quick else args.cv_folds}
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    with tempfile.TemporaryDirectory(prefix="aimonk-demo-") as demo:
        data_dir = args.data_dir or make_demo_dataset(Path(demo)).parent
        labels, images = data_dir / "labels.txt", data_dir / "images"
        start = time.perf_counter()
        if args.measure != "self-training":
            simulation = simulate(labels, images, base, range(seeds), args.flip, args.hide, args.level, budgets)
            print(f"{data_dir}, {args.backbone} ({args.weights}), {seeds} seed(s), "
                  f"{time.perf_counter() - start:.0f} s\n")
            print("audit (top k = 2 x flips):", simulation.audit.round(3), sep="\n", end="\n\n")
            print("complete:", simulation.completion.round(3), sep="\n", end="\n\n")
            print("labelling curve (mAP on held-out images):", simulation.curve_summary().round(4), sep="\n",
                  end="\n\n")
            print("\n".join(sentences(simulation)), flush=True)
        if args.measure != "simulation":
            comparison, report = self_training({**base, "labels": str(labels), "image_dir": str(images)},
                                               args.level, Path(demo) / "self-training")
            print(f"\nself-training ({data_dir}, {args.backbone}), {time.perf_counter() - start:.0f} s:", *report,
                  comparison.readable(IGNORED).to_string(), comparison.sentence(SELF_TRAINED, IGNORED), sep="\n")


if __name__ == "__main__":
    main()
