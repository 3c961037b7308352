"""ETMAE models: configuration, MAE steps, distillation, classification and the transformers contract."""

import json
import math

import numpy as np
import pytest
import torch

import medmae
from medmae import ETMAEConfig, ETMAEForImageClassification, ETMAEForPreTraining, ETMAEModel
from medmae.configuration.configuration_etmae import ETMAE_PRESETS
from medmae.modeling.layers import get_2d_sincos_pos_embed
from medmae.modeling.modeling_etmae import random_masking


def tiny(**overrides):
    return ETMAEConfig.from_preset("tiny_test", **overrides)


def images(batch=2, config=None, seed=0):
    config = config or tiny()
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, config.num_channels, config.image_size, config.image_size, generator=generator)


# ---- configuration ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "preset, with_proj, total, encoder",
    [
        ("vit_tiny_patch16_dec512d2b", False, 12_424_384, 5_524_416),
        ("vit_tiny_patch16_dec512d2b", True, 12_498_496, 5_524_416),  # + Linear(192, 384) projection
        ("vit_small_patch16_dec512d8b", False, 47_578_240, 21_665_664),
        ("vit_small_patch16_dec512d2b", False, 28_663_936, 21_665_664),
        ("vit_base_patch16_dec512d8b", False, 111_907_840, 85_798_656),
    ],
)
def test_preset_parameter_counts(preset, with_proj, total, encoder):
    """Exact counts of the method notes (section 6) / ETMAE Tables 1-2, fixed pos-embeds included."""
    overrides = {} if with_proj else {"teacher_hidden_size": None}
    with torch.device("meta"):
        model = ETMAEForPreTraining(ETMAEConfig.from_preset(preset, **overrides))
    assert sum(p.numel() for p in model.parameters()) == total
    assert sum(p.numel() for p in model.etmae.parameters()) == encoder


