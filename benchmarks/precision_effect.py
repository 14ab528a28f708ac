"""Does bf16 autocast in the frozen backbone change what training learns? Trains the same run (same seed, split,
order and flips) with backbone features computed in fp32 and in bf16, and compares features, loss histories and
per-attribute validation ROC AUC.

    python benchmarks/precision_effect.py --data-dir ../shared/aimonk-dataset

Randomly initialised backbone (no ImageNet weights offline); both runs share it.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from aimonk.checkpoint import load_checkpoint
from aimonk.config import TrainConfig
from aimonk.training import TrainResult, train

ROOT = Path(__file__).resolve().parents[1]


def validation_auc(result: TrainResult, features: torch.Tensor) -> list[float]:
    """Per-attribute ROC AUC on the held-out rows (as-is orientation), over known labels."""
    state = load_checkpoint(result.model_path)["state_dict"]
    rows = result.data.val_rows
    logits = features[torch.as_tensor(rows), 0] @ state["head.weight"].T + state["head.bias"]
    table = result.data.table
    aucs = []
    for j in range(logits.shape[1]):
        known = table.known[rows, j]
        aucs.append(float(roc_auc_score(table.targets[rows, j][known], logits[known, j].numpy())))
    return aucs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-5, 1e-3])
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.simplefilter("ignore", UserWarning)  # the real dataset lists 3 missing images; both runs skip them

    with tempfile.TemporaryDirectory() as cache_dir, tempfile.TemporaryDirectory() as out_dir:
        for lr in args.lrs:
            results = {}
            for precision in ("fp32", "bf16"):
                config = TrainConfig(
                    data_dir=str(args.data_dir), out_dir=f"{out_dir}/{precision}", weights="none", epochs=args.epochs,
                    lr=lr, seed=args.seed, val_fraction=args.val_fraction, precision=precision, cache_dir=cache_dir,
                    progress=False,
                )
                results[precision] = train(config)
            fp32, bf16 = results["fp32"], results["bf16"]
            difference = (bf16.data.features - fp32.data.features).abs()
            history = np.abs(np.subtract(bf16.history, fp32.history))
            print(f"lr {lr:g}, {args.epochs} epochs, {len(fp32.data.train_rows)} train / "
                  f"{len(fp32.data.val_rows)} validation images")
            print(f"  features: max |bf16 - fp32| {difference.max():.4f}, mean {difference.mean():.5f}, "
                  f"relative (L2) {difference.norm() / fp32.data.features.norm():.5f}")
            print(f"  loss history: max |diff| {history.max():.5f} over {len(history)} iterations; final loss "
                  f"fp32 {fp32.history[-1]:.5f}, bf16 {bf16.history[-1]:.5f}")
            for name, result in results.items():
                aucs = validation_auc(result, result.data.features)
                print(f"  validation AUC, head and features in {name}: " + " ".join(f"{a:.4f}" for a in aucs))
            aucs = validation_auc(fp32, bf16.data.features)
            print("  validation AUC, fp32-trained head on bf16 features: " + " ".join(f"{a:.4f}" for a in aucs))


if __name__ == "__main__":
    main()
