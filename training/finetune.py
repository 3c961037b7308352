# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Fine-tuning with Accelerate.

* SDDA-MAE: joint segmentation + classification (``SDDAMAEForSegmentationAndClassification``) from a
  pre-training checkpoint, encoder+decoder transfer (the paper) or encoder only (``--transfer encoder``);
  loss ``0.5 (Dice + CE) + 0.5 (CE + focal)``; best checkpoint on validation Dice.
* ETMAE: multi-label classification (``ETMAEForImageClassification``, mean-pool head, BCE) with layer-wise
  lr decay (0.55 in the recipe); best checkpoint on validation mAUC. On data with one class per image (e.g.
  ``--dataset imagefolder`` with a folder per class): single-label classification (cross-entropy), best
  checkpoint on validation accuracy.

    accelerate launch -m medmae.training.finetune --preset busi --data_root /data/BUSI --init_from runs/busi_pt
    medmae finetune --preset chestxray14 --data_root /data/NIH --init_from runs/etmae_student

What is trained is the family's task (``training/tasks/etmae.py``, ``training/tasks/sdda_mae.py``, named by the
family table ``training/families.py``); the loop is ``training/loop.py``.
"""

from __future__ import annotations

from typing import Optional, Sequence

from .loop import run_script


def main(argv: Optional[Sequence[str]] = None) -> dict:
    return run_script("finetune", argv)


if __name__ == "__main__":
    main()