def test_student_preset_matches_paper():
    config = ETMAEConfig.from_preset("etmae-vit-tiny")
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (192, 12, 3)
    assert (config.decoder_hidden_size, config.decoder_num_hidden_layers, config.decoder_num_attention_heads) == (512, 2, 16)
    assert (config.student_align_layer, config.teacher_align_layer, config.distill_loss) == (8, 8, "l1")
    assert config.layer_norm_eps == 1e-6 and config.mask_ratio == 0.75


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(hidden_size=30, num_attention_heads=4), "not divisible by num_attention_heads"),
        (dict(image_size=30), "not divisible by patch_size"),
        (dict(mask_ratio=1.0), "mask_ratio"),
        (dict(mask_ratio=-0.1), "mask_ratio"),
        (dict(student_align_layer=4), "beyond the student's depth"),
        (dict(distill_loss="cosine"), "distill_loss"),
        (dict(distill_projection="conv"), "distill_projection"),
        (dict(global_pool="max"), "global_pool"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny(**overrides)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown ETMAE preset 'vit_giant'.*vit_tiny_patch16_dec512d2b"):
        ETMAEConfig.from_preset("vit_giant")


def test_all_presets_build_valid_configs():
    for name in ETMAE_PRESETS:
        ETMAEConfig.from_preset(name)


# ---- position embedding, masking -------------------------------------------------------------------
def _mae_reference_pos_embed(embed_dim, grid_size):
    """facebookresearch/mae util/pos_embed.py (np.float -> np.float64), used to pin the layout."""

    def emb_1d(dim, pos):
        omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
        omega = 1.0 / 10000**omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape(2, 1, grid_size, grid_size)
    emb = np.concatenate([emb_1d(embed_dim // 2, grid[0]), emb_1d(embed_dim // 2, grid[1])], axis=1)
    return np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)


def test_sincos_matches_mae_layout():
    ours = get_2d_sincos_pos_embed(64, 5, 5, cls_token=True).numpy()
    np.testing.assert_allclose(ours, _mae_reference_pos_embed(64, 5), atol=1e-12)
    # width first: token 1 (row 0, col 1) differs from token 0 in the first half, token 5 (row 1) in the second
    assert not np.allclose(ours[2, :32], ours[1, :32]) and np.allclose(ours[2, 32:], ours[1, 32:])


def test_models_have_nonzero_sincos_position_tables():
    model = ETMAEForPreTraining(tiny())
    expected = get_2d_sincos_pos_embed(32, 4, 4, cls_token=True).float()[None]
    torch.testing.assert_close(model.etmae.pos_embed.data, expected)
    torch.testing.assert_close(model.decoder.pos_embed.data, expected)
    assert not model.etmae.pos_embed.requires_grad


def test_random_masking_is_reproducible_and_consistent():
    x = torch.randn(3, 16, 8)
    noise = torch.rand(3, 16)
    kept, mask, ids_restore = random_masking(x, 0.75, noise)
    kept2, mask2, _ = random_masking(x, 0.75, noise)
    assert torch.equal(kept, kept2) and torch.equal(mask, mask2)
    assert kept.shape == (3, 4, 8)
    assert torch.all(mask.sum(1) == 16 - int(16 * 0.25))
    ids_shuffle = torch.argsort(noise, dim=1)
    assert torch.equal(torch.gather(ids_shuffle, 1, ids_restore), torch.arange(16).expand(3, -1))
    # kept tokens are the ones with the smallest noise, and the mask marks the others
    assert torch.equal(mask.bool(), noise > noise.sort(1).values[:, 3:4])


def test_encoder_without_masking_keeps_raster_order():
    model = ETMAEModel(tiny()).eval()
    x = images()
    out = model(x, output_hidden_states=True)
    assert out.mask is None and out.ids_restore is None
    expected = model.patch_embed(x) + model.pos_embed[:, 1:]
    torch.testing.assert_close(out.hidden_states[0][:, 1:], expected)
    assert out.last_hidden_state.shape == (2, 17, 32)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1


def test_hidden_states_index_k_plus_one_is_block_k():
    model = ETMAEModel(tiny()).eval()
    captured = {}
    model.blocks[2].register_forward_hook(lambda m, i, o: captured.update(b2=o[0]))
    out = model(images(), output_hidden_states=True)
    torch.testing.assert_close(out.hidden_states[3], captured["b2"])


# ---- pre-training ----------------------------------------------------------------------------------
def test_pretraining_outputs_and_same_noise_same_result():
    model = ETMAEForPreTraining(tiny(teacher_hidden_size=None)).eval()
    x, noise = images(), torch.rand(2, 16)
    out = model(x, noise=noise)
    again = model(x, noise=noise)
    assert out.logits.shape == (2, 16, 8 * 8 * 3)
    assert torch.equal(out.mask, again.mask) and torch.equal(out.loss, again.loss)
    assert out.distillation_loss is None and torch.equal(out.loss, out.reconstruction_loss)
    assert int(out.mask.sum(1)[0]) == 16 - int(16 * 0.25)


def test_reconstruction_loss_only_sees_masked_patches():
    model = ETMAEForPreTraining(tiny(teacher_hidden_size=None)).eval()
    x, noise = images(), torch.rand(2, 16)
    base = model(x, noise=noise)
    pred, mask = base.logits, base.mask
    target = model.patchify(x)
    visible_changed = target + (1 - mask)[..., None] * 5.0
    masked_changed = target + mask[..., None] * 5.0
    loss = model.forward_loss(x, pred, mask)
    assert torch.allclose(model.forward_loss(model.unpatchify(visible_changed), pred, mask), loss)
    assert not torch.allclose(model.forward_loss(model.unpatchify(masked_changed), pred, mask), loss)
    assert torch.equal(model.unpatchify(target), x)


def test_norm_pix_loss_changes_targets():
    config = tiny(teacher_hidden_size=None, norm_pix_loss=True)
    model = ETMAEForPreTraining(config).eval()
    x, noise = images(), torch.rand(2, 16)
    plain = ETMAEForPreTraining(tiny(teacher_hidden_size=None)).eval()
    plain.load_state_dict(model.state_dict())
    assert not torch.allclose(model(x, noise=noise).loss, plain(x, noise=noise).loss)


def _student_and_teacher(**student_overrides):
    torch.manual_seed(0)
    student = ETMAEForPreTraining(tiny(**student_overrides))
    teacher = ETMAEModel(tiny(hidden_size=48, intermediate_size=96, num_attention_heads=2))
    student.set_teacher(teacher)
    return student, teacher


def test_distillation_shares_mask_and_freezes_teacher():
    student, teacher = _student_and_teacher()
    x, noise = images(), torch.rand(2, 16)
    seen = {}
    teacher.blocks[student.config.teacher_align_layer].register_forward_hook(lambda m, i, o: seen.update(z=o[0]))
    calls = []
    for block in teacher.blocks:
        block.register_forward_hook(lambda m, i, o: calls.append(1))
    student.train()
    out = student(x, noise=noise)
    assert out.distillation_loss is not None and out.distillation_loss > 0
    torch.testing.assert_close(out.loss, out.reconstruction_loss + out.distillation_loss)
    # the teacher ran only up to its align layer, in eval mode, on the student's visible patches
    assert len(calls) == student.config.teacher_align_layer + 1
    assert not teacher.training and student.training
    _, teacher_mask, _, _, _ = teacher.forward_encoder(x, 0.75, noise)
    assert torch.equal(teacher_mask, out.mask)
    assert seen["z"].shape == (2, 1 + 4, 48)
    # gradients reach the student and its projection, never the teacher
    out.loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.distill_proj.weight.grad is not None
    # the teacher is not part of the student's weights
    assert not any(k.startswith(("teacher", "_teacher")) for k in student.state_dict())
    assert sum(p.numel() for p in student.parameters()) == sum(
        p.numel() for p in ETMAEForPreTraining(tiny()).parameters())


def test_distillation_loss_is_zero_for_identical_features():
    config = tiny(teacher_hidden_size=32, student_align_layer=1, teacher_align_layer=1)
    student = ETMAEForPreTraining(config).eval()
    teacher = ETMAEModel(config).eval()
    teacher.load_state_dict(student.etmae.state_dict())
    student.set_teacher(teacher)
    with torch.no_grad():
        student.distill_proj.weight.copy_(torch.eye(32))
        student.distill_proj.bias.zero_()
    out = student(images(), noise=torch.rand(2, 16))
    assert out.distillation_loss.item() < 1e-6


def test_teacher_input_renormalisation():
    student, _ = _student_and_teacher()
    x = images()
    assert torch.equal(student.teacher_inputs(x), x)
    student.set_teacher(student.teacher, image_mean=[0.5056] * 3, image_std=[0.252] * 3)
    raw = x * torch.tensor(student.config.image_std).view(1, 3, 1, 1) + torch.tensor(student.config.image_mean).view(1, 3, 1, 1)
    torch.testing.assert_close(student.teacher_inputs(x), (raw - 0.5056) / 0.252)


def test_teacher_statistics_per_source():
    from medmae.modeling.image_processing_medmae import TEACHER_SOURCE_STATISTICS

    student, _ = _student_and_teacher()
    student.set_teacher(student.teacher, source_statistics=TEACHER_SOURCE_STATISTICS["medical_mae"])
    x = images()
    with pytest.raises(ValueError, match="pass teacher_source"):
        student(x, noise=torch.rand(2, 16))
    with pytest.raises(ValueError, match=r"teacher_source \['mimic'\] has no teacher statistics"):
        student.teacher_inputs(x, ["mimic", "chexpert"])
    raw = x * torch.tensor(student.config.image_std).view(1, 3, 1, 1) + torch.tensor(student.config.image_mean).view(1, 3, 1, 1)
    imagenet_mean, imagenet_std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    got = student.teacher_inputs(x, ["chestxray14", "chexpert"])
    torch.testing.assert_close(got[0], (raw[0] - 0.5056) / 0.252)  # NIH image: NIH statistics
    torch.testing.assert_close(got[1], (raw[1] - imagenet_mean.view(3, 1, 1)) / imagenet_std.view(3, 1, 1))
    torch.testing.assert_close(student.teacher_inputs(x, torch.tensor([0, 1])), got)  # indices of sorted names
    out = student(x, noise=torch.rand(2, 16), teacher_source=["chestxray14", "chexpert"])
    assert out.distillation_loss > 0
    reloaded = type(student.config).from_dict(student.config.to_dict())
    assert reloaded.teacher_source_statistics == TEACHER_SOURCE_STATISTICS["medical_mae"]


@pytest.mark.parametrize("teacher_overrides", [dict(patch_size=4), dict(num_channels=1, image_mean=[0.5],
                                                                        image_std=[0.25])])
def test_teacher_with_other_patches_or_channels_is_refused(teacher_overrides):
    student = ETMAEForPreTraining(tiny())
    teacher = ETMAEModel(tiny(hidden_size=48, intermediate_size=96, num_attention_heads=2, **teacher_overrides))
    with pytest.raises(ValueError, match="teacher and student must share patch size and channels"):
        student.set_teacher(teacher)


def test_teacher_width_mismatch_is_an_error():
    student = ETMAEForPreTraining(tiny())
    with pytest.raises(ValueError, match="teacher width 32 does not match config.teacher_hidden_size 48"):
        student.set_teacher(ETMAEModel(tiny()))
    with pytest.raises(TypeError, match="load_teacher"):
        student.set_teacher(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("loss", ["l2", "smooth_l1"])
def test_distillation_loss_options(loss):
    student, _ = _student_and_teacher(distill_loss=loss, distill_projection="mlp")
    out = student(images(), noise=torch.rand(2, 16))
    assert torch.isfinite(out.distillation_loss)


# ---- classification --------------------------------------------------------------------------------
def test_multilabel_classification_uses_bce():
    config = tiny(num_labels=5, problem_type="multi_label_classification")
    model = ETMAEForImageClassification(config).eval()
    labels = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 1]], dtype=torch.float32)
    out = model(images(), labels=labels)
    assert out.logits.shape == (2, 5)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, labels))
    assert model.fc_norm is not None and model.etmae.norm is None


