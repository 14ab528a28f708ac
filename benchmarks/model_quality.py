"""Model quality: the `reference` and `recommended` recipes against textbook linear probes, standardised logistic
regressions fitted to convergence by scikit-learn on the same frozen features and the same split, their C chosen per
attribute by 5-fold cross-validation on the training images (by log loss, and by average precision). Also
`recommended` with its L2 chosen by the held-out loss alone (the rule before its fallback at the weakest strength),
and with test-time flip averaging (its probabilities averaged over each validation image and its horizontal flip).
Per attribute AP and ROC AUC with bootstrap intervals, mAP, paired differences, each attribute's verdict and L2, and
the training time on the warm cache.

    python benchmarks/learnable.py                                       # once: the learnable set
    python benchmarks/model_quality.py --data-dir benchmarks/data/learnable --weights none
    python benchmarks/model_quality.py --backbone efficientnet_lite0 --weights imagenet --precision fp32
    python benchmarks/model_quality.py --data-dir benchmarks/data/learnable_aspect --backbone efficientnet_lite0 \
        --weights imagenet --resize squash crop     # photos of uneven shape (learnable.py --keep-aspect)
    python benchmarks/model_quality.py --data-dir . --backbone efficientnet_lite0 --weights auto   # the demo set
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from common import ROOT, machine
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from aimonk.cache import disk_stores
from aimonk.evaluate.comparison import OVERALL, Comparison
from aimonk.evaluate.experiments import Trained, run_experiments
from aimonk.metrics import Scores, evaluate
from aimonk.model import linear_heads

C_GRID = [10.0**exponent for exponent in range(-4, 3)]


def probe(trained: Trained, scoring: str) -> Scores:
    """scikit-learn's logistic regression per attribute on the run's cached features (both orientations of each
    training image, as aimonk's solvers see them), C chosen by 5-fold cross-validation grouped by image, by `scoring`
    (neg_log_loss or average_precision; ties go to the strongest regularisation, GridSearchCV's first)."""
    data = trained.result.data
    features = data.features.float().numpy()
    train, val = features[data.train_rows], features[data.val_rows, 0]
    rows, groups = train.reshape(-1, train.shape[-1]), np.repeat(np.arange(len(train)), 2)
    probabilities = np.zeros((len(val), len(data.table.attributes)))
    for j in range(len(data.table.attributes)):
        known = np.repeat(data.table.known[data.train_rows, j], 2)
        truth = np.repeat(data.table.targets[data.train_rows, j], 2)[known] > 0.5
        search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=10_000, tol=1e-6)),
                              {"logisticregression__C": C_GRID}, scoring=scoring, cv=GroupKFold(5))
        with threadpool_limits(1):  # as aimonk's lbfgs: BLAS threads on 2 cores only slow small fits down
            search.fit(rows[known], truth, groups=groups[known])
        probabilities[:, j] = search.predict_proba(val)[:, 1]
    return Scores(trained.validation, probabilities, [0.5] * probabilities.shape[1])


@contextmanager
def patched(module: object, name: str, value: object) -> Iterator[None]:
    """`module.name` replaced by `value` within the block."""
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


