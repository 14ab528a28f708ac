"""Does bf16 autocast change what training learns? Each case trains the same seeded run (same split, initialisation,
order and flips) twice, with the backbone in fp32 and in bf16, and compares time, loss histories and per-attribute
validation ROC AUC with its bootstrap interval, as `aimonk evaluate` computes it (each checkpoint predicting in its
own precision).

    python benchmarks/precision_effect.py                                  # the embedded demo set, both cases
    python benchmarks/precision_effect.py --data-dir ../shared/aimonk-dataset --cases frozen

Randomly initialised backbone (no ImageNet weights offline); both runs of a case share it. The cases are recipes that
learn from it on the demo set (validation AUC far above chance), so a difference bf16 makes would show:

- frozen: the reference's frozen backbone and head, lr 1e-3, 20 epochs (features cached once per precision);
- fine-tune: `--trainable-stages 5`, the whole network trained, lr 1e-3, at the demo's own 96 px.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from common import ROOT, Stopwatch, machine
from sklearn.metrics import roc_auc_score

from aimonk.cache import config_stores
from aimonk.config import TrainConfig
from aimonk.evaluate.scoring import score_checkpoint
from aimonk.metrics import evaluate
from aimonk.train.training import TrainResult, train

CASES = {
    "frozen": {"lr": 1e-3, "epochs": 20},
    "fine-tune": {"trainable_stages": 5, "lr": 1e-3, "epochs": 8, "image_size": 96},
}


def auc_table(result: TrainResult, data_dir: Path, bootstrap: int) -> str:
    """`Attr1 0.97 [0.93, 1.00]  ...`: validation ROC AUC per attribute with its bootstrap interval."""
    scores = score_checkpoint(result.model_path, data_dir / "labels.txt", data_dir / "images").scores()
    table = evaluate(scores.table, scores.probabilities, n_bootstrap=bootstrap)
    return "  ".join(f"{name} {row.roc_auc:.3f} [{row.roc_auc_low:.2f}, {row.roc_auc_high:.2f}]"
                     for name, row in table.iterrows())


def head_on_features(result: TrainResult, features: torch.Tensor) -> list[float]:
    """Validation ROC AUC per attribute of a trained frozen-backbone head applied to cached features (as-is)."""
    head = torch.load(result.model_path, weights_only=True)["state_dict"]
    rows = result.data.val_rows
    logits = (features[torch.as_tensor(rows), 0].float() @ head["head.weight"].T + head["head.bias"]).numpy()
    table = result.data.table
    return [float(roc_auc_score(table.targets[rows, j][table.known[rows, j]], logits[table.known[rows, j], j]))
            for j in range(logits.shape[1])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--epochs", type=int, help="override every case's number of epochs")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--bootstrap", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.simplefilter("ignore", UserWarning)  # the real dataset lists 3 missing images; both runs skip them
    print(machine())

    with tempfile.TemporaryDirectory() as cache_dir, tempfile.TemporaryDirectory() as out_dir:
        for case in args.cases:
            settings = {**CASES[case], **({"epochs": args.epochs} if args.epochs else {})}
            results, seconds = {}, {}
            for precision in ("fp32", "bf16"):
                config = TrainConfig(
                    data_dir=str(args.data_dir), out_dir=f"{out_dir}/{case}-{precision}", weights="none",
                    seed=args.seed, val_fraction=args.val_fraction, precision=precision, cache_dir=cache_dir,
                    progress=False, **settings,
                )
                with Stopwatch() as watch:
                    results[precision] = train(config, stores=config_stores(config))
                seconds[precision] = watch.seconds
                print(f"[{case}, {precision}: trained in {watch.seconds:.1f} s{watch.note()}]", flush=True)
            fp32, bf16 = results["fp32"], results["bf16"]
            history = np.abs(np.subtract(bf16.history, fp32.history))
            print(f"{case}: {settings}; {len(fp32.data.train_rows)} train / {len(fp32.data.val_rows)} validation "
                  f"images")
            print(f"  time: fp32 {seconds['fp32']:.1f} s, bf16 {seconds['bf16']:.1f} s (cold feature cache for frozen)")
            print(f"  loss history: max |bf16 - fp32| {history.max():.5f} over {len(history)} iterations; loss "
                  f"first {fp32.history[0]:.4f}, final fp32 {fp32.history[-1]:.4f}, bf16 {bf16.history[-1]:.4f}")
            if fp32.data.features is not None:
                difference = (bf16.data.features.float() - fp32.data.features).abs()  # bf16 is kept as computed
                print(f"  features: max |bf16 - fp32| {difference.max():.4f}, relative (L2) "
                      f"{difference.norm() / fp32.data.features.norm():.5f}")
                aucs = head_on_features(fp32, bf16.data.features)
                print("  validation AUC, fp32-trained head on bf16 features: " + " ".join(f"{a:.3f}" for a in aucs))
            for precision, result in results.items():
                print(f"  validation AUC [{args.bootstrap} bootstrap 95 %], {precision}: "
                      f"{auc_table(result, args.data_dir, args.bootstrap)}", flush=True)


if __name__ == "__main__":
    main()
