"""The data layer: labelled images, before any model.

- labels.py    labels.txt -> LabelTable (targets, known mask); stratified splits and folds of the images
- images.py    finding image files, decoding any format to RGB, Preprocessing, ImageDataset, batches of images
- sampling.py  SAMPLERS: visits per epoch (uniform, repeat_factor); epoch plans; batches of cached features
- demo.py      the embedded synthetic demo dataset (`aimonk demo`)
- eda.py       label and image statistics for notebook 01
"""