def flip_averaged(trained: Trained) -> Scores:
    """The run's probabilities averaged over each validation image and its horizontal flip (both are cached)."""
    data, model = trained.result.data, trained.result.model
    with torch.no_grad():
        features = data.features[torch.as_tensor(data.val_rows)].float()  # (images, 2 orientations, dim)
        probabilities = torch.sigmoid(model.head(features)).mean(1).double().numpy()
    return Scores(trained.validation, probabilities, [0.5] * probabilities.shape[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / "benchmarks" / "data" / "learnable")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--weights", default="none")
    parser.add_argument("--precision", default="bf16", help="of the backbone: bf16 (aimonk's default) or fp32")
    parser.add_argument("--resize", nargs="+", default=["squash"],
                        help="how photos become squares (RESIZES); several are compared on the same resamples")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--cache-dir", help="default: a temporary folder, so the first run is cold")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the train/validation split")
    args = parser.parse_args()
    warnings.simplefilter("ignore", UserWarning)
    print(machine())
    runs, trained = {}, {}
    with tempfile.TemporaryDirectory() as work, tempfile.TemporaryDirectory() as temporary_cache:
        for resize in args.resize:
            tag = f" ({resize})" if len(args.resize) > 1 else ""
            base = {"data_dir": str(args.data_dir), "backbone": args.backbone, "weights": args.weights,
                    "precision": args.precision, "resize": resize, "split_seed": args.split_seed}
            stores = disk_stores(cache_dir=args.cache_dir or temporary_cache)
            reference, recommended = run_experiments(
                base, {"reference": {}, "recommended": {"recipe": "recommended"}}, [0], Path(work) / resize, stores)
            with patched(linear_heads, "plateau_middle", lambda values, tolerance=0.0: len(values) - 1):
                [loss_alone] = run_experiments(base, {"recommended": {"recipe": "recommended"}}, [0],
                                               Path(work) / f"{resize}-loss-alone", stores)
            trained[resize] = reference, recommended
            runs.update({f"reference{tag}": reference.scores, f"recommended{tag}": recommended.scores,
                         f"L2 by loss alone{tag}": loss_alone.scores,
                         f"probe, C by log loss{tag}": probe(reference, "neg_log_loss"),
                         f"probe, C by AP{tag}": probe(reference, "average_precision"),
                         f"recommended + flip TTA{tag}": flip_averaged(recommended)})
        table = reference.validation
        comparison = Comparison(table, runs, n_bootstrap=args.bootstrap)
    print(f"{args.data_dir}: {len(reference.result.data.train_rows)} training and {len(table)} validation images; "
          f"{args.backbone}, weights {args.weights}, {args.precision}, resize {', '.join(args.resize)}; "
          f"{args.bootstrap} paired bootstrap resamples\n")
    width = max(24, *(len(name) + 2 for name in runs))
    for metric, title in (("ap", "AP"), ("roc_auc", "ROC AUC")):
        print(f"{title} per attribute [95% interval]")
        print(f"{'':15s}" + "".join(f"{name:>{width}s}" for name in runs))
        for attribute in comparison.attributes:
            cells = [comparison.estimate(name, attribute, metric) for name in runs]
            label = f"mean ({attribute})" if attribute == OVERALL else attribute
            print(f"{label[:15]:15s}" + "".join(f"{f'{v:8.3f} [{lo:.3f}, {hi:.3f}]':>{width}s}" for v, lo, hi in cells))
        print()
    first = args.resize[0]
    for resize, (reference, recommended) in trained.items():
        tag = f" ({resize})" if len(args.resize) > 1 else ""
        pairs = [("recommended", "probe, C by AP"), ("recommended", "probe, C by log loss"),
                 ("recommended", "L2 by loss alone"), ("recommended", "reference"),
                 ("recommended + flip TTA", "recommended")]
        pairs += [] if resize == first else [("recommended", f"recommended ({first})"),
                                             ("probe, C by AP", f"probe, C by AP ({first})"),
                                             ("recommended", f"probe, C by AP ({first})")]
        for run, other in pairs:
            print(comparison.sentence(run + tag, other if other.endswith(")") else other + tag))
        verdicts = evaluate(table, recommended.scores.probabilities, n_bootstrap=args.bootstrap)["verdict"]
        print(f"\nrecommended{tag}, verdict per attribute: " + "; ".join(f"{a}: {v}" for a, v in verdicts.items()))
        print(f"training time (train(), the feature cache warm for recommended): reference {reference.seconds:.1f} s,"
              f" recommended {recommended.seconds:.1f} s")
        for line in recommended.result.report:
            print(line)
        print()


if __name__ == "__main__":
    main()
