"""The labels workflow, an extra the core never imports: the labels themselves, judged by the model the repository
trains, cross-fitted so that no label judges itself.

- crossfit.py  OutOfFold: every entry's calibrated out-of-fold probability, and which attributes beat chance
- audit.py     suspected label errors among the known labels (cleanlab's confident learning, per attribute)
- complete.py  NA entries filled where the fills' precision, estimated on the known labels, reaches a level
- next.py      the NA entries to label next, as a CSV and a Label Studio import file
- selftrain.py the `self_train` NA mode: a run's training NA entries completed so, before the fit (registered into
               NA_MODES when imported; the command line imports it)

Checked where the truth is known by `aimonk.simulation` (notebook 05, benchmarks/labels_simulation.py).
"""
