"""seqedge: take trained PyTorch sequence models to phones, boards and desktop GPUs."""

__version__ = "0.1.0"
