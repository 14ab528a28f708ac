"""What each command of `aimonk` does, one `run_*` function per command, given its parsed arguments. Every library
import is inside its command, so a command loads only what it uses (predict: no matplotlib, no training code).

- files.py       files a command writes (`--csv`, `--out`): checked before any work, atomic, under the folder's lock
- training.py    train, cache, demo
- evaluation.py  predict, evaluate, tune, explain, export
- labelling.py   audit, complete, next: the labels judged by out-of-fold probabilities
"""

from aimonk.commands.evaluation import run_evaluate, run_explain, run_export, run_predict, run_tune
from aimonk.commands.labelling import RECIPE as LABELLING_RECIPE
from aimonk.commands.labelling import run_audit, run_complete, run_next
from aimonk.commands.training import run_cache, run_demo, run_train

__all__ = ["LABELLING_RECIPE", "run_audit", "run_cache", "run_complete", "run_demo", "run_evaluate", "run_explain",
           "run_export", "run_next", "run_predict", "run_train", "run_tune"]
