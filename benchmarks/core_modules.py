"""How many aimonk modules a newcomer meets: those whose code runs during a default `aimonk train` (the reference
recipe on the embedded demo set, `--workers 0`, a cold feature cache), and those `aimonk predict` imports.

A module "runs" when one of its functions is called after the imports (a call made while an aimonk module body runs,
registering an entry say, is import time, not counted). Each command runs in a process of its own.

    python benchmarks/core_modules.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

from common import ROOT, machine

PROBE = '''
import inspect, json, sys
ran = {}

def importing(frame):
    while frame is not None:
        if frame.f_code.co_name == "<module>" and "/aimonk/" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False

def profile(frame, event, arg):
    code = frame.f_code
    if event == "call" and "/aimonk/" in code.co_filename and code.co_flags & inspect.CO_OPTIMIZED \\
            and not importing(frame):
        ran.setdefault(code.co_filename.split("/aimonk/", 1)[1], set()).add(code.co_name)

sys.setprofile(profile)
from aimonk.cli import main
code = main(sys.argv[1:])
sys.setprofile(None)
imported = sorted(name for name in sys.modules if name.startswith("aimonk"))
print(json.dumps({"code": code, "ran": sorted(ran), "imported": imported}))
'''


def measure(*argv: str) -> dict:
    run = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(run.stdout.splitlines()[-1])


def main() -> None:
    print(machine())
    with tempfile.TemporaryDirectory() as work:
        train = measure("train", "--out-dir", f"{work}/model", "--cache-dir", f"{work}/cache", "--workers", "0",
                        "--no-progress")
        predict = measure("predict", str(ROOT / "images" / "image_0.jpg"), "--model", f"{work}/model/aimonk_model.pth")
    for name, result in (("aimonk train (default recipe, --workers 0, cold cache)", train),
                         ("aimonk predict (one image)", predict)):
        assert result["code"] == 0, result
        print(f"{name}: code runs in {len(result['ran'])} modules, {len(result['imported'])} imported")
        print("  ran: " + " ".join(result["ran"]))
    banned = [m for m in predict["imported"] if m.startswith(("aimonk.train", "aimonk.labelling", "aimonk.cache",
                                                              "aimonk.distributed", "aimonk.commands.training",
                                                              "aimonk.commands.labelling"))]
    print(f"  predict imports training, labelling, cache or torchrun modules: {banned or 'none'}")


if __name__ == "__main__":
    main()
