"""The training layer: one run from a TrainConfig to the files in the output folder.

- training.py    train(): the recipe read top to bottom, and the `adam` solver's minibatch loop
- prepare.py     TrainingData: usable images, their features (shared out under torchrun), the split; refused where
                 nothing is known to learn from, or a part of the split would be empty
- lbfgs.py       the `lbfgs` solver: the head fitted full-batch to convergence on frozen features
- optim.py       the optimizer's parameter groups and LR_SCHEDULES
- resume.py      the resumable state (exact or refused: settings, training images, labels' digest), random-number
                 states, Ctrl-C and SIGTERM held around updates
- divergence.py  weights that are not finite fail the run, and are never saved
- outputs.py     the loss history and curve
"""
