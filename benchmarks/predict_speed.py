"""Inference speed: `aimonk predict` over a folder against the raw batched forward of the same model, the same model
exported to ONNX and run by onnxruntime (raw and with decoding), and one image end to end (process start to printed
answer), with the import floor of torch + torchvision beside it.

    python benchmarks/predict_speed.py --data-dir ../shared/aimonk-dataset

The checkpoint timed is a quick one trained on a few of the images with a random backbone (no ImageNet weights
offline); weights do not change the speed. Run it alone: anything else running skews the numbers.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from common import ROOT, Stopwatch, machine
from torch.utils.data import DataLoader

from aimonk.config import TrainConfig
from aimonk.data.images import ImageDataset, Preprocessing, collate_readable, image_files
from aimonk.evaluate.prediction import Predictor
from aimonk.train.training import train


def quick_checkpoint(data_dir: Path, work: Path) -> Path:
    """One epoch on the first 64 label lines: a real checkpoint, made in seconds."""
    lines = (data_dir / "labels.txt").read_text().splitlines()[:64]
    (work / "labels.txt").write_text("\n".join(lines) + "\n")
    config = TrainConfig(
        data_dir=str(data_dir), labels=str(work / "labels.txt"), out_dir=str(work / "model"), weights="none",
        epochs=1, val_fraction=0.0, cache_dir=str(work / "cache"), workers=0, progress=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing images among the first lines are fine here
        return train(config).model_path


def images_per_second(forward: Callable[[torch.Tensor], object], images: torch.Tensor, batches: int) -> float:
    with torch.inference_mode():
        forward(images)  # warm-up: oneDNN picks and caches its kernels
        with Stopwatch() as watch:
            for _ in range(batches):
                forward(images)
    return batches * len(images) / watch.seconds


def count_readable(items: list[dict]) -> int:
    """A collate_fn that keeps the pixels in the worker, as predict's in-worker forward does."""
    return sum("error" not in item for item in items)


def decode_rate(paths: list[Path], preprocessing: Preprocessing, batch_size: int, workers: int) -> float:
    """Images per second that `workers` DataLoader processes decode and preprocess, with no model at all."""
    loader = DataLoader(ImageDataset.unlabelled(paths, preprocessing), batch_size=batch_size,
                        num_workers=workers, collate_fn=count_readable)
    with Stopwatch() as watch:
        for _ in loader:
            pass
    return len(paths) / watch.seconds


def onnxruntime_rates(model: Path, work: Path, paths: list[Path], preprocessing: Preprocessing, images: torch.Tensor,
                      batches: int, workers: list[int], references: tuple[float, float]) -> None:
    """onnxruntime on the fp32 export of `model`: raw forward, then over the images with DataLoader decoding."""
    try:
        import onnxruntime
    except ImportError:
        print("onnxruntime: not installed (pip install 'aimonk[onnx]'); skipped", flush=True)
        return
    from aimonk.evaluate.export import export_model

    exported = export_model(model, work / "model.onnx", check_paths=paths[:8])
    session = onnxruntime.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    raw = images_per_second(lambda batch: session.run(None, {"images": batch}), images.contiguous().numpy(), batches)
    raw_torch, predict_rate = references
    print(f"onnxruntime raw forward, fp32 export ({exported.difference:.0e} from PyTorch fp32): {raw:6.1f} img/s = "
          f"{raw / raw_torch:4.0%} of the raw forward predict runs", flush=True)
    for count in workers:
        loader = DataLoader(ImageDataset.unlabelled(paths, preprocessing), batch_size=len(images), num_workers=count,
                            collate_fn=collate_readable)
        with Stopwatch() as watch:
            done = 0
            for batch in loader:
                if batch["image"] is not None:
                    session.run(None, {"images": batch["image"].numpy()})
                    done += len(batch["index"])
        rate = done / watch.seconds
        print(f"onnxruntime over the images, decoding in {count} workers: {rate:6.1f} img/s = "
              f"{rate / predict_rate:4.0%} of Predictor.predict's best{watch.note()}", flush=True)


def run_cli(arguments: list[str]) -> tuple[float, float]:
    """(seconds to the first printed line, seconds to exit) of `aimonk ARGUMENTS` in a fresh process."""
    return run_process([str(Path(sys.executable).with_name("aimonk")), *arguments])


