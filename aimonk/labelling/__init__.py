"""The labels themselves, judged by the model the repository trains, cross-fitted so that no label judges itself.

- crossfit.py  OutOfFold: every entry's calibrated out-of-fold probability, and which attributes beat chance
- audit.py     suspected label errors among the known labels (cleanlab's confident learning, per attribute)
- complete.py  NA entries filled where the fills' precision, estimated on the known labels, reaches a level
- next.py      the NA entries to label next, as a CSV and a Label Studio import file
- selftrain.py the `self_train` NA mode: a run's training NA entries completed so, before the fit

Checked where the truth is known (notebook 05, benchmarks/labels_simulation.py):
- corruption.py  labels flipped, hidden and held out on a learnable set; audit and complete scored against the truth
- heldout.py     a head trained on some labels, scored on images it never saw
- curve.py       the labelling curve: mAP after k labels chosen by `next` against k chosen at random
- simulation.py  all of it per seed, and the sentences written from the numbers
"""
