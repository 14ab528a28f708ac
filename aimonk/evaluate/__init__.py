"""The evaluation layer: what a trained checkpoint does on images, how good it is, and comparisons of runs.

- prediction.py   Predictor: checkpoint -> calibrated probabilities and decisions (and CSV rows) for image files
- metrics.py      Scores; pure metrics with bootstrap intervals, baselines and verdicts
- report.py       the evaluation as tables and sentences (compact terminal table, intervals)
- tuning.py       a checkpoint's scores on its validation images; verdicts, temperatures, thresholds written back
                  with the validation metrics at them (save_thresholds), and the model card rewritten
- thresholds.py   per-attribute best-F1 thresholds, their F1 estimated out of fold
- explorer.py     the threshold explorer of notebook 03 (ipywidgets): sliders, intervals, flipping images, Save
- calibration.py  reliability, expected calibration error, temperatures kept where they help out of fold
- comparison.py   models compared on the same bootstrap resamples: intervals and paired differences
- experiments.py  a grid of settings x seeds trained on one split and scored as predict would
- explain.py      class-activation maps (exact for a linear head on pooled features, else Grad-CAM)
- export.py       the whole model as ONNX, checked against PyTorch (optional extra aimonk[onnx])
- plots.py        figures of the notebooks
"""