def test_single_label_and_cls_pooling():
    model = ETMAEForImageClassification(tiny(num_labels=3, global_pool="cls")).eval()
    out = model(images(), labels=torch.tensor([0, 2]))
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 2])))
    assert model.fc_norm is None


def test_classifier_head_init_is_mae_trunc_normal():
    model = ETMAEForImageClassification(tiny(num_labels=4))
    assert model.classifier.weight.abs().max() <= 4e-5 and model.classifier.weight.std() > 0
    assert torch.all(model.classifier.bias == 0)


def test_linear_layers_use_mae_xavier_init():
    model = ETMAEForPreTraining(tiny())
    qkv = model.etmae.blocks[0].attn.qkv.weight  # fused [3D, D]: bound sqrt(6 / (4D))
    bound = math.sqrt(6 / (qkv.shape[0] + qkv.shape[1]))
    assert qkv.abs().max() <= bound and qkv.abs().max() > 0.8 * bound
    assert abs(model.etmae.cls_token.std().item() - 0.02) < 0.012


def test_classifier_from_pretraining_checkpoint_keeps_encoder(tmp_path):
    pretrain = ETMAEForPreTraining(tiny())
    pretrain.save_pretrained(tmp_path)
    classifier = ETMAEForImageClassification.from_pretrained(tmp_path, num_labels=3)
    for name, tensor in classifier.etmae.state_dict().items():
        torch.testing.assert_close(tensor, pretrain.etmae.state_dict()[name])


