"""ETMAE and SDDA-MAE encoders as backbones: AutoBackbone under transformers' UperNet, timm-style forward_intermediates."""

import pytest
import torch
from transformers import AutoBackbone, UperNetConfig, UperNetForSemanticSegmentation

import medmae  # noqa: F401  (registers AutoBackbone)
from medmae import (
    ETMAEBackbone,
    ETMAEConfig,
    ETMAEForPreTraining,
    ETMAEModel,
    SDDAMAEBackbone,
    SDDAMAEConfig,
    SDDAMAEForPreTraining,
    SDDAMAEModel,
)

ETMAE_STAGES = ["stage1", "stage2", "stage3", "stage4"]
SDDA_STAGES = ["stage1", "stage2", "stage3"]


def images(config, batch=2):
    return torch.randn(batch, config.num_channels, config.image_size, config.image_size,
                       generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "config, expected",
    [
        (ETMAEConfig.from_preset("tiny_test", out_features=ETMAE_STAGES), [(2, 32, 4, 4)] * 4),
        (SDDAMAEConfig.from_preset("tiny_test", out_features=["stem", *SDDA_STAGES]),
         [(2, 16, 16, 16), (2, 16, 16, 16), (2, 32, 8, 8), (2, 64, 4, 4)]),
    ],
    ids=["etmae", "sdda_mae"],
)
def test_auto_backbone_feature_maps(config, expected):
    backbone = AutoBackbone.from_config(config).eval()
    assert type(backbone) in (ETMAEBackbone, SDDAMAEBackbone)
    maps = backbone(images(config)).feature_maps
    assert [tuple(m.shape) for m in maps] == expected
    assert backbone.channels == [shape[1] for shape in expected]


@pytest.mark.parametrize(
    "config",
    [ETMAEConfig.from_preset("tiny_test", out_features=ETMAE_STAGES),
     SDDAMAEConfig.from_preset("tiny_test", out_features=SDDA_STAGES)],
    ids=["etmae", "sdda_mae"],
)
def test_upernet_forward_backward_and_reload(config, tmp_path):
    """transformers' UperNet over each encoder: a segmentation loss whose gradient reaches the patch embedding, and
    the whole model saved and reloaded to identical logits."""
    torch.manual_seed(0)
    channels = AutoBackbone.from_config(config).channels
    model = UperNetForSemanticSegmentation(UperNetConfig(
        backbone_config=config, hidden_size=16, num_labels=3, auxiliary_in_channels=channels[2],  # UperNet's auxiliary head reads feature 2
        auxiliary_channels=8))
    x = images(config)
    labels = torch.randint(0, 3, (2, config.image_size, config.image_size), generator=torch.Generator().manual_seed(1))
    out = model(pixel_values=x, labels=labels)
    assert out.logits.shape == (2, 3, config.image_size, config.image_size)
    out.loss.backward()
    assert model.backbone.get_input_embeddings().proj.weight.grad.abs().sum() > 0
    model.save_pretrained(tmp_path)
    reloaded = UperNetForSemanticSegmentation.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded(pixel_values=x).logits, model.eval()(pixel_values=x).logits)


@pytest.mark.parametrize(
    "pretraining, backbone_cls, config, prefix",
    [(ETMAEForPreTraining, ETMAEBackbone, ETMAEConfig.from_preset("tiny_test", teacher_hidden_size=None), "etmae."),
     (SDDAMAEForPreTraining, SDDAMAEBackbone, SDDAMAEConfig.from_preset("tiny_test"), "sdda_mae.")],
    ids=["etmae", "sdda_mae"],
)
def test_backbone_loads_the_encoder_of_a_pretraining_checkpoint(pretraining, backbone_cls, config, prefix, tmp_path,
                                                                capsys):
    source = pretraining(config)
    source.save_pretrained(tmp_path)
    backbone, info = backbone_cls.from_pretrained(tmp_path, output_loading_info=True)
    expected = {k: v for k, v in source.state_dict().items() if k.startswith(prefix) and "mask_token" not in k}
    loaded = backbone.state_dict()
    assert set(loaded) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_etmae_forward_intermediates_match_hidden_states():
    config = ETMAEConfig.from_preset("tiny_test")
    model = ETMAEModel(config).eval()
    x = images(config)
    hidden = model(x, output_hidden_states=True).hidden_states
    final, maps = model.forward_intermediates(x)
    assert len(maps) == 4 and maps[0].shape == (2, 32, 4, 4)
    for block, feature_map in enumerate(maps):
        torch.testing.assert_close(feature_map, model.token_map(hidden[block + 1], 32, 32))
    torch.testing.assert_close(final, model(x).last_hidden_state)
    last_two = model.forward_intermediates(x, indices=2, output_fmt="NLC", intermediates_only=True)
    torch.testing.assert_close(last_two[1], hidden[4][:, 1:])
    normed = model.forward_intermediates(x, indices=[-1], norm=True, intermediates_only=True)
    torch.testing.assert_close(normed[0], model.token_map(model(x).last_hidden_state, 32, 32))


def test_sdda_forward_intermediates_match_hidden_states():
    config = SDDAMAEConfig.from_preset("tiny_test")
    model = SDDAMAEModel(config).eval()
    x = images(config)
    hidden = model(x, output_hidden_states=True).hidden_states
    final, maps = model.forward_intermediates(x)
    assert [tuple(m.shape) for m in maps] == [(2, 16, 16, 16), (2, 32, 8, 8), (2, 64, 4, 4)]
    torch.testing.assert_close(maps[1].flatten(2).transpose(1, 2), hidden[1])
    torch.testing.assert_close(final, hidden[-1])
    assert len(model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)) == 2


@pytest.mark.parametrize("model_cls, config", [(ETMAEModel, ETMAEConfig.from_preset("tiny_test")),
                                               (SDDAMAEModel, SDDAMAEConfig.from_preset("tiny_test"))],
                         ids=["etmae", "sdda_mae"])
def test_forward_intermediates_refuse_bad_indices_and_formats(model_cls, config):
    model = model_cls(config).eval()
    x = images(config)
    with pytest.raises(ValueError, match="outside"):
        model.forward_intermediates(x, indices=[7])
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")


def test_backbone_stage_names_and_out_features_are_validated():
    assert ETMAEConfig.from_preset("tiny_test").stage_names == ["stem", "stage1", "stage2", "stage3", "stage4"]
    with pytest.raises(ValueError, match="out_features must be a subset of stage_names"):
        SDDAMAEConfig.from_preset("tiny_test", out_features=["stage4"])
