"""int8 inference on the CPU: images/s of `aimonk predict` (the checkpoint, bf16 PyTorch), its fp32 ONNX export and
its int8 export (`aimonk export --quantize int8`), each run by `aimonk predict` end to end (decoding included), side
by side in one run, for ResNet18 and EfficientNet-Lite0; the CPU's VNNI flags beside them; and what int8 costs: AP
per attribute on the learnable set's validation images, int8 against fp32, with paired bootstrap intervals. Also the
four ways onnxruntime can quantise (QDQ or QOperator, per-tensor or per-channel weights): the raw forward rate of
each (no decoding) and its mean AP, the measurement behind `aimonk.evaluate.export`'s INT8_FORMAT/INT8_PER_CHANNEL.

    python benchmarks/learnable.py          # once: the learnable set (benchmarks/data/learnable)
    python benchmarks/int8.py               # about 10 minutes on 2 quiet cores; run it alone (see the load lines)

Lite0 has its genuine ImageNet weights (aimonk[lite0]); ResNet18's cannot be downloaded offline, so it is random
(`--weights none`): its speed is the same, its AP is that of random features. Each checkpoint is the `recommended`
recipe (frozen backbone, lbfgs head) trained on the learnable set's training split.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from common import ROOT, Stopwatch, machine

from aimonk.cache import disk_stores
from aimonk.evaluate.comparison import OVERALL, Comparison
from aimonk.evaluate.experiments import run_experiments
from aimonk.evaluate.export import calibration_images, export_model, quantized_int8
from aimonk.evaluate.onnx_inference import INPUT, OUTPUT, OnnxPredictor, session_of
from aimonk.evaluate.prediction import Prediction, Predictor
from aimonk.metrics import Scores

BACKBONES = {"resnet18": "none", "efficientnet_lite0": "imagenet"}  # backbone: weights
VARIANTS = [("QDQ", False), ("QDQ", True), ("QOperator", False), ("QOperator", True)]


def cpu_flags() -> str:
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    shown = [flag for flag in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if flag in flags]
    vnni = "VNNI: yes" if {"avx512_vnni", "avx_vnni"} & flags else "VNNI: no (int8 is expected near 1x)"
    return f"CPU flags: {' '.join(shown) or 'none of avx2/avx512/vnni'}; {vnni}"


def load() -> str:
    return "load average (1, 5, 15 min): " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def predict_rates(runs: dict[str, Callable[[list[Path]], Iterable[Prediction]]], paths: list[Path],
                  rounds: int) -> dict[str, tuple[float, str]]:
    """Images/s of each predictor over `paths`, the best of `rounds` rounds taken in turn (so that load from other
    processes falls on all alike), with a note where others loaded the CPU during that best round."""
    best: dict[str, tuple[float, str]] = {name: (0.0, "") for name in runs}
    for predict in runs.values():
        list(predict(paths[:64]))  # warm-up: oneDNN and onnxruntime pick their kernels
    for _ in range(rounds):
        for name, predict in runs.items():
            with Stopwatch() as watch:
                count = sum(1 for prediction in predict(paths) if prediction.error is None)
            if count / watch.seconds > best[name][0]:
                best[name] = (count / watch.seconds, watch.note())
    return best


def probabilities(predict: Callable[[list[Path]], Iterable[Prediction]], paths: list[Path]) -> np.ndarray:
    return np.array([prediction.probabilities for prediction in predict(paths)])


def forward_rate(model: bytes, images: np.ndarray, repeats: int = 5) -> float:
    """Images/s of onnxruntime's forward pass alone on preprocessed images (all threads)."""
    session = session_of(model)
    session.run([OUTPUT], {INPUT: images})
    with Stopwatch() as watch:
        for _ in range(repeats):
            session.run([OUTPUT], {INPUT: images})
    return repeats * len(images) / watch.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / "benchmarks" / "data" / "learnable")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--cache-dir", help="feature cache (default: a temporary folder, so the first run is cold)")
    parser.add_argument("--no-variants", action="store_true", help="skip the four ways of quantising")
    parser.add_argument("--images", type=int, default=320, help="images each predict round reads")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three in turn; the best one counts")
    args = parser.parse_args()
    warnings.simplefilter("ignore", UserWarning)
    print(machine())
    print(cpu_flags())
    print(load())
    speed, quality, variants = [], {}, []
    with tempfile.TemporaryDirectory() as work, tempfile.TemporaryDirectory() as temporary_cache:
        stores = disk_stores(cache_dir=args.cache_dir or temporary_cache)
        for backbone in args.backbones:
            base = {"data_dir": str(args.data_dir), "backbone": backbone, "weights": BACKBONES[backbone],
                    "workers": 2}
            [trained] = run_experiments(base, {"recommended": {"recipe": "recommended"}}, [0],
                                        Path(work) / backbone, stores)
            model = trained.result.model_path
            fp32 = export_model(model).path
            int8 = export_model(model, quantize="int8")
            print(f"{backbone}: int8 {int8.quantized}")
            images = sorted((args.data_dir / "images").iterdir())[: args.images]
            runs = {"aimonk predict (bf16 PyTorch)": Predictor(model).predict, "onnxruntime fp32":
                    OnnxPredictor(fp32).predict, "onnxruntime int8": OnnxPredictor(int8.path).predict}
            rates = predict_rates(runs, images, args.rounds)
            speed.append((backbone, rates, load()))
            table = trained.validation
            validation = [args.data_dir / "images" / name for name in table.filenames]
            scores = {name: Scores(table, probabilities(predict, validation), [0.5] * len(table.attributes))
                      for name, predict in runs.items()}
            quality[backbone] = Comparison(table, scores, n_bootstrap=args.bootstrap)
            if args.no_variants:
                continue
            predictor = Predictor(model)
            calibration, _ = calibration_images(predictor, None)
            batch = calibration[:32]
            check = np.stack([predictor.preprocessing.load(path).numpy() for path in validation])
            fp32_bytes = fp32.read_bytes()
            for quant_format, per_channel in VARIANTS:
                quantized = quantized_int8(fp32_bytes, calibration, quant_format, per_channel)
                session = session_of(quantized)
                out = np.concatenate([session.run([OUTPUT], {INPUT: check[i : i + 50]})[0]
                                      for i in range(0, len(check), 50)])
                variant = Comparison(table, {"int8": Scores(table, out.astype(np.float64), [0.5] * out.shape[1]),
                                             "fp32": scores["onnxruntime fp32"]}, n_bootstrap=args.bootstrap)
                variants.append((backbone, quant_format, per_channel, forward_rate(quantized, batch),
                                 forward_rate(fp32_bytes, batch), variant.estimate("int8", OVERALL, "ap")[0],
                                 variant.estimate("fp32", OVERALL, "ap")[0]))
    print(f"\nimages/s of `aimonk predict` end to end (decoding included; {args.images} images of 224 px, batch 32, "
          f"2 workers; the best of {args.rounds} rounds taken in turn)")
    names = list(speed[0][1])
    print(f"{'backbone':20s}" + "".join(f"{name:>32s}" for name in names) + f"{'int8 / predict':>16s}")
    for backbone, rates, during in speed:
        cells = "".join(f"{rate:31.1f}{'*' if note else ' '}" for rate, note in rates.values())
        ratio = rates["onnxruntime int8"][0] / rates["aimonk predict (bf16 PyTorch)"][0]
        print(f"{backbone:20s}{cells}{ratio:>15.2f}x   ({during})")
    if any(note for _, rates, _ in speed for _, note in rates.values()):
        print("  * other processes used more than 5 % of the CPU meanwhile: rerun on a quiet machine")
    for backbone, comparison in quality.items():
        print(f"\n{backbone} ({BACKBONES[backbone]} weights): AP per attribute on {len(comparison.table)} validation "
              f"images [95% interval], int8 - fp32 paired ({args.bootstrap} resamples)")
        print(f"{'attribute':15s}{'predict bf16':>24s}{'onnx fp32':>24s}{'onnx int8':>24s}{'int8 - fp32':>28s}")
        for attribute in comparison.attributes:
            cells = [comparison.estimate(name, attribute, "ap") for name in comparison.values]
            difference, low, high, _ = comparison.difference("onnxruntime int8", "onnxruntime fp32", attribute, "ap")
            label = "mean" if attribute == OVERALL else attribute
            print(f"{label[:15]:15s}" + "".join(f"{f'{v:.4f} [{lo:.3f}, {hi:.3f}]':>24s}" for v, lo, hi in cells)
                  + f"{f'{difference:+.4f} [{low:+.4f}, {high:+.4f}]':>28s}")
    if variants:
        print("\nthe ways to quantise: onnxruntime's forward alone on 32 preprocessed images (all threads), mean AP")
        print(f"{'backbone':20s}{'format':>10s}{'per-channel':>12s}{'int8 img/s':>12s}{'fp32 img/s':>12s}"
              f"{'speed-up':>10s}{'mean AP int8':>14s}{'fp32':>8s}")
        for backbone, quant_format, per_channel, rate, base_rate, ap, base_ap in variants:
            print(f"{backbone:20s}{quant_format:>10s}{str(per_channel):>12s}{rate:12.1f}{base_rate:12.1f}"
                  f"{rate / base_rate:9.2f}x{ap:14.4f}{base_ap:8.4f}")
    print(f"\n{load()}")


if __name__ == "__main__":
    main()
