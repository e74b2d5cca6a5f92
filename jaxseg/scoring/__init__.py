"""Scoring: numbers from label maps and probabilities (host and device).

    metrics.py      overlap scores, confusion matrices, clu metric collections
    surface.py      surface distances (HD95, ASSD, NSD)
    lesionwise.py   the BraTS 2023 lesion-wise Dice and HD95
    postprocess.py  post-processing of label maps and its thresholds
    uncertainty.py  uncertainty maps, QU-BraTS scores, calibration
    cases.py        the per-case score rows and their summary tables

Nothing here imports a model, a dataset or the training code.
"""
