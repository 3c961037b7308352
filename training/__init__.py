"""Data loaders, transforms, metrics, Accelerate training scripts and the ``medmae`` command line."""
