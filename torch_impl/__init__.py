"""PyTorch twins of the scratch models: same structure, constructor arguments and state_dict keys."""

__version__ = "0.1.0"
