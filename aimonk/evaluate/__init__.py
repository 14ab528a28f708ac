"""The evaluation layer: what a trained checkpoint does on images, how good it is, and comparisons of runs. The
numbers themselves are `aimonk.metrics`'s; how a model's logits become probabilities and decisions is the
checkpoint's `DecisionRule`.

- prediction.py   Predictor: a checkpoint on new image files -> calibrated probabilities and decisions (CSV rows)
- scoring.py      score_checkpoint: a checkpoint's logits on labelled images (its validation images by default), the
                  features from the feature store where present; what evaluate, tune and the explorer judge
- report.py       the evaluation as tables and sentences (compact terminal table, intervals)
- tuning.py       `aimonk tune`: verdicts, temperatures and thresholds into the checkpoint's decision rule, saved with
                  the validation metrics at it (save_rule), and the model card rewritten
- thresholds.py   per-attribute best-F1 thresholds, their F1 estimated out of fold
- calibration.py  reliability, expected calibration error, temperatures kept where they help out of fold
- comparison.py   models compared on the same bootstrap resamples: intervals and paired differences
- experiments.py  a grid of settings x seeds trained on one split, each scored on its validation images by its run
- explain.py      class-activation maps (exact for a linear head on pooled features, else Grad-CAM)
- plots.py        figures of the notebooks
- explorer.py     an extra: the threshold explorer of notebook 03 (ipywidgets): sliders, intervals, flips, Save
- export.py       an extra: the whole model and its decision rule as ONNX, checked against PyTorch (aimonk[onnx])
"""
