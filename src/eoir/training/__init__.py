"""Training and evaluation on datasets.

- :mod:`eoir.training.config`: the config (defaults, shipped recipes in ``recipes/``, user
  files, overrides), each choice checked against its option's table;
- :mod:`eoir.training.data`: the pairs of each step (pairing modes) and the training Dataset;
- :mod:`eoir.training.train`: the training loop (checkpoints, exact resume, logs, DDP);
- :mod:`eoir.training.evaluate`: scoring a model on a dataset split (CSVs, Learn2Reg fields).
"""
