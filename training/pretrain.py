# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Pre-training with Accelerate: SDDA-MAE (masked MSE + self-distillation), ETMAE teacher MAE pre-training,
and ETMAE student distillation from a teacher given as a path.

    accelerate launch -m medmae.training.pretrain --preset busi --data_root /data/BUSI --output_dir runs/busi_pt
    medmae pretrain --family etmae --teacher runs/teacher --dataset synthetic_cxr --output_dir runs/student
    ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 -m medmae.training.pretrain --preset demo ...

Arguments: ``medmae pretrain --help`` (``training/args.py``); recipes: ``--preset`` (``--list_presets``;
``training/presets.py``).

What is trained is the family's task (``training/tasks/etmae.py``, ``training/tasks/sdda_mae.py``, named by the
family table ``training/families.py``); the loop is ``training/loop.py``.
"""

from __future__ import annotations

from typing import Optional, Sequence

from .loop import run_script


def main(argv: Optional[Sequence[str]] = None) -> dict:
    return run_script("pretrain", argv)


if __name__ == "__main__":
    main()
