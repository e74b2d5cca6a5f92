"""Training: state, jitted steps, validation, checkpoints, the loop.

    state.py        TrainState, its creation and the best checkpoint's restore
    step.py         the jitted train and eval steps
    validation.py   metrics over a prepared split during training
    checkpoints.py  Orbax checkpoints: save, restore the newest that restores
    optim.py        optimisers, schedules, reduce-on-plateau, early stopping
    writers.py      metrics.jsonl and TensorBoard
    loop.py         one run, from the config to the best checkpoint
"""
