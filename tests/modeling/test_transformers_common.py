"""transformers' own common model and configuration tests (``ModelTesterMixin``, ``ConfigTester``) on every medmae
model class, as a third-party model repository runs them. The suite comes from the source distribution of the
installed transformers (see ``transformers_suite.py``).

Every skip names the upstream model test that skips the same test for the same reason.
"""

import unittest
from unittest import mock

import torch
from torch import nn
from transformers.models.auto import modeling_auto
from transformers.testing_utils import torch_device
from transformers_suite import load

import medmae  # noqa: F401  (registers the Auto classes)
from medmae import (
    ETMAEBackbone,
    SDDAMAEBackbone,
    ETMAEConfig,
    ETMAEForImageClassification,
    ETMAEForPreTraining,
    ETMAEModel,
    SDDAMAEConfig,
    SDDAMAEForImageClassification,
    SDDAMAEForPreTraining,
    SDDAMAEForSegmentationAndClassification,
    SDDAMAEForSemanticSegmentation,
    SDDAMAEModel,
)

common = load("test_modeling_common")
config_common = load("test_configuration_common")
backbone_common = load("test_backbone_common")
ModelTesterMixin, floats_tensor = common.ModelTesterMixin, common.floats_tensor
ConfigTester = config_common.ConfigTester
BackboneTesterMixin = backbone_common.BackboneTesterMixin