def run_process(command: list[str]) -> tuple[float, float]:
    """(seconds to the first printed line, seconds to exit) of COMMAND."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    process.stdout.readline()
    answered = time.perf_counter() - start
    process.communicate()
    if process.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed with exit code {process.returncode}")
    return answered, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT, help="folder with images/ and labels.txt")
    parser.add_argument("--model", type=Path, help="checkpoint to time (default: a quick one trained here)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader workers to compare")
    parser.add_argument("--repeats", type=int, default=9, help="runs of the one-image command")
    args = parser.parse_args()
    print(machine(), flush=True)

    with tempfile.TemporaryDirectory() as work:
        model = args.model or quick_checkpoint(args.data_dir, Path(work))
        predictor = Predictor(model)
        paths = image_files([args.data_dir / "images"])
        print(f"{model.name}: {predictor.checkpoint['backbone']}, precision {predictor.precision}; "
              f"{len(paths)} images in {args.data_dir / 'images'}; batch {args.batch_size}", flush=True)

        images = torch.randn(args.batch_size, 3, 224, 224).contiguous(memory_format=torch.channels_last)
        batches = max(2, 256 // args.batch_size)
        raw = images_per_second(predictor.probabilities, images, batches)
        print(f"raw forward, the model predict runs (BatchNorm folded, {predictor.precision}, channels_last): "
              f"{raw:6.1f} img/s", flush=True)
        with torch.autocast("cpu", torch.bfloat16, enabled=predictor.precision == "bf16"):
            eager = images_per_second(predictor.model.to(memory_format=torch.channels_last), images, batches)
        print(f"raw forward, same checkpoint as an eager torchvision module ({predictor.precision}, channels_last): "
              f"{eager:6.1f} img/s", flush=True)
        plain = images_per_second(predictor.model.to(memory_format=torch.contiguous_format), images.contiguous(),
                                  batches)
        print(f"raw forward, same checkpoint, plain fp32: {plain:6.1f} img/s", flush=True)

        decode = decode_rate(paths, predictor.preprocessing, args.batch_size, max(args.workers))
        ceiling = 1 / (1 / decode + 1 / raw)
        print(f"decoding + preprocessing alone, {max(args.workers)} workers: {decode:6.1f} img/s; so on these cores, "
              f"which must both decode and run the model, at most 1/(1/{decode:.0f} + 1/{raw:.0f}) = {ceiling:.1f} "
              f"img/s = {ceiling / raw:.0%} of the raw forward", flush=True)
        rates = []
        for workers in args.workers:
            with Stopwatch() as watch:
                predictions = list(predictor.predict(paths, args.batch_size, workers))
            rate = len(predictions) / watch.seconds
            rates.append(rate)
            print(f"Predictor.predict, {workers} workers: {rate:6.1f} img/s = {rate / raw:4.0%} of the raw forward, "
                  f"{rate / eager:4.0%} of the eager module's, {rate / ceiling:4.0%} of the ceiling{watch.note()}",
                  flush=True)

        onnxruntime_rates(model, Path(work), paths, predictor.preprocessing, images, batches, args.workers,
                          (raw, max(rates)))

        _, folder_total = run_cli(["predict", str(args.data_dir / "images"), "--model", str(model)])
        print(f"aimonk predict FOLDER ({len(paths)} images), whole process: {folder_total:6.1f} s, "
              f"{len(paths) / folder_total:6.1f} img/s including start-up", flush=True)

        one, floor = [], []
        for _ in range(args.repeats):  # interleaved, so a slower spell of the machine touches both alike
            one.append(run_cli(["predict", str(paths[0]), "--model", str(model)]))
            floor.append(run_process([sys.executable, "-c", "import torch, torchvision; print(flush=True)"])[0])
        answers = [answer for answer, _ in one]
        print(f"aimonk predict ONE_IMAGE: answer printed after {statistics.median(answers):.2f} s (median of "
              f"{args.repeats}; fastest {min(answers):.2f} s, slowest {max(answers):.2f} s), process ends after "
              f"{statistics.median(end for _, end in one):.2f} s")
        print(f"  floor: python -c 'import torch, torchvision; print()' prints after {statistics.median(floor):.2f} s "
              "(median)")


if __name__ == "__main__":
    main()
