"""The data layer: labelled images, before any model.

- labels.py    labels.txt -> LabelTable (targets, known mask); stratified splits and folds of the images
- images.py    finding image files, decoding any format to RGB, Preprocessing (RESIZES), ImageDataset, batches of
               images; SAMPLERS (visits per epoch: uniform, repeat_factor) and the epoch plans of (image, flip)
- demo.py      the embedded synthetic demo dataset (`aimonk demo`)
- eda.py       label and image statistics for notebook 01
"""