def test_single_channel_model():
    config = tiny(num_channels=1, image_mean=[0.5], image_std=[0.25], teacher_hidden_size=None)
    model = ETMAEForPreTraining(config).eval()
    out = model(torch.randn(2, 1, 32, 32), noise=torch.rand(2, 16))
    assert out.logits.shape == (2, 16, 64)


def test_interpolate_pos_encoding():
    model = ETMAEForImageClassification(tiny(num_labels=2)).eval()
    x = torch.randn(1, 3, 48, 64)
    with pytest.raises(ValueError, match="does not match the model's 32x32"):
        model(x)
    assert model(x, interpolate_pos_encoding=True).logits.shape == (1, 2)
    pretrain = ETMAEForPreTraining(tiny(teacher_hidden_size=None)).eval()
    assert pretrain(x, interpolate_pos_encoding=True).logits.shape == (1, 48, 192)


# ---- bad input -------------------------------------------------------------------------------------
def test_bad_inputs_have_clear_errors():
    model = ETMAEForPreTraining(tiny()).eval()
    with pytest.raises(ValueError, match="has 1 channels but the model expects 3"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="not divisible by 8"):
        model(torch.randn(1, 3, 36, 36), interpolate_pos_encoding=True)
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(ValueError, match=r"noise must have shape"):
        model(torch.randn(1, 3, 32, 32), noise=torch.rand(1, 15))


def test_checkpoint_config_mismatch_is_an_error(tmp_path):
    ETMAEForPreTraining(tiny()).save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="tensor shapes do not match the configuration of ETMAEForPreTraining"):
        ETMAEForPreTraining.from_pretrained(tmp_path, hidden_size=64, intermediate_size=128)
    with pytest.raises(ValueError):  # still a ValueError too (medmae 0.1 callers)
        ETMAEForPreTraining.from_pretrained(tmp_path, hidden_size=64, intermediate_size=128)


