# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Training tasks: what a run trains, per family (the table in ``training.families`` names the module).

* ``base``: :class:`~medmae.training.tasks.base.TrainingTask`, what every task has, and ``model_config``;
* ``pretraining``: MAE pre-training for every family (image data, validation losses, reconstructions);
* ``finetuning``: fine-tuning for every family (labelled splits, columns, predictions, metrics tables);
* ``etmae``: ETMAE's teacher / distillation pre-training and classification fine-tuning;
* ``sdda_mae``: SDDA-MAE's self-distilled pre-training and joint segmentation + classification fine-tuning.
"""
