"""medmae models, image processor and weight converters.

``AUTO_REGISTRY`` is the one table of (Auto class name, config class, model class) that drives both
the registration with the transformers Auto classes at ``import medmae`` and the ``auto_map`` written
into every saved folder for remote-code loading.
"""

from ..configuration import ETMAEConfig, SDDAMAEConfig
from .image_processing_medmae import MedMAEImageProcessor
from .modeling_etmae import (
    ETMAEBackbone,
    ETMAEForImageClassification,
    ETMAEForPreTraining,
    ETMAEModel,
    ETMAEPreTrainedModel,
)
from .modeling_sdda_mae import (
    SDDAMAEBackbone,
    SDDAMAEForImageClassification,
    SDDAMAEForPreTraining,
    SDDAMAEForSegmentationAndClassification,
    SDDAMAEForSemanticSegmentation,
    SDDAMAEModel,
    SDDAMAEPreTrainedModel,
)

AUTO_REGISTRY = [
    ("AutoModel", ETMAEConfig, ETMAEModel),
    ("AutoModelForPreTraining", ETMAEConfig, ETMAEForPreTraining),
    ("AutoModelForImageClassification", ETMAEConfig, ETMAEForImageClassification),
    ("AutoBackbone", ETMAEConfig, ETMAEBackbone),
    ("AutoModel", SDDAMAEConfig, SDDAMAEModel),
    ("AutoModelForPreTraining", SDDAMAEConfig, SDDAMAEForPreTraining),
    ("AutoModelForSemanticSegmentation", SDDAMAEConfig, SDDAMAEForSemanticSegmentation),
    ("AutoModelForImageClassification", SDDAMAEConfig, SDDAMAEForImageClassification),
    ("AutoBackbone", SDDAMAEConfig, SDDAMAEBackbone),
]

__all__ = [
    "AUTO_REGISTRY",
    "MedMAEImageProcessor",
    "ETMAEModel",
    "ETMAEPreTrainedModel",
    "ETMAEForPreTraining",
    "ETMAEForImageClassification",
    "ETMAEBackbone",
    "SDDAMAEModel",
    "SDDAMAEPreTrainedModel",
    "SDDAMAEForPreTraining",
    "SDDAMAEForSemanticSegmentation",
    "SDDAMAEForImageClassification",
    "SDDAMAEForSegmentationAndClassification",
    "SDDAMAEBackbone",
]
