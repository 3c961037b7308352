# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Image statistics the configurations share (ships to the Hub as remote code with them: imports nothing).

The image processor keeps its own copy of these numbers: transformers copies a processor's remote code with its
same-folder imports only, and the processor lives in ``modeling/``.
"""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Chest X-ray statistics used by lambert-x/medical_mae (and by its released teachers), on all channels.
CXR_MEAN = (0.5056, 0.5056, 0.5056)
CXR_STD = (0.252, 0.252, 0.252)


def per_channel(value):
    """Image statistics as a list: one number is one value for every channel, as image processors accept it."""
    if value is None:
        return None
    return [float(value)] if isinstance(value, (int, float)) else list(value)
