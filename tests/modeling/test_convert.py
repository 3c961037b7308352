"""Weight converters: every source is built with random weights and compared numerically with medmae."""

from functools import partial

import pytest
import timm
import torch
from timm.models.vision_transformer import Block, PatchEmbed
from torch import nn
from transformers import ViTMAEConfig, ViTMAEForPreTraining, ViTMAEModel

from medmae import ETMAEForImageClassification, ETMAEForPreTraining, ETMAEModel
from medmae.modeling.convert import from_mae_checkpoint, from_timm_vit, from_vit_mae, load_teacher
from medmae.modeling.layers import get_2d_sincos_pos_embed


class ReferenceMAE(nn.Module):
    """facebookresearch/mae ``models_mae.MaskedAutoencoderViT``, ported line by line (with injectable noise)."""

    def __init__(self, img_size=32, patch_size=8, in_chans=3, embed_dim=32, depth=3, num_heads=2,
                 decoder_embed_dim=24, decoder_depth=2, decoder_num_heads=2, mlp_ratio=2.0):
        super().__init__()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        grid = int(num_patches**0.5)
        self.pos_embed = nn.Parameter(get_2d_sincos_pos_embed(embed_dim, grid, grid, True).float()[None], requires_grad=False)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
                                     for _ in range(depth)])
        self.norm = norm_layer(embed_dim)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.randn(1, 1, decoder_embed_dim) * 0.02)
        self.decoder_pos_embed = nn.Parameter(
            get_2d_sincos_pos_embed(decoder_embed_dim, grid, grid, True).float()[None], requires_grad=False)
        self.decoder_blocks = nn.ModuleList([Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True,
                                                   norm_layer=norm_layer) for _ in range(decoder_depth)])
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans, bias=True)
        self.p = patch_size

    def patchify(self, imgs):
        p = self.p
        h = w = imgs.shape[2] // p
        x = imgs.reshape(imgs.shape[0], 3, h, p, w, p)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(imgs.shape[0], h * w, p**2 * 3)

    def random_masking(self, x, mask_ratio, noise):
        N, L, D = x.shape
        len_keep = int(L * (1 - mask_ratio))
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))
        mask = torch.ones([N, L])
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, dim=1, index=ids_restore)
        return x_masked, mask, ids_restore

    def forward(self, imgs, mask_ratio, noise):
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        x, mask, ids_restore = self.random_masking(x, mask_ratio, noise)
        cls_token = self.cls_token + self.pos_embed[:, :1, :]
        x = torch.cat((cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        x = self.decoder_embed(x)
        mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:, :]
        target = self.patchify(imgs)
        loss = ((pred - target) ** 2).mean(dim=-1)
        loss = (loss * mask).sum() / mask.sum()
        return loss, pred, mask


def _randomize(module):
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "pos_embed" not in name and "position_embeddings" not in name:
                param.copy_(torch.randn_like(param) * 0.1)
    return module.eval()


def test_mae_checkpoint_converts_exactly(tmp_path):
    reference = _randomize(ReferenceMAE())
    path = tmp_path / "mae.pth"
    torch.save({"model": reference.state_dict(), "epoch": 3}, path)
    model = from_mae_checkpoint(path, num_heads=2, decoder_num_heads=2)
    assert isinstance(model, ETMAEForPreTraining)
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.decoder_num_hidden_layers) == (32, 3, 2)
    x, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    ref_loss, ref_pred, ref_mask = reference(x, 0.75, noise)
    out = model(x, noise=noise, mask_ratio=0.75)
    assert torch.equal(out.mask, ref_mask)
    assert (out.logits - ref_pred).abs().max().item() < 1e-5
    assert abs(out.loss.item() - ref_loss.item()) < 1e-5


def test_mae_encoder_only_checkpoint_gives_encoder(tmp_path):
    reference = _randomize(ReferenceMAE())
    encoder_keys = {k: v for k, v in reference.state_dict().items() if not k.startswith(("decoder", "mask_token"))}
    model = from_mae_checkpoint(encoder_keys, num_heads=2)
    assert isinstance(model, ETMAEModel)
    teacher = load_teacher(model)
    assert teacher is model


