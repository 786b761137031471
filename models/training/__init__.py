"""Training, export and evaluation of the mask classifier (needs the ``train`` extra for training)."""
