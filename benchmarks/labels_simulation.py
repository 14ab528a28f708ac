"""Check `aimonk audit / complete / next` where the truth is known: flip 5 % of the known labels of a learnable set
and hide 20 %, then score the answers against the labels as they were (aimonk/labelling/simulation.py).

    python benchmarks/labels_simulation.py --quick             # the demo set, made afresh in a temporary folder
    python benchmarks/labels_simulation.py --data-dir benchmarks/data/learnable --backbone efficientnet_lite0

Per seed: 20 % of the images held out (the labelling curve's judge), the rest corrupted and written as a new
labels file in a temporary folder (never over the original), out-of-fold probabilities as `aimonk audit` computes
them. Prints audit precision and recall at the top k = 2 x flips (and NA entries flagged: must be 0), complete's
realised precision per attribute against the level asked, and the labelling curve (mAP after k labels revealed,
chosen by `next` or at random; mean and t interval over seeds). `--measure self-training`: one round of
self-training on complete's fills against training on the labels as given (paired bootstrap, no corruption).
Features come from aimonk's feature cache, so a rerun skips the backbone.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from aimonk.data.demo import make_demo_dataset
from aimonk.labelling.selftrain import ORIGINAL, SELF_TRAINED, self_training
from aimonk.labelling.simulation import sentences, simulate


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
            comparison = self_training(labels, images, base, args.level)
            print(f"\nself-training ({data_dir}, {args.backbone}), {time.perf_counter() - start:.0f} s:",
                  comparison.readable(ORIGINAL).to_string(), comparison.sentence(SELF_TRAINED, ORIGINAL), sep="\n")


if __name__ == "__main__":
    main()