def test_weights_of_another_family_are_refused_not_loaded_as_random(tmp_path):
    from medmae import SDDAMAEConfig, SDDAMAEForPreTraining

    ETMAEForPreTraining(tiny()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    sdda = SDDAMAEConfig.from_preset("tiny_test").to_dict()
    (tmp_path / "config.json").write_text(json.dumps({**sdda, "architectures": config["architectures"]}))
    with pytest.raises(RuntimeError, match="do not match the configuration of SDDAMAEForPreTraining"):
        SDDAMAEForPreTraining.from_pretrained(tmp_path)  # decoder.norm.* share a name, not a shape
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "model.safetensors"))
    save_file({k: v for k, v in state.items() if not k.startswith("decoder.")}, str(tmp_path / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(RuntimeError, match="none of the checkpoint's tensors has a name of SDDAMAEForPreTraining"):
        SDDAMAEForPreTraining.from_pretrained(tmp_path)


# ---- attention backends, checkpointing -------------------------------------------------------------
def test_sdpa_and_eager_agree(tmp_path):
    model = ETMAEForImageClassification(tiny(num_labels=2)).eval()
    model.save_pretrained(tmp_path)
    x = images()
    eager = ETMAEForImageClassification.from_pretrained(tmp_path, attn_implementation="eager").eval()
    sdpa = ETMAEForImageClassification.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert eager.config._attn_implementation == "eager"
    torch.testing.assert_close(eager(x).logits, sdpa(x).logits, atol=1e-5, rtol=1e-5)
    out = eager(x, output_attentions=True)
    assert len(out.attentions) == 4 and out.attentions[0].shape == (2, 2, 17, 17)


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    model = ETMAEForPreTraining(tiny(teacher_hidden_size=None))
    x, noise = images(), torch.rand(2, 16)
    model.train()
    model(x, noise=noise).loss.backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    model(x, noise=noise).loss.backward()
    for name, grad in reference.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, atol=1e-6, rtol=1e-5)


def test_package_exports():
    for name in ("ETMAEConfig", "ETMAEModel", "ETMAEForPreTraining", "ETMAEForImageClassification",
                 "MedMAEImageProcessor"):
        assert hasattr(medmae, name)


def test_patch_projection_gets_the_mae_initialisation_from_scratch_and_when_missing(tmp_path):
    import math

    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    model = ETMAEForPreTraining(tiny())
    weight, bias = model.etmae.patch_embed.proj.weight, model.etmae.patch_embed.proj.bias
    bound = math.sqrt(6.0 / (weight.shape[0] + math.prod(weight.shape[1:])))
    assert float(weight.abs().max()) <= bound and float(weight.abs().max()) > 0.9 * bound  # xavier on [out, C*p*p]
    assert float(bias.abs().max()) == 0.0  # PyTorch's Conv2d default would give a non-zero bias
    model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    save_file({k: v for k, v in state.items() if "patch_embed" not in k}, str(tmp_path / "model.safetensors"),
              metadata={"format": "pt"})
    reloaded = ETMAEForPreTraining.from_pretrained(tmp_path)
    loaded = reloaded.etmae.patch_embed.proj
    assert float(loaded.weight.abs().max()) <= bound and float(loaded.bias.abs().max()) == 0.0  # not garbage


def test_scalar_statistics_and_config_output_attentions():
    from medmae import SDDAMAEConfig

    assert ETMAEConfig.from_preset("tiny_test", image_mean=0.5, image_std=0.25).image_std == [0.25]
    assert SDDAMAEConfig.from_preset("tiny_test", image_std=0.25).image_std == [0.25]
    with pytest.raises(ValueError, match="image_std must be positive"):
        ETMAEConfig.from_preset("tiny_test", image_std=0.0)
    model = ETMAEForPreTraining(tiny(output_attentions=True, teacher_hidden_size=None)).eval()
    out = model(images(), noise=torch.rand(2, 16))
    assert out.attentions is not None and len(out.attentions) == 4


def test_a_classifier_from_a_pretraining_folder_lists_no_expected_unexpected_keys(tmp_path):
    ETMAEForPreTraining(ETMAEConfig.from_preset("tiny_test")).save_pretrained(tmp_path)
    model, info = ETMAEForImageClassification.from_pretrained(tmp_path, num_labels=3, output_loading_info=True)
    assert sorted(info["unexpected_keys"]) == []  # decoder, distillation projection, unused final norm: expected
    assert set(info["missing_keys"]) == {"fc_norm.weight", "fc_norm.bias", "classifier.weight", "classifier.bias"}
