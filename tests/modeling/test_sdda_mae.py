"""SDDA-MAE model behaviour: configuration, masking numbers, losses, transfer, bad inputs (tiny 64 px preset)."""

import json
import math

import pytest
import torch

from medmae import (
    SDDAMAEConfig,
    SDDAMAEForImageClassification,
    SDDAMAEForPreTraining,
    SDDAMAEForSegmentationAndClassification,
    SDDAMAEForSemanticSegmentation,
    SDDAMAEModel,
)
from medmae.modeling.modeling_sdda_mae import dice_loss, segmentation_loss, self_distillation_diagnostics
from medmae.modeling.sdda_layers import window_masking

# Default preset, 512 px: the method notes' 26.4M (section 5.2) minus DAE-Former's 90,112 dead MixFFN norms and
# the 512 biases the frozen teacher head does not have (sd_mode="frozen_teacher"; 512 of them frozen x 128 inputs).
DEFAULT_PRETRAINING_PARAMS = 26_307_456
DEFAULT_JOINT_PARAMS = 26_448_148  # no mask token in fine-tuning (128 parameters)
TINY_PRETRAINING_PARAMS = 204_250


def tiny(**overrides):
    return SDDAMAEConfig.from_preset("tiny_test", **overrides)


def pretraining_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return SDDAMAEForPreTraining(tiny(**overrides)).eval()


def images(batch=2, size=64, seed=0):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def noise(batch=2, units=16, seed=1):
    return torch.rand(batch, units, generator=torch.Generator().manual_seed(seed))


def count(model):
    return sum(p.numel() for p in model.parameters())


# ---- configuration ---------------------------------------------------------------------------------
def test_presets_labels_and_json_round_trip():
    config = tiny(cls_id2label={0: "normal", 1: "benign", 2: "malignant"})
    assert (config.image_size, config.hidden_sizes, config.encoder_depths, config.decoder_depths) == (
        64, [16, 32, 64], [1, 1, 1], [1, 1])
    assert config.id2label == {0: "background", 1: "lesion"} and config.num_labels == 2
    assert config.num_cls_labels == 3 and config.cls_label2id["malignant"] == 2
    reloaded = SDDAMAEConfig.from_dict(json.loads(config.to_json_string()))
    assert reloaded.cls_id2label == {0: "normal", 1: "benign", 2: "malignant"}  # int keys restored
    assert reloaded.id2label == config.id2label
    default = SDDAMAEConfig()
    assert (default.image_size, default.patch_size, default.mask_ratio, default.mask_unit_patches) == (512, 4, 0.6, 4)
    assert (default.seg_loss_weight, default.cls_loss_weight, default.focal_gamma) == (0.5, 0.5, 2.0)
    assert default.skip_mode == "full_scale" and default.sd_mode == "frozen_teacher"
    assert default.block_order == "spatial_first" and default.sd_tokens == "visible"
    assert default.sd_temperatures == (1.0, 1.0) and default.sd_weight == 1.0
    legacy = SDDAMAEConfig.from_dict({**default.to_dict(), "sd_mode": "frozen_teacher", "sd_detach_teacher": True})
    assert legacy.sd_mode == "detached" and not hasattr(legacy, "sd_detach_teacher")  # medmae 0.1 configs


@pytest.mark.parametrize("overrides, message", [
    (dict(image_size=72), "stage/mask geometry"),
    (dict(channel_attention_heads=3), "not divisible by channel_attention_heads"),
    (dict(channel_attention_heads=[2, 2]), "channel_attention_heads has 2 entries"),
    (dict(decoder_depths=[1]), "decoder_depths must have 2 entries"),
    (dict(encoder_depths=[1, 1]), "encoder_depths has 2 entries"),
    (dict(mask_ratio=1.0), "mask_ratio"),
    (dict(skip_mode="dense"), "skip_mode must be one of"),
])
def test_impossible_configurations_raise(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny(**overrides)


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError, match="sdda_mae_512.*tiny_test"):
        SDDAMAEConfig.from_preset("huge")