def noise_for(config, batch: int):
    """Fixed masking noise: the common suite compares two forward passes, so masking must not be redrawn."""
    generator = torch.Generator().manual_seed(0)
    if isinstance(config, ETMAEConfig):
        patches = (config.image_size // config.patch_size) ** 2
    else:
        patches = (config.image_size // config.patch_size // config.mask_unit_patches) ** 2
    return torch.rand(batch, patches, generator=generator).to(torch_device)


# The common suite decides which classes are base models (no loss to train) and which get class or mask labels
# from transformers' static class-name tables; medmae's Auto registrations do not reach those tables, so each test
# class adds its model type to them while it runs (and only then: pipelines elsewhere read the same tables).
NAME_TABLES = {
    "AutoModel": modeling_auto.MODEL_MAPPING_NAMES,
    "AutoModelForImageClassification": modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    "AutoModelForSemanticSegmentation": modeling_auto.MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES,
    "AutoModelForPreTraining": modeling_auto.MODEL_FOR_PRETRAINING_MAPPING_NAMES,
    "AutoBackbone": modeling_auto.MODEL_FOR_BACKBONE_MAPPING_NAMES,
}


class MedMAECommonTests(ModelTesterMixin):
    """What both families share: image inputs, no token embeddings to resize, masking noise fixed per test."""

    test_resize_embeddings = False  # as ViT, Swin, ViTMAE: no token embeddings
    config_class = None

    @classmethod
    def setUpClass(cls):
        patches = []
        for auto_name, config_cls, model_cls in medmae.AUTO_REGISTRY:
            if config_cls is cls.config_class and model_cls in cls.all_model_classes:
                patches.append(mock.patch.dict(NAME_TABLES[auto_name], {config_cls.model_type: model_cls.__name__}))
        cls._name_patches = patches
        for patch in patches:
            patch.start()

    @classmethod
    def tearDownClass(cls):
        for patch in cls._name_patches:
            patch.stop()

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        """Pre-training classes get fixed ``noise`` (as upstream ViTMAE's test does)."""
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        if model_class.__name__.endswith("ForPreTraining") and "noise" not in inputs_dict:
            inputs_dict["noise"] = noise_for(self.model_tester.get_config(), self.model_tester.batch_size)
        return inputs_dict

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_model_get_set_embeddings(self):
        """Vision models' version (ViTModelTest, SwinModelTest): the input embedding is a module, no output one."""
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIsInstance(model.get_input_embeddings(), nn.Module)
            self.assertIsNone(model.get_output_embeddings())


class ETMAEModelTester:
    """Tiny ETMAE (two blocks, 32 px) and its inputs, the upstream ``*ModelTester`` pattern."""

    batch_size = 2
    is_training = True
    image_size, patch_size, num_channels = 32, 8, 3
    hidden_size, num_hidden_layers, num_attention_heads = 32, 2, 2

    def __init__(self, parent, masked: bool):
        self.parent = parent
        num_patches = (self.image_size // self.patch_size) ** 2
        config = self.get_config()
        kept = int(num_patches * (1 - config.mask_ratio)) if masked else num_patches
        self.seq_length = kept + 1  # CLS first

    def get_config(self):
        return ETMAEConfig.from_preset(
            "tiny_test", image_size=self.image_size, patch_size=self.patch_size, num_channels=self.num_channels,
            hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, student_align_layer=None, teacher_align_layer=None,
            teacher_hidden_size=None, num_labels=3, out_features=["stage1", "stage2"])

    def prepare_config_and_inputs_for_common(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        return self.get_config(), {"pixel_values": pixel_values}


class ETMAEModelTest(MedMAECommonTests, unittest.TestCase):
    """The encoder and the classifier: whole images, every patch token."""

    config_class = ETMAEConfig
    all_model_classes = (ETMAEModel, ETMAEForImageClassification)
    pipeline_model_mapping = {"image-feature-extraction": ETMAEModel, "image-classification": ETMAEForImageClassification}

    def setUp(self):
        self.model_tester = ETMAEModelTester(self, masked=False)
        self.config_tester = ConfigTester(self, config_class=ETMAEConfig, has_text_modality=False, hidden_size=36,
                                          num_hidden_layers=2, num_attention_heads=2, intermediate_size=8)


class ETMAEForPreTrainingTest(MedMAECommonTests, unittest.TestCase):
    """Pre-training: the encoder sees the kept patches only (upstream ViTMAE's tester uses the same length)."""

    config_class = ETMAEConfig
    all_model_classes = (ETMAEForPreTraining,)

    def setUp(self):
        self.model_tester = ETMAEModelTester(self, masked=True)
        self.config_tester = ConfigTester(self, config_class=ETMAEConfig, has_text_modality=False, hidden_size=36,
                                          num_hidden_layers=2, num_attention_heads=2, intermediate_size=8)


class SDDAMAEModelTester:
    """Tiny SDDA-MAE (three stages of one block, 64 px) and its inputs."""

    batch_size = 2
    is_training = True
    image_size, num_channels = 64, 3
    hidden_sizes = [16, 32, 64]

    def __init__(self, parent):
        self.parent = parent

    def get_config(self):
        return SDDAMAEConfig.from_preset("tiny_test", image_size=self.image_size, num_channels=self.num_channels,
                                         hidden_sizes=self.hidden_sizes, num_cls_labels=3, num_labels=3,
                                         out_features=["stage1", "stage2", "stage3"])

    def prepare_config_and_inputs_for_common(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        return self.get_config(), {"pixel_values": pixel_values}


class SDDAMAEModelTest(MedMAECommonTests, unittest.TestCase):
    """Every SDDA-MAE class. Its efficient and channel attentions form no token-by-token matrix, so it has no
    attention maps to return (``has_attentions = False`` as ConvNext, Swiftformer, EfficientFormer)."""

    config_class = SDDAMAEConfig
    all_model_classes = (SDDAMAEModel, SDDAMAEForPreTraining, SDDAMAEForSemanticSegmentation,
                         SDDAMAEForImageClassification, SDDAMAEForSegmentationAndClassification)
    pipeline_model_mapping = {"image-feature-extraction": SDDAMAEModel,
                              "image-classification": SDDAMAEForImageClassification,
                              "image-segmentation": SDDAMAEForSemanticSegmentation}
    has_attentions = False

    def setUp(self):
        self.model_tester = SDDAMAEModelTester(self)
        self.config_tester = ConfigTester(self, config_class=SDDAMAEConfig, has_text_modality=False,
                                          common_properties=["num_channels", "hidden_sizes", "image_size"],
                                          hidden_sizes=[8, 16, 32], image_size=32)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        """The joint model has no Auto class, so no table gives it labels: a mask and a diagnosis per image."""
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        if return_labels and model_class is SDDAMAEForSegmentationAndClassification:
            batch, _, height, width = inputs_dict["pixel_values"].shape
            inputs_dict["labels"] = torch.zeros(batch, height, width, dtype=torch.long, device=torch_device)
            inputs_dict["class_labels"] = torch.zeros(batch, dtype=torch.long, device=torch_device)
        return inputs_dict

    def test_hidden_states_output(self):
        """One hidden state per encoder stage, no embedding output (SegformerModelTest's version of this test, for
        the same hierarchical layout): stage s holds [B, (H / 4 / 2^s) * (W / 4 / 2^s), hidden_sizes[s]] tokens."""
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        side = self.model_tester.image_size // config.patch_size
        expected = [(self.model_tester.batch_size, (side // 2**s) ** 2, width)
                    for s, width in enumerate(self.model_tester.hidden_sizes)]
        for model_class in self.all_model_classes:
            for how in ("argument", "config"):
                config.output_hidden_states = how == "config"
                model = model_class(config).to(torch_device).eval()
                inputs = self._prepare_for_class(inputs_dict, model_class)
                with torch.no_grad():
                    outputs = model(**inputs, output_hidden_states=True) if how == "argument" else model(**inputs)
                self.assertEqual([tuple(h.shape) for h in outputs.hidden_states], expected, f"{model_class} ({how})")
            config.output_hidden_states = False



class ETMAEBackboneTest(BackboneTesterMixin, unittest.TestCase):
    """``AutoBackbone``: transformers' backbone tests (backbones run these alone upstream, e.g. Dinov2BackboneTest)."""

    config_class = ETMAEConfig
    all_model_classes = (ETMAEBackbone,)

    def setUp(self):
        self.model_tester = ETMAEModelTester(self, masked=False)


class SDDAMAEBackboneTest(BackboneTesterMixin, unittest.TestCase):
    config_class = SDDAMAEConfig
    all_model_classes = (SDDAMAEBackbone,)
    has_attentions = False

    def setUp(self):
        self.model_tester = SDDAMAEModelTester(self)
