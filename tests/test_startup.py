"""The start-up budget of `aimonk predict`: nothing it imports pulls in the heavy analysis or ONNX libraries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import write_dataset

from aimonk.cli import main

HEAVY = ("matplotlib", "sklearn", "pandas", "iterstrat", "scipy", "seaborn", "onnx", "onnxruntime", "onnxscript")


def test_predict_imports_no_plotting_or_analysis_library(tmp_path: Path):
    data = write_dataset(tmp_path / "data", [f"img_{i}.jpg {i % 2} 1" for i in range(6)], size=32)
    out = tmp_path / "model"
    assert main(["train", "--data-dir", str(data), "--out-dir", str(out), "--weights", "none", "--image-size", "32",
                 "--epochs", "1", "--workers", "0", "--no-progress", "--val-fraction", "0"]) == 0
    image, model = str(data / "images" / "img_0.jpg"), str(out / "aimonk_model.pth")
    script = (
        "import sys\n"
        "from aimonk.cli import main\n"
        f"code = main(['predict', {image!r}, '--model', {model!r}])\n"
        f"print(sorted({{name.split('.')[0] for name in sys.modules}} & set({HEAVY!r})))\n"
        "sys.exit(code)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "[]", run.stdout
