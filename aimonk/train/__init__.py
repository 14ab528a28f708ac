"""The training layer: one run from a TrainConfig to the files in the output folder. Importing it registers every
method a run can use (its solvers, and the model layer's extra losses and NA modes).

- training.py  train(): the run read top to bottom; TrainingData (usable images, their features, the split; refused
               where nothing is known to learn from, or a part of the split would be empty); --init-from; the
               validation images scored after each epoch and at the end, --patience's best epoch; the Watcher seam;
               what it writes
- adam.py      the `adam` solver (the reference): the minibatch loop, its learning-rate schedules and parameter
               groups, its resumable state (exact or refused), Ctrl-C and SIGTERM held around updates
- lbfgs.py     the `lbfgs` solver: the head fitted full-batch to convergence on frozen features
"""

from aimonk.model import losses  # noqa: F401  (its LOSSES and NA_MODES entries)
from aimonk.train import adam, lbfgs  # noqa: F401  (their solvers, into SOLVERS)
