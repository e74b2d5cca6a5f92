"""Inference: a trained model on whole cases.

    windows.py     slices, whole volumes, Gaussian-weighted sliding windows, mirroring
    mc_dropout.py  Monte-Carlo dropout: T draws in one compiled program
    predictor.py   one model or an ensemble -> probabilities on the case's grid
    files.py       NIfTI and PNG outputs of a case
    cases.py       the per-case loop that predict, evaluate and crossval consume
"""
