"""One process against `torchrun --nproc_per_node=N`: feature extraction on a cold cache, then training on the warm
cache, timed inside the processes (rank 0) and as whole launches.

    python benchmarks/distributed_speed.py --data-dir ../shared/aimonk-dataset

Each configuration trains twice with the same settings: first into an empty feature cache (extraction: every image
decoded and embedded once, shared out among the processes), then again on the now warm cache (the features read
back; training). The N processes share this machine's cores, one thread each (torchrun's default), where the single
process uses them all: on 2 cores, no speed-up is expected. What it shows is the cost of the distributed steps
(start-up, gathering, DistributedDataParallel's all-reduce), and the measured cost per image that the README's
arithmetic for larger machines starts from. ResNet18 with random weights (the work is the same as with ImageNet's).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import ROOT, cpu_seconds, machine

WORKER = "--worker"  # the script itself runs in each process, timing the phases of aimonk.train.training.train


def worker(arguments: list[str]) -> None:
    """Train with `aimonk train` options, timing data preparation and the solver: wall time, and CPU time of this
    process and its finished data-loading workers. Every rank prints its timings as one JSON line."""
    import aimonk.distributed  # noqa: F401  (torchrun's job, as the command line joins it)
    import aimonk.train.training as training
    from aimonk.cache import config_stores
    from aimonk.cli import build_parser
    from aimonk.config import config_from_arguments
    from aimonk.registry import SOLVERS
    from aimonk.train.training import Solver

    timings: dict[str, float] = {}

    def timed(name: str, function: Callable) -> Callable:
        def run(*args: object, **kwargs: object) -> object:
            start, cpu = time.perf_counter(), cpu_seconds()
            result = function(*args, **kwargs)
            timings[name], timings[f"{name}_cpu"] = time.perf_counter() - start, cpu_seconds() - cpu
            return result
        return run

    training.prepare_data = timed("data", training.prepare_data)
    training.SOLVERS = {name: Solver(timed("fit", SOLVERS[name].fit), SOLVERS[name].full_batch) for name in SOLVERS}
    config = config_from_arguments(build_parser().parse_args(["train", *arguments]))
    result = training.train(config, stores=config_stores(config))
    print(json.dumps({**timings, "images": len(result.data.table), "steps": len(result.history)}), flush=True)


def launch(processes: int, arguments: list[str]) -> dict:
    """One training run by `processes` processes: per phase the slowest rank's wall time and the CPU time of all,
    and the launch's wall time (start-up included)."""
    script = [str(Path(__file__).resolve()), WORKER, *arguments]
    command = [sys.executable, *script] if processes == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *script]
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    wall = time.perf_counter() - start
    if run.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{run.stderr}")
    ranks = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(ranks) == processes, run.stdout
    summary = {key: max(rank[key] for rank in ranks) for key in ("data", "fit", "images", "steps")}
    return {**summary, **{key: sum(rank[key] for rank in ranks) for key in ("data_cpu", "fit_cpu")}, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT, help="folder with images/ and labels.txt")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="data-loading processes, per training process")
    args = parser.parse_args()
    print(f"{machine()}\n{args.data_dir}; reference recipe, {args.epochs} epochs, --weights none, "
          f"{args.workers} workers per process; load average before: {os.getloadavg()[0]:.1f}", flush=True)
    print("per phase: wall time of the slowest process, and CPU time of all processes (with their data-loading "
          "workers)")
    print(f"{'processes':>9} | {'extraction':>10} {'CPU':>7} {'CPU/image':>9} {'launch':>7} | {'training':>8} "
          f"{'CPU':>6} {'CPU/step':>8} {'launch':>7} | load")
    for processes in args.processes:
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
            common = ["--data-dir", str(args.data_dir), "--weights", "none", "--epochs", str(args.epochs),
                      "--workers", str(args.workers), "--no-progress", "--cache-dir", cache]
            cold = launch(processes, [*common, "--out-dir", f"{out}/cold"])
            warm = launch(processes, [*common, "--out-dir", f"{out}/warm"])
        print(f"{processes:9d} | {cold['data']:9.1f}s {cold['data_cpu']:6.1f}s "
              f"{cold['data_cpu'] / cold['images'] * 1000:7.1f}ms {cold['wall']:6.1f}s | {warm['fit']:7.2f}s "
              f"{warm['fit_cpu']:5.1f}s {warm['fit_cpu'] / warm['steps'] * 1000:6.1f}ms {warm['wall']:6.1f}s | "
              f"{os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == [WORKER]:
        worker(sys.argv[2:])
    else:
        main()
