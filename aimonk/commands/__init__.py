"""What each command of `aimonk` does, one `run_*` function per command, given its parsed arguments. The command line
imports the one module its command needs, and every library import is inside its command, so a command loads only
what it uses (predict: no matplotlib, no training or labelling code). These functions wire the extras to the core:
the feature cache's stores (`aimonk.cache`) handed to training and scoring, the TensorBoard watcher
(`aimonk.tracking`) to training.

- files.py       files a command writes (`--csv`, `--out`): checked before any work, atomic, under the folder's lock
- training.py    train, runs, cache, demo
- evaluation.py  predict, evaluate, tune, explain, export
- labelling.py   audit, complete, next: the labels judged by out-of-fold probabilities
"""
