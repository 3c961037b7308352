"""medmae: Hugging Face-native masked autoencoders for data-efficient medical image pre-training.

``import medmae`` registers every model, configuration and the image processor with the transformers
Auto classes, so ``AutoModel.from_pretrained(folder_or_repo)`` works for medmae checkpoints.
"""

__version__ = "0.1.0"

import os as _os
import sys as _sys


def _script_help_only(args) -> bool:
    """``medmae pretrain|finetune|evaluate ... --help``: ``medmae.training.cli`` prints the script's arguments from
    ``training/args.py`` (with ``argv.py``, ``presets.py``, ``families.py``) alone, without the models (torch and
    transformers take seconds to import)."""
    return list(args[:1]) in (["pretrain"], ["finetune"], ["evaluate"]) and ("-h" in args or "--help" in args)


# The console script `medmae pretrain --help` answers in a fraction of a second: nothing below is needed for it.
# Any other use of the package (including every other `medmae` command) imports and registers everything.
_HELP_ONLY = _os.path.basename(_sys.argv[0]) == "medmae" and _script_help_only(_sys.argv[1:])

if not _HELP_ONLY:
    import transformers as _transformers

    from .configuration import *  # noqa: F401,F403
    from .configuration import __all__ as _configuration_all
    from .modeling import *  # noqa: F401,F403
    from .modeling import AUTO_REGISTRY, MedMAEImageProcessor
    from .modeling import __all__ as _modeling_all


def _register() -> None:
    """Register medmae classes with the Auto classes (idempotent)."""
    from transformers.models.auto import modeling_auto

    for auto_name, config_cls, model_cls in AUTO_REGISTRY:
        _transformers.AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
        getattr(_transformers, auto_name).register(config_cls, model_cls, exist_ok=True)
        if auto_name == "AutoModelForSemanticSegmentation":
            # The image-segmentation pipeline checks this static table, not registrations (it only logs otherwise).
            modeling_auto.MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES[config_cls.model_type] = model_cls.__name__
    for config_cls in {c for _, c, _ in AUTO_REGISTRY}:
        _transformers.AutoImageProcessor.register(
            config_cls, image_processor_classes={"torchvision": MedMAEImageProcessor}, exist_ok=True
        )
    MedMAEImageProcessor.register_for_auto_class("AutoImageProcessor")


if not _HELP_ONLY:
    _register()
    __all__ = ["__version__", *_configuration_all, *_modeling_all]
