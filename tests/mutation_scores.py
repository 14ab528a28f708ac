"""Not a test: the mutation score per module of the last `make mutants`, read from mutmut's results in mutants/.

    python tests/mutation_scores.py

Score = (killed + timeout) / (mutants tested), where mutants tested leaves out the skipped and, after an interrupted
run, those not checked yet; `survived` and `no tests` are the mutants no test noticed.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

COLUMNS = ("killed", "timeout", "survived", "no tests", "segfault", "suspicious", "skipped", "not checked")


def main() -> None:
    metas = sorted(Path("mutants").rglob("*.py.meta"))
    if not metas:
        raise SystemExit("no results in mutants/: run `make mutants` first")
    print(f"{'module':24} {'mutants':>7} " + " ".join(f"{column:>11}" for column in COLUMNS) + "   score")
    total: Counter[str] = Counter()
    for meta in metas:
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if not codes:
            continue
        counts = Counter(status_by_exit_code[code] for code in codes.values())
        total.update(counts)
        print(_row(str(meta.relative_to("mutants"))[: -len(".meta")], counts))
    print(_row("all", total))


def _row(name: str, counts: Counter[str]) -> str:
    mutants = sum(counts.values())
    tested = mutants - counts["skipped"] - counts["not checked"]
    score = (counts["killed"] + counts["timeout"]) / tested if tested else float("nan")
    return f"{name:24} {mutants:7} " + " ".join(f"{counts[column]:11}" for column in COLUMNS) + f"   {score:.1%}"


if __name__ == "__main__":
    main()
