"""The Label Studio round trip on a real Label Studio: the demo's first 50 NA entries as the tasks `aimonk next
--label-studio` writes (`label_studio_tasks`), imported into a Label Studio project with the labelling config of
docs/cli.md, answered through its API (present or absent; one task "cannot tell", one skipped, one with two
annotators who disagree), exported by Label Studio as JSON, and merged by `aimonk merge`. Checks that the merged
file differs from the original in exactly the entries answered present or absent, and that the original is
unchanged.

    LABEL_STUDIO_BIN=/path/to/venv/bin/label-studio python benchmarks/label_studio_roundtrip.py

Label Studio is big and pins its own Django stack: install it in a venv of its own (`python -m venv ls-venv &&
ls-venv/bin/pip install label-studio`). Without it the script says so in one line and exits 0, as the browser check
does without JupyterLab. It starts Label Studio on a free port in a temporary folder (or uses `--url` with
`--token`), and stops it at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from aimonk.cli import main as aimonk
from aimonk.data.labels import read_labels
from aimonk.labelling.next import LABEL_CONFIG, label_studio_tasks

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "aimonkroundtrip0123456789"


def request(url: str, token: str, method: str = "GET", body: object = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=120) as response:
        return json.loads(response.read() or b"null")


def start(binary: str, folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "LABEL_STUDIO_USERNAME": "aimonk@example.com", "LABEL_STUDIO_PASSWORD": "aimonk-roundtrip",
           "LABEL_STUDIO_USER_TOKEN": TOKEN, "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true"}
    server = subprocess.Popen([binary, "start", "--no-browser", "--port", str(port), "--data-dir", str(folder / "ls")],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            request(f"{url}/api/projects", TOKEN)
            return server, url
        except OSError:
            time.sleep(1)
    server.terminate()
    raise SystemExit("Label Studio did not answer within 300 s")


def annotation(choice: str | None, cancelled: bool = False) -> dict:
    result = [] if choice is None else [{"from_name": "label", "to_name": "image", "type": "choices",
                                         "value": {"choices": [choice]}}]
    return {"result": result, "was_cancelled": cancelled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running Label Studio (default: start one)")
    parser.add_argument("--token", default=TOKEN, help="its API token (legacy token)")
    args = parser.parse_args()
    binary = os.environ.get("LABEL_STUDIO_BIN") or shutil.which("label-studio")
    if args.url is None and not (binary and Path(binary).exists()):
        print("skipped: label-studio is not installed (pip install label-studio in a venv of its own, then "
              "LABEL_STUDIO_BIN=that-venv/bin/label-studio)")
        return
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        server, url = (None, args.url) if args.url else start(binary, work)
        try:
            run(url, args.token if args.url else TOKEN, work)
        finally:
            if server is not None:
                server.terminate()
                server.wait(30)


def run(url: str, token: str, work: Path) -> None:
    labels = work / "labels.txt"
    shutil.copy(ROOT / "labels.txt", labels)
    before = hashlib.sha256(labels.read_bytes()).hexdigest()
    table = read_labels(labels)
    rows, columns = np.nonzero(~table.known)
    chosen = pd.DataFrame({"image": [table.filenames[i] for i in rows[:50]],
                           "attribute": [table.attributes[j] for j in columns[:50]],
                           "probability": 0.5, "priority": 0.25})
    tasks = label_studio_tasks(chosen, ROOT / "images")
    project = request(f"{url}/api/projects", token, "POST",
                      {"title": "aimonk round trip", "label_config": LABEL_CONFIG})
    request(f"{url}/api/projects/{project['id']}/import", token, "POST", tasks)
    imported = request(f"{url}/api/tasks?project={project['id']}&page_size=1000", token)
    imported = imported["tasks"] if isinstance(imported, dict) else imported
    expected = {}
    for number, task in enumerate(sorted(imported, key=lambda task: task["id"])):
        entry = (task["data"]["file"], task["data"]["attribute"])
        answers = ([annotation("cannot tell")] if number == 0 else [annotation(None, cancelled=True)] if number == 1
                   else [annotation("present"), annotation("absent")] if number == 2
                   else [annotation("present" if number % 3 == 0 else "absent")])
        for answer in answers:
            request(f"{url}/api/tasks/{task['id']}/annotations", token, "POST", answer)
        if number > 2:
            expected[entry] = number % 3 == 0
    export = request(f"{url}/api/projects/{project['id']}/export?exportType=JSON", token)
    path = work / "export.json"
    path.write_text(json.dumps(export, indent=1))
    print(f"Label Studio exported {len(export)} tasks; the first: {json.dumps(export[0])[:600]}")
    code = aimonk(["merge", "--label-studio", str(path), "--labels", str(labels)])
    merged = read_labels(work / "labels.merged.txt")
    changed = {(table.filenames[i], table.attributes[j]): bool(merged.targets[i, j])
               for i, j in zip(*np.nonzero(merged.known != table.known), strict=True)}
    same_elsewhere = np.array_equal(merged.targets[table.known], table.targets[table.known])
    after = hashlib.sha256(labels.read_bytes()).hexdigest()
    print(f"merge exit {code}; entries changed {len(changed)}, expected {len(expected)}: "
          f"{'the same' if changed == expected else 'DIFFERENT'}; known labels untouched: {same_elsewhere}; "
          f"original sha256 {before[:16]} before, {after[:16]} after")
    if code or changed != expected or not same_elsewhere or before != after:
        sys.exit(1)


if __name__ == "__main__":
    main()