def test_parameter_counts():
    with torch.device("meta"):
        pretraining = SDDAMAEForPreTraining(SDDAMAEConfig.from_preset("sdda_mae_512"))
        joint = SDDAMAEForSegmentationAndClassification(SDDAMAEConfig.from_preset("sdda_mae_512"))
    assert count(pretraining) == DEFAULT_PRETRAINING_PARAMS
    assert abs(count(pretraining) - 26.4e6) / 26.4e6 < 0.01
    assert count(pretraining.sdda_mae) == 19_344_432 and count(pretraining.decoder) == 6_628_640
    assert count(joint) == DEFAULT_JOINT_PARAMS
    assert count(SDDAMAEForPreTraining(tiny())) == TINY_PRETRAINING_PARAMS


# ---- masking ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid, ratio", [((16, 16), 0.6), ((128, 128), 0.6), ((16, 16), 0.75)])
def test_window_masking_numbers(grid, ratio):
    batch, unit = 3, 4
    units = (grid[0] // unit) * (grid[1] // unit)
    x = torch.randn(batch, grid[0] * grid[1], 8)
    token = torch.randn(1, 1, 8)
    masked_x, mask, unit_mask = window_masking(x, grid, token, ratio, unit, noise(batch, units))
    expected = 1 - int(units * (1 - ratio)) / units
    assert torch.allclose(mask.mean(dim=1), torch.full((batch,), expected))
    assert torch.allclose(unit_mask.mean(dim=1), torch.full((batch,), expected))
    # every masked unit covers exactly its 4x4 patch block
    blocks = mask.reshape(batch, grid[0] // unit, unit, grid[1] // unit, unit)
    expanded = unit_mask.reshape(batch, grid[0] // unit, 1, grid[1] // unit, 1).expand_as(blocks)
    assert torch.equal(blocks, expanded)
    # masked tokens are the shared mask token, visible tokens are untouched
    is_masked = mask.bool()
    assert torch.equal(masked_x[is_masked], token.reshape(1, 8).expand(int(is_masked.sum()), 8))
    assert torch.equal(masked_x[~is_masked], x[~is_masked])
    # same noise -> same mask; the smallest noise values are kept
    again = window_masking(x, grid, token, ratio, unit, noise(batch, units))[1]
    assert torch.equal(again, mask)
    keep = torch.argsort(noise(batch, units), dim=1)[:, : int(units * (1 - ratio))]
    assert not unit_mask.gather(1, keep).any()


def test_model_masks_only_with_noise_or_apply_mask():
    model = SDDAMAEModel(tiny(), use_mask_token=True).eval()
    out = model(images())
    assert out.mask is None and out.unit_mask is None
    out = model(images(), noise=noise())
    assert out.mask.shape == (2, 256) and out.unit_mask.shape == (2, 16)
    assert model(images(), apply_mask=True).mask.shape == (2, 256)
    with pytest.raises(ValueError, match="noise must have shape"):
        model(images(), noise=torch.rand(2, 15))


# ---- losses -----------------------------------------------------------------------------------------
def test_reconstruction_loss_sees_only_masked_pixels():
    model = pretraining_model()
    x, n = images(), noise()
    with torch.no_grad():
        base = model(x, noise=n)
        pixel_mask = model.unpatchify(base.mask[..., None].expand(-1, -1, 48), (16, 16)).bool()
        # changing masked pixels: the model cannot see them (mask token), but the target changes
        changed_masked = model(torch.where(pixel_mask, x + 1.0, x), noise=n)
        assert torch.equal(changed_masked.logits, base.logits)
        assert not torch.isclose(changed_masked.reconstruction_loss, base.reconstruction_loss)
        # changing only the visible pixels' targets leaves the masked-patch loss unchanged
        visible_changed = torch.where(pixel_mask, x, x + 1.0)
        assert torch.equal(model.forward_loss(visible_changed, base.logits, base.mask), base.reconstruction_loss)
        assert not torch.equal(model.forward_loss(torch.where(pixel_mask, x + 1.0, x), base.logits, base.mask),
                               base.reconstruction_loss)
    assert torch.allclose(base.loss, base.reconstruction_loss + base.self_distillation_loss)


@pytest.mark.parametrize("mode", ["frozen_teacher", "detached", "sdmae"])
def test_self_distillation_gradient_paths(mode):
    model = pretraining_model(sd_mode=mode).train()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    model(images(), noise=noise()).self_distillation_loss.backward()
    decoder_grads = [p.grad for p in model.decoder.parameters()]
    assert model.sd_encoder_head.weight.grad.abs().sum() > 0
    assert model.sdda_mae.stages[-1].blocks[0].mlp2.fc2.weight.grad.abs().sum() > 0
    if mode == "sdmae":  # SD-MAE: no stop-gradient, both heads and the decoder learn from the SD term
        assert frozen == [] and model.sd_decoder_head.weight.grad.abs().sum() > 0
        assert any(g is not None and g.abs().sum() > 0 for g in decoder_grads)
    else:  # the teacher is a fixed target: frozen (never a trainable parameter without gradient)
        assert frozen and all(n.startswith("sd_decoder_head.") for n in frozen)
        assert model.sd_decoder_head.weight.grad is None and all(g is None for g in decoder_grads)


def test_every_trainable_pretraining_parameter_gets_a_gradient():
    model = pretraining_model().train()
    model(images(), noise=noise()).loss.backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert dead == []  # so DDP needs no find_unused_parameters


def test_self_distillation_is_alive_by_default_and_dead_in_the_literal_reading():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 64, 64)
    alive = pretraining_model().train()(x)
    assert alive.sd_teacher_probs.shape == alive.sd_student_log_probs.shape == (8, 32)
    diag = self_distillation_diagnostics(alive.sd_teacher_probs, alive.sd_student_log_probs)
    assert diag["sd_teacher_information"] > 0.05
    assert diag["sd_teacher_entropy"] < diag["sd_entropy_max"] - 0.05
    literal = pretraining_model(sd_mode="detached").train()(x)
    dead = self_distillation_diagnostics(literal.sd_teacher_probs, literal.sd_student_log_probs)
    assert dead["sd_teacher_information"] < 1e-3  # the artefact of medmae 0.1: one uniform target for all
    assert abs(float(dead["sd_teacher_entropy"] - dead["sd_entropy_max"])) < 1e-2


def test_diagnostics_definition():
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    same = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    diag = self_distillation_diagnostics(teacher, same.log())
    assert diag["sd_teacher_information"] == pytest.approx(math.log(2), abs=1e-5)  # one-hot, different per image
    assert diag["sd_teacher_entropy"] == pytest.approx(0.0, abs=1e-5)
    assert diag["sd_kl"] == pytest.approx(math.log(2), abs=1e-5)
    assert self_distillation_diagnostics(same, same.log())["sd_teacher_information"] == pytest.approx(0.0, abs=1e-6)


def test_batch_standardisation_of_the_teacher():
    model = pretraining_model().train()
    with pytest.raises(ValueError, match="at least 2 images"):
        model(images()[:1])
    model.eval()
    assert torch.isfinite(model(images()[:1]).loss)  # evaluation uses the running statistics
    norm = model.sd_teacher_norm.train()
    x = torch.randn(16, 16) * 3 + 2
    y = norm(x)
    assert torch.allclose(y.mean(0), torch.zeros(16), atol=1e-5) and torch.allclose(y.std(0, unbiased=False),
                                                                                     torch.ones(16), atol=1e-3)


def test_block_order_runs_the_chosen_attention_first():
    calls = []
    for order in ("spatial_first", "channel_first"):
        block = SDDAMAEModel(tiny(block_order=order)).stages[0].blocks[0]
        block.spatial_attn.register_forward_hook(lambda *a: calls.append("spatial"))
        block.channel_attn.register_forward_hook(lambda *a: calls.append("channel"))
        block(torch.randn(1, 256, 16), 16, 16)
    assert calls == ["spatial", "channel", "channel", "spatial"]


def test_channel_attention_temperature_takes_no_weight_decay():
    from medmae.training.optim import param_groups

    groups = param_groups(pretraining_model(), lr=1e-3, weight_decay=0.05)
    decayed = {n for g in groups if g["weight_decay"] > 0 for n in g["param_names"]}
    assert not [n for n in decayed if n.endswith("temperature")]
    assert "sdda_mae.stages.0.blocks.0.channel_attn.qkv.weight" in decayed
    assert not [n for g in groups for n in g["param_names"] if n.startswith("sd_decoder_head")]  # frozen: left out


def test_empty_masks_and_dice_conventions():
    model = SDDAMAEForSegmentationAndClassification(tiny()).train()
    x = images()
    out = model(x, labels=torch.zeros(2, 64, 64, dtype=torch.long), class_labels=torch.tensor([0, 1]))
    assert torch.isfinite(out.loss) and torch.isfinite(out.segmentation_loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    ignored = model(x, labels=torch.full((2, 64, 64), 255), class_labels=torch.tensor([0, 1]))
    assert torch.isfinite(ignored.loss)
    # perfect, confident predictions give ~0; an absent class that is not predicted adds 0 (no NaN)
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :4] = 1
    logits = torch.stack([(labels == 0).float(), (labels == 1).float()], dim=1) * 50
    assert dice_loss(logits, labels) < 1e-4
    empty = torch.zeros(1, 8, 8, dtype=torch.long)
    background_logits = torch.stack([torch.ones(1, 8, 8), torch.zeros(1, 8, 8)], dim=1) * 50
    assert dice_loss(background_logits, empty) < 1e-4
    assert torch.isfinite(segmentation_loss(background_logits, empty, tiny()))


# ---- transfer ---------------------------------------------------------------------------------------
def _perturbed_pretraining(tmp_path):
    model = pretraining_model(seed=3)
    with torch.no_grad():  # non-default values everywhere, so a copied tensor is recognisable
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(tmp_path)
    return model


def _pretrained_decoder_features(pretrained, x):
    """d of the pre-training decoder on the UNMASKED image: what a fine-tuning decoder must give at step 0."""
    with torch.no_grad():
        features, _, _ = pretrained.sdda_mae.forward_encoder(x)
        return pretrained.forward_decoder(features, pretrained.sdda_mae.feature_grids(*x.shape[-2:]))


def test_fine_tuning_transfers_encoder_and_decoder_and_matches_at_step_zero(tmp_path):
    pretrained = _perturbed_pretraining(tmp_path)
    joint = SDDAMAEForSegmentationAndClassification.from_pretrained(tmp_path).eval()
    source, target = pretrained.state_dict(), joint.state_dict()
    shared = [k for k in source if k.startswith(("sdda_mae.", "decoder.")) and k != "sdda_mae.mask_token"]
    assert len(shared) == len([k for k in target if k.startswith(("sdda_mae.", "decoder."))])
    assert "sdda_mae.mask_token" in source and "sdda_mae.mask_token" not in target  # masking is pre-training only
    for key in shared:
        assert torch.equal(source[key], target[key]), key
    assert not any(k.startswith(("pixel_head", "sd_")) for k in target)
    for fusion in joint.skip.fusions:  # zero-initialised fuse
        assert not fusion.fuse.weight.any() and not fusion.fuse.bias.any()
    x = images()
    expected = _pretrained_decoder_features(pretrained, x)
    with torch.no_grad():
        assert torch.equal(joint.forward_features(x)[1], expected)
    # the same through from_pretraining, from a folder or an instance
    for source_model in (tmp_path, pretrained):
        again = SDDAMAEForSegmentationAndClassification.from_pretraining(source_model, cls_id2label={0: "a", 1: "b", 2: "c"})
        assert set(again.transferred_keys) == set(shared) and again.config.num_cls_labels == 3
        with torch.no_grad():
            assert torch.equal(again.eval().forward_features(x)[1], expected)


def test_same_scale_skip_also_preserves_the_decoder_at_step_zero(tmp_path):
    pretrained = _perturbed_pretraining(tmp_path)
    seg = SDDAMAEForSemanticSegmentation.from_pretrained(tmp_path, skip_mode="same_scale_concat")
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(seg.eval().forward_features(x)[1], _pretrained_decoder_features(pretrained, x))
    assert seg.config.skip_mode == "same_scale_concat"


def test_encoder_only_transfer_reinitialises_the_decoder(tmp_path):
    pretrained = _perturbed_pretraining(tmp_path)
    model = SDDAMAEForSegmentationAndClassification.from_pretraining(pretrained, transfer="encoder")
    assert model.transferred_keys and all(k.startswith("sdda_mae.") for k in model.transferred_keys)
    source, target = pretrained.state_dict(), model.state_dict()
    assert all(torch.equal(source[k], target[k]) for k in source if k.startswith("sdda_mae.") and k in target)
    decoder_keys = [k for k in source if k.startswith("decoder.")]
    assert not any(torch.equal(source[k], target[k]) for k in decoder_keys if k.endswith(".expand.weight"))
    with pytest.raises(ValueError, match="transfer must be"):
        SDDAMAEForSegmentationAndClassification.from_pretraining(pretrained, transfer="decoder")


# ---- outputs and options --------------------------------------------------------------------------
def test_output_shapes():
    x = images()
    with torch.no_grad():
        enc = SDDAMAEModel(tiny()).eval()(x, output_hidden_states=True)
        assert [tuple(h.shape) for h in enc.hidden_states] == [(2, 256, 16), (2, 64, 32), (2, 16, 64)]
        assert enc.last_hidden_state.shape == (2, 16, 64) and enc.pooler_output.shape == (2, 64)
        pre = pretraining_model()(x, noise=noise())
        assert pre.logits.shape == (2, 256, 48) and pre.mask.shape == (2, 256) and pre.loss.ndim == 0
        seg = SDDAMAEForSemanticSegmentation(tiny()).eval()(x, labels=torch.randint(0, 2, (2, 64, 64)))
        assert seg.logits.shape == (2, 2, 64, 64) and seg.loss.ndim == 0
        config = tiny(cls_id2label={0: "normal", 1: "benign", 2: "malignant"}, id2label={0: "bg", 1: "a", 2: "b"})
        cls = SDDAMAEForImageClassification(config).eval()
        assert cls.decoder is None  # bottleneck head: no decoder needed
        out = cls(x, labels=torch.tensor([0, 2]))
        assert out.logits.shape == (2, 3) and torch.isfinite(out.loss)
        joint = SDDAMAEForSegmentationAndClassification(config).eval()
        out = joint(x, labels=torch.randint(0, 3, (2, 64, 64)), class_labels=torch.tensor([1, 2]))
        assert out.logits.shape == (2, 3, 64, 64) and out.class_logits.shape == (2, 3)
        expected = 0.5 * out.segmentation_loss + 0.5 * out.classification_loss
        assert torch.allclose(out.loss, expected)
        assert isinstance(joint(x, return_dict=False), tuple)
        assert joint(x).loss is None


@pytest.mark.parametrize("overrides", [
    dict(sd_pooling="token", sd_tokens="visible", sd_loss="kl", sd_head_type="mlp", sd_scale_t2=True,
         sd_student_temp=0.5),
    dict(sd_tokens="masked", norm_pix_loss=True, expand_mode="dae", downsample="overlap_conv"),
    dict(block_order="spatial_first", ffn_type="mix", skip_mode="none", cls_source="decoder", drop_path_rate=0.1),
    dict(cls_source="multi_scale", channel_attention_heads=[1, 2, 4], efficient_attention_heads=2, focal_alpha=0.25),
])
def test_configuration_options_run(overrides):
    torch.manual_seed(0)
    config = tiny(**overrides)
    pre = SDDAMAEForPreTraining(config).train()
    out = pre(images(), noise=noise())
    assert torch.isfinite(out.loss) and torch.isfinite(out.self_distillation_loss)
    out.loss.backward()
    joint = SDDAMAEForSegmentationAndClassification.from_pretraining(pre)
    out = joint(images(), labels=torch.randint(0, 2, (2, 64, 64)), class_labels=torch.tensor([0, 1]))
    assert torch.isfinite(out.loss)


def test_gradient_checkpointing_gives_the_same_gradients():
    def grads(checkpointing):
        model = pretraining_model().train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert all(b.gradient_checkpointing for s in model.sdda_mae.stages for b in s.blocks)
        model(images(), noise=noise()).loss.backward()
        return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5)


# ---- bad input ---------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    model = SDDAMAEForSegmentationAndClassification(tiny()).eval()
    with pytest.raises(ValueError, match="1 channels but the model expects 3"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="not divisible by 16"):
        model(torch.randn(1, 3, 72, 72))
    x = images(1)
    x[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(x)
    with pytest.raises(ValueError, match="2 segmentation classes"):
        model(images(1), labels=torch.full((1, 64, 64), 2))
    with pytest.raises(ValueError, match="2 segmentation classes"):
        model(images(1), labels=torch.full((1, 64, 64), -1))
    with pytest.raises(ValueError, match=r"shape \[batch, height, width\]"):
        model(images(1), labels=torch.zeros(1, 32, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="class labels must be in"):
        model(images(1), class_labels=torch.tensor([2]))
    # other sizes that fit the geometry run (no position embedding): 128 px
    assert model(torch.randn(1, 3, 128, 128)).logits.shape == (1, 2, 128, 128)


def test_forwards_refuse_unknown_arguments_and_return_hidden_states_only_when_asked():
    x = images()
    encoder = SDDAMAEModel(tiny()).eval()
    assert encoder(x).hidden_states is None
    assert len(encoder(x, output_hidden_states=True).hidden_states) == 3
    for model, call in ((encoder, lambda m: m(x, lables=1)),
                        (SDDAMAEForSegmentationAndClassification(tiny()), lambda m: m(x, class_label=None)),
                        (SDDAMAEForPreTraining(tiny()), lambda m: m(x, mask_ratio=0.5))):
        with pytest.raises(TypeError, match="unexpected keyword argument"):
            call(model)
    with pytest.raises(ValueError, match="no softmax attention maps"):
        SDDAMAEForSemanticSegmentation(tiny())(x, output_attentions=True)
    assert SDDAMAEForImageClassification(tiny())(x, interpolate_pos_encoding=True).logits.shape[0] == 2


@pytest.mark.parametrize("cls", [SDDAMAEForSegmentationAndClassification, SDDAMAEForSemanticSegmentation,
                                 SDDAMAEForImageClassification])
def test_every_trainable_fine_tuning_parameter_gets_a_gradient(cls, tmp_path):
    labels3 = {0: "a", 1: "b", 2: "c"}
    model = cls(tiny(id2label=labels3) if cls is SDDAMAEForImageClassification else tiny(cls_id2label=labels3)).train()
    assert model.sdda_mae.mask_token is None  # no masking in fine-tuning: no mask token (Swin's use_mask_token)
    kwargs = {"labels": torch.tensor([0, 2])} if cls is SDDAMAEForImageClassification else \
        {"labels": (images()[:, 0] > 0).long()}
    if cls is SDDAMAEForSegmentationAndClassification:
        kwargs["class_labels"] = torch.tensor([0, 2])
    model(images(), **kwargs).loss.backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert dead == []  # a 2-process DDP fine-tuning crashed at step 2 on the unused mask token in 0.1
    # a pre-training checkpoint (with its mask token) loads into the fine-tuning and base models silently
    pretraining_model().save_pretrained(tmp_path)
    base, info = SDDAMAEModel.from_pretrained(tmp_path, output_loading_info=True)
    assert base.mask_token is None and not info["missing_keys"]
    assert not [k for k in info["unexpected_keys"] if "mask_token" in k]  # the decoder keys are reported as usual
    with pytest.raises(ValueError, match="use_mask_token=True"):
        base(images(), noise=noise())
    masked = SDDAMAEModel.from_pretrained(tmp_path, use_mask_token=True)
    assert masked(images(), noise=noise()).mask is not None


def test_image_classifier_follows_the_transformers_contract(tmp_path):
    import numpy as np
    from PIL import Image
    from transformers import pipeline

    from medmae import MedMAEImageProcessor

    diagnoses = {0: "normal", 1: "benign", 2: "malignant"}
    torch.manual_seed(0)
    model = SDDAMAEForImageClassification(tiny(id2label=diagnoses)).eval()
    assert model.classification_head.classifier.out_features == 3  # id2label are ITS classes
    with torch.no_grad():
        model.classification_head.classifier.weight.normal_(std=1.0)
    model.save_pretrained(tmp_path)
    MedMAEImageProcessor(size={"height": 64, "width": 64}).save_pretrained(tmp_path)
    image = Image.fromarray((np.random.default_rng(0).random((70, 70)) * 255).astype(np.uint8))
    result = pipeline("image-classification", model=str(tmp_path))(image, top_k=3)
    assert {r["label"] for r in result} == {"normal", "benign", "malignant"}
    x = images()
    single = model(x, labels=torch.tensor([0, 2]))  # problem_type inferred: single-label, CE + focal
    assert model.config.problem_type == "single_label_classification" and torch.isfinite(single.loss)
    with pytest.raises(ValueError, match=r"class ids in \[0, 3\)"):
        model(x, labels=torch.tensor([0, 3]))
    multi = SDDAMAEForImageClassification(tiny(id2label=diagnoses, problem_type="multi_label_classification"))
    torch.testing.assert_close(
        multi(x, labels=torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])).loss,
        torch.nn.functional.binary_cross_entropy_with_logits(multi(x).logits, torch.tensor([[1.0, 0.0, 1.0],
                                                                                            [0.0, 1.0, 0.0]])))
    regression = SDDAMAEForImageClassification(tiny(num_labels=1))
    out = regression(x, labels=torch.tensor([0.5, 1.5]))
    assert regression.config.problem_type == "regression"
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), torch.tensor([0.5, 1.5])))
