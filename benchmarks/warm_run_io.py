"""What a warm `aimonk train` reads: every image's features are in the feature cache, so it should read no image
bytes (validation included) and its own checkpoint at most once; and its whole process should take little more
than importing torch.

A cold run fills the cache; then a warm run (another learning rate: a new run on the same images) is traced with
strace (`read`/`pread64` by file), and whole processes are timed against `python -c "import torch, torchvision"`,
alternated, median of `--rounds`. The default recipe, 20 % of the images held out (scored at the end of the run).

    python benchmarks/warm_run_io.py --data-dir ../shared/aimonk-dataset
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import ROOT, machine

READ = re.compile(r'^\d+\s+(?:read|pread64)\((\d+)<([^>]*)>.*\)\s+=\s+(\d+)')


def aimonk(*argv: str) -> list[str]:
    return [sys.executable, "-m", "aimonk", *argv]


def traced_reads(command: list[str], log: Path) -> Counter[str]:
    """Bytes read by `command` (and its children), per file path."""
    subprocess.run(["strace", "-f", "-qq", "-y", "-e", "trace=read,pread64", "-e", "signal=none", "-o", str(log),
                    *command], check=True, cwd=ROOT, capture_output=True)
    read: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        if match := READ.match(line):
            read[match.group(2)] += int(match.group(3))
    return read


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".." / "shared" / "aimonk-dataset")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("strace") is None:
        sys.exit("warm_run_io.py needs strace (apt-get install strace)")
    print(machine())
    images = (args.data_dir / "images").resolve()
    with tempfile.TemporaryDirectory() as work:
        common = ["--data-dir", str(args.data_dir), "--weights", "none", "--workers", "0", "--no-progress",
                  "--cache-dir", f"{work}/cache"]
        subprocess.run(aimonk("train", "--out-dir", f"{work}/cold", *common), check=True, cwd=ROOT,
                       capture_output=True)
        warm = aimonk("train", "--out-dir", f"{work}/warm", "--lr", "1e-4", *common)
        read = traced_reads(warm, Path(work) / "strace.log")
        model = Path(work, "warm", "aimonk_model.pth")
        image_bytes = sum(size for path, size in read.items() if Path(path).is_relative_to(images))
        model_bytes = sum(size for path, size in read.items() if Path(path).name.startswith(model.name) or
                          Path(path).name.startswith(f".{model.name}."))
        cache_bytes = sum(size for path, size in read.items() if path.startswith(f"{work}/cache"))
        size = model.stat().st_size
        print(f"warm aimonk train on {args.data_dir} (default recipe, 20 % held out): read {image_bytes} bytes of "
              f"image files, {model_bytes} bytes of its checkpoint ({model_bytes / size:.2f}x its "
              f"{size / 2**20:.1f} MiB), {cache_bytes / 2**20:.1f} MiB of the feature cache, "
              f"{sum(read.values()) / 2**20:.1f} MiB in all")
        bare = [sys.executable, "-c", "import torch, torchvision"]
        importing_read = sum(traced_reads(bare, Path(work) / "bare.log").values())
        print(f"bytes read in all: warm aimonk train {sum(read.values()) / 2**20:.1f} MiB, python -c 'import torch, "
              f"torchvision' {importing_read / 2**20:.1f} MiB ({sum(read.values()) / importing_read:.2f}x)")
        times: dict[str, list[float]] = {"import": [], "train": []}
        for _ in range(args.rounds):
            times["import"].append(seconds(bare))
            times["train"].append(seconds(warm))
    importing, training = (statistics.median(times[name]) for name in ("import", "train"))
    print(f"whole process, median of {args.rounds}: python -c 'import torch, torchvision' {importing:.2f} s "
          f"({min(times['import']):.2f} to {max(times['import']):.2f}); warm aimonk train {training:.2f} s "
          f"({min(times['train']):.2f} to {max(times['train']):.2f}); ratio {training / importing:.2f}x (target 1.5x)")


if __name__ == "__main__":
    main()