def test_mae_checkpoint_errors_name_the_keys(tmp_path):
    state_dict = _randomize(ReferenceMAE()).state_dict()
    state_dict["blocks.0.attn.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"unexpected keys: \['etmae.blocks.0.attn.extra'\]"):
        from_mae_checkpoint(state_dict, num_heads=2, decoder_num_heads=2)
    del state_dict["blocks.0.attn.extra"]
    del state_dict["blocks.1.norm2.weight"]
    with pytest.raises(ValueError, match=r"missing keys: \['etmae.blocks.1.norm2.weight'\]"):
        from_mae_checkpoint(state_dict, num_heads=2, decoder_num_heads=2)
    with pytest.raises(ValueError, match="cannot infer the number of encoder attention heads for width 32"):
        from_mae_checkpoint(_randomize(ReferenceMAE()).state_dict())
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        from_mae_checkpoint(bad, num_heads=2)


def test_mae_checkpoint_to_single_channel():
    reference = _randomize(ReferenceMAE())
    model = from_mae_checkpoint(reference.state_dict(), num_heads=2, decoder_num_heads=2, num_channels=1)
    assert model.config.num_channels == 1
    gray = torch.randn(2, 1, 32, 32)
    noise = torch.rand(2, 16)
    # a grayscale image through the summed projection equals the RGB model on the repeated image
    ours = model.etmae(gray, noise=noise, output_hidden_states=True).hidden_states[0]
    expected = reference.patch_embed(gray.expand(-1, 3, -1, -1)) + reference.pos_embed[:, 1:]
    expected = torch.gather(expected, 1, torch.argsort(noise, 1)[:, :4, None].expand(-1, -1, 32))
    torch.testing.assert_close(ours[:, 1:], expected, atol=1e-5, rtol=1e-5)


def _vit_mae_config():
    return ViTMAEConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                        intermediate_size=64, decoder_hidden_size=24, decoder_num_hidden_layers=2,
                        decoder_num_attention_heads=2, decoder_intermediate_size=48, mask_ratio=0.75)


def test_transformers_vit_mae_converts_exactly():
    source = _randomize(ViTMAEForPreTraining(_vit_mae_config()))
    model = from_vit_mae(source)
    x, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    expected = source(pixel_values=x, noise=noise)
    out = model(x, noise=noise)
    assert torch.equal(out.mask, expected.mask)
    assert (out.logits - expected.logits).abs().max().item() < 1e-5
    assert abs(out.loss.item() - expected.loss.item()) < 1e-5
    assert model.config.layer_norm_eps == source.config.layer_norm_eps


def test_transformers_vit_mae_encoder_and_folder(tmp_path):
    source = _randomize(ViTMAEModel(_vit_mae_config()))
    source.save_pretrained(tmp_path)
    model = from_vit_mae(str(tmp_path))
    assert isinstance(model, ETMAEModel)
    x, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    expected = source(pixel_values=x, noise=noise).last_hidden_state
    ours = model(x, noise=noise).last_hidden_state
    assert (ours - expected).abs().max().item() < 1e-5
    assert isinstance(load_teacher(tmp_path), ETMAEModel)


@pytest.mark.parametrize("global_pool", ["avg", "token"])
def test_timm_vit_classifier_converts_exactly(global_pool):
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
                               depth=2, num_heads=2, num_classes=5, global_pool=global_pool, mlp_ratio=2.0)
    source = _randomize(source)
    model = from_timm_vit(source)  # heads read from the timm model
    assert isinstance(model, ETMAEForImageClassification)
    assert model.config.global_pool == ("avg" if global_pool == "avg" else "cls")
    x = torch.randn(2, 3, 32, 32)
    assert (model(x).logits - source(x)).abs().max().item() < 1e-5


def test_converters_take_the_configs_own_head_names():
    from medmae.modeling.convert import config_from_mae_state_dict

    state = {"patch_embed.proj.weight": torch.zeros(40, 3, 16, 16), "cls_token": torch.zeros(1, 1, 40),
             "pos_embed": torch.zeros(1, 197, 40), "blocks.0.mlp.fc1.weight": torch.zeros(160, 40),
             "blocks.0.norm1.weight": torch.zeros(40)}
    with pytest.raises(ValueError, match="attention heads"):
        config_from_mae_state_dict(state)  # 40 wide: no known preset
    assert config_from_mae_state_dict(state, num_attention_heads=4).num_attention_heads == 4
    assert config_from_mae_state_dict(state, num_heads=5).num_attention_heads == 5  # the alias
    with pytest.raises(ValueError, match="disagree"):
        config_from_mae_state_dict(state, num_heads=5, num_attention_heads=4)
