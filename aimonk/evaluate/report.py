"""The evaluation for reading: tables with intervals, the compact table that fits a terminal, verdicts as sentences.

Formatting only: the numbers come from `aimonk.metrics`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from aimonk.metrics import METRICS, short_verdict


def format_table(results: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """The evaluation table for reading: `0.83 [0.75, 0.90]` per metric, the verdict last."""
    shown = results[["n", "positives", "negatives"]].copy()
    shown["prevalence"] = results["prevalence"].map(f"{{:.{digits}f}}".format)
    shown["threshold"] = results["threshold"].map(f"{{:.{digits}f}}".format)
    for metric in METRICS:
        shown[metric] = [with_interval(row, metric, digits) for _, row in results.iterrows()]
    shown["F1 all-positive"] = results["f1_all_positive"].map(f"{{:.{digits}f}}".format)
    shown["verdict"] = results["verdict"]
    return shown


def with_interval(row: pd.Series, metric: str, digits: int = 2, comma: str = ", ") -> str:
    """`0.83 [0.75, 0.90]`, the value alone without an interval, or `n/a`."""
    if np.isnan(row[metric]):
        return "n/a"
    if np.isnan(row[f"{metric}_low"]):
        return f"{row[metric]:.{digits}f}"
    return f"{row[metric]:.{digits}f} [{row[f'{metric}_low']:.{digits}f}{comma}{row[f'{metric}_high']:.{digits}f}]"


COMPACT = {"roc_auc": "ROC AUC", "ap": "AP", "f1": "F1 at thr"}  # the metrics of the compact table, and their headings
WIDTH = 99  # the compact table's lines are at most this long: a 100-column terminal does not wrap them


def compact_table(results: pd.DataFrame) -> list[str]:
    """The evaluation in lines of at most WIDTH characters: a heading, then one row per attribute.

    Known labels, positives, ROC AUC, AP and F1 (at the threshold shown) with their intervals, the short verdict.
    Attribute names are cut to fit; `format_table` and the results themselves have them whole.
    """
    columns = {"n": [str(n) for n in results["n"]], "pos": [str(n) for n in results["positives"]]}
    for metric, heading in COMPACT.items():
        columns[heading] = [with_interval(row, metric, comma=",") for _, row in results.iterrows()]
    columns["thr"] = [f"{t:.2f}" for t in results["threshold"]]
    widths = {heading: max(len(heading), *map(len, cells)) for heading, cells in columns.items()}
    verdicts = [short_verdict(row) for _, row in results.iterrows()]
    rest = sum(widths.values()) + 2 * (len(widths) + 1) + max(len("verdict"), *map(len, verdicts))
    names, headings = [str(name) for name in results.index], COMPACT.values()
    name_width = max(len("attribute"), min(max(map(len, names)), WIDTH - rest))
    names = [name if len(name) <= name_width else name[: name_width - 1] + "~" for name in names]

    def line(name: str, cells: list[str], verdict: str) -> str:
        numbers = "".join(f"  {cell:{'<' if heading in headings else '>'}{widths[heading]}}"
                          for heading, cell in zip(widths, cells, strict=True))
        return f"{name:<{name_width}}{numbers}  {verdict}".rstrip()

    rows = [line(name, [columns[heading][i] for heading in widths], verdicts[i]) for i, name in enumerate(names)]
    return [line("attribute", list(widths), "verdict"), *rows]


def verdict_sentences(results: pd.DataFrame, weights_origin: str | None = None) -> list[str]:
    """One plain-language line per attribute (verdict, ROC AUC and its interval, AP against chance, counts)."""
    lines = []
    for row in results.itertuples():
        auc = "ROC AUC n/a" if np.isnan(row.roc_auc_low) else (
            f"ROC AUC {row.roc_auc:.2f} [{row.roc_auc_low:.2f}, {row.roc_auc_high:.2f}]")
        lines.append(f"{row.Index}: {row.verdict}. {auc}; AP {row.ap:.2f} against {row.prevalence:.2f} by chance; "
                     f"{row.positives} positives and {row.negatives} negatives known.")
    if weights_origin == "random":
        lines.append("The backbone was randomly initialised (no pretrained weights): expect far better results with "
                     "pretrained weights.")
    return lines


def tuning_table(tuned: pd.DataFrame) -> list[str]:
    """`aimonk tune`'s table: per attribute the verdict, AUC, temperature, threshold, F1 out of fold, in sample and
    at 0.5, and the calibration error before and after."""
    lines = [f"{'attribute':14s} {'verdict':13s} {'AUC':>5s} {'T':>5s} {'threshold':>9s} {'F1 oof':>7s} "
             f"{'F1 in':>6s} {'F1@0.5':>7s} {'ECE':>11s}"]
    for name, row in tuned.iterrows():
        threshold = f"{row.threshold:9.3f}" if row.learnable else "        -"
        lines.append(f"{name[:14]:14s} {row.verdict:13s} {row.roc_auc:5.2f} {row.temperature:5.2f} {threshold} "
                     f"{row.f1_out_of_fold:7.3f} {row.f1_in_sample:6.3f} {row.f1_at_default:7.3f} "
                     f"{row.ece_before:5.3f}>{row.ece_after:5.3f}")
    return lines
