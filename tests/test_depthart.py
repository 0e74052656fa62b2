"""DepthART (domains/depth/depthart.py, depthart_training.py): the depth encoding, the image-prefix mask, the
dynamic residual targets (checked against an independent re-derivation), teacher forcing as the special case of
feeding the truth back, the KV-cached sampler against the training pass, learning, export and VAR loading."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from scalear.domains.depth.depthart import (DEPTHART_PRESETS, DepthARTConfig, DepthARTModel, create_depthart,
                                            depth_to_tokenizer_input, depthart_loss, init_from_var,
                                            tokenizer_output_to_depth)
from scalear.io import from_pretrained, save_pretrained
from scalear.vqvae import VQVAE_PRESETS

pytestmark = pytest.mark.usefixtures("single_thread")

#: a small tokenizer (16 px, f2, scales 1,2,4,8) and transformer, so every test runs in well under a second
SMALL = dict(
    tokenizer=dict(VQVAE_PRESETS["tiny"], ch=16, ch_mult=(1, 2), using_sa=False, using_mid_sa=False, vocab_size=64,
                   patch_nums=(1, 2, 4, 8), restart_every=0),
    transformer=dict(depth=2, width=64, num_heads=2, drop_path_rate=0.0),
)


def _model(seed: int = 0, **kw) -> DepthARTModel:
    torch.manual_seed(seed)
    model = DepthARTModel(DepthARTConfig.from_dict({**SMALL, **kw})).eval()
    # a "trained-like" transformer: VAR's init zeroes the unconditional embedding and the AdaLN biases, so every
    # residual branch starts gated off (gamma = 0), and scales its head by 0.02 (argmax ~ constant)
    tr = model.transformer
    torch.nn.init.normal_(tr.uncond_emb if hasattr(tr, "uncond_emb") else tr.class_emb.weight, std=1.0)
    for block in tr.blocks:
        torch.nn.init.normal_(block.ada_lin[-1].bias, std=0.5)
    torch.nn.init.normal_(tr.head.weight, std=0.5)
    return model


def _batch(B: int = 2, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    image = torch.rand(B, 3, size, size, generator=g)
    depth = 0.5 + 4 * torch.rand(B, 1, size, size, generator=g)
    return image, depth


# ------------------------------------------------------------------ depth encoding
def test_depth_encoding_is_scale_invariant_and_round_trips():
    _, depth = _batch()
    x, q = depth_to_tokenizer_input(depth)
    assert x.shape == (2, 3, 16, 16) and torch.equal(x[:, 0], x[:, 2])
    x7, q7 = depth_to_tokenizer_input(7.0 * depth)  # per-image normalisation removes the scale
    torch.testing.assert_close(x7, x)
    torch.testing.assert_close(q7, 7.0 * q)
    for b in range(2):  # q is the 98th percentile: 2% of the pixels lie above it
        assert abs(float((depth[b] > q[b]).float().mean()) - 0.02) < 0.01
    rel = tokenizer_output_to_depth(x)
    below = depth <= q.view(-1, 1, 1, 1)
    torch.testing.assert_close(rel[below], (depth / q.view(-1, 1, 1, 1))[below])
    assert torch.all(rel[~below] == 1.0)  # clipped at the percentile


def test_depth_encoding_fills_invalid_pixels_and_rejects_empty_maps():
    depth = torch.tensor([[[[1.0, 2.0], [0.0, 4.0]]]])
    x, q = depth_to_tokenizer_input(depth, quantile=1.0)
    assert q.item() == 4.0 and x[0, 0].tolist() == [[-0.5, 0.0], [1.0, 1.0]]
    with pytest.raises(ValueError, match="no valid pixel"):
        depth_to_tokenizer_input(torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        depth_to_tokenizer_input(torch.ones(1, 3, 2, 2))


# ------------------------------------------------------------------ image prefix and mask
def test_image_prefix_holds_the_images_multiscale_tokens():
    model = _model()
    image, _ = _batch()
    prefix = model.image_prefix(image)
    q, sched = model.tokenizer.quantize, model.schedule
    assert prefix.shape == (2, sched.total_tokens, q.dim)
    fhats = model.tokenizer.img_to_fhats(image * 2 - 1)
    last = prefix[:, sched.scale_slice(sched.num_scales - 1)]
    torch.testing.assert_close(last, fhats[-1].flatten(2).transpose(1, 2))  # finest scale: the full f_hat


def test_depth_tokens_are_block_causal_and_see_the_whole_prefix():
    model = _model()
    image, depth = _batch()
    prefix = model.image_prefix(image)
    idx = model.tokenizer.img_to_indices(model.depth_input(depth))
    sched = model.schedule
    with torch.no_grad():
        base = model.teacher_forcing_logits(prefix, idx)
        for k in range(sched.num_scales - 1):  # indices of scale k feed the inputs of scales > k only
            idx2 = [i.clone() for i in idx]
            idx2[k] = (idx2[k] + 1) % model.tokenizer.quantize.vocab_size
            out = model.teacher_forcing_logits(prefix, idx2)
            stop = sched.scale_slice(k).stop
            assert torch.equal(out[:, :stop], base[:, :stop]), f"scale {k}'s tokens leaked into scales <= {k}"
            assert not torch.allclose(out[:, stop:], base[:, stop:])
        # every depth scale, the first included, reads the image prefix (its finest image tokens too)
        prefix2 = prefix.clone()
        prefix2[:, -sched.tokens_per_scale[-1]:] += 1.0
        out = model.teacher_forcing_logits(prefix2, idx)
        for k in range(sched.num_scales):
            sl = sched.scale_slice(k)
            assert not torch.allclose(out[:, sl], base[:, sl]), f"scale {k} does not see the image prefix"
    mask = model.transformer.attn_mask(sched.total_tokens, torch.device("cpu"))
    P = sched.total_tokens
    assert not mask[:P, P:].any() and mask[:P, :P].all() and mask[P:, :P].all()  # prefix sees only itself


# ------------------------------------------------------------------ dynamic targets
def test_forcing_the_truth_reduces_self_refinement_to_teacher_forcing():
    """Fed the ground-truth tokens, the scale-by-scale (KV-cached) pass gives the teacher-forced logits, and its
    residual targets are the tokenizer's own indices."""
    model = _model()
    image, depth = _batch()
    prefix = model.image_prefix(image)
    f = model.tokenizer.encode_latent(model.depth_input(depth))
    idx = model.tokenizer.quantize.encode(f)
    with torch.no_grad():
        out = model.self_refine(prefix, f, forced_indices=idx)
        tf = model.teacher_forcing_logits(prefix, idx)
    for t, i in zip(out.targets, idx):
        assert torch.equal(t, i)
    torch.testing.assert_close(torch.cat(out.logits, 1), tf, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.f_hat, model.tokenizer.quantize.decode(idx))


def test_dynamic_targets_are_residuals_of_the_models_own_accumulation():
    """Re-derived with the quantizer's public API: the input of scale k+1 is the model's own argmax tokens
    accumulated, and the target of scale k quantizes ``f - f_hat`` (what the model has not produced yet)."""
    model = _model()
    image, depth = _batch()
    prefix = model.image_prefix(image)
    q = model.tokenizer.quantize
    f = model.tokenizer.encode_latent(model.depth_input(depth))
    with torch.no_grad():
        out = model.self_refine(prefix, f)
    own = [lg.argmax(-1) for lg in out.logits]
    gt = q.encode(f)
    f_hat = torch.zeros_like(f)
    differs = 0
    for k in range(model.schedule.num_scales):
        z = F.interpolate(f - f_hat, size=model.schedule.shapes[k], mode="area").flatten(2).transpose(1, 2)
        assert torch.equal(out.targets[k], q.lookup(z.reshape(-1, q.dim)).view(2, -1)), f"scale {k}"
        differs += int((out.targets[k] != gt[k]).sum())
        f_hat = q.add_scale(f_hat, q.embed(own[k], k), k)
    assert differs > 0  # the model's mistakes change the later targets away from the tokenizer's indices
    torch.testing.assert_close(out.f_hat, f_hat)
    with torch.no_grad():  # the inputs were exactly the teacher-forcing inputs of the model's own tokens
        torch.testing.assert_close(torch.cat(out.logits, 1), model.teacher_forcing_logits(prefix, own), atol=1e-5, rtol=1e-5)


def test_final_latent_mse_reaches_the_last_scale_logits():
    model = _model().train()
    image, depth = _batch()
    prefix = model.image_prefix(image)
    f = model.tokenizer.encode_latent(model.depth_input(depth))
    out = model.self_refine(prefix, f, soft_last=True)
    logits_last = out.logits[-1]
    logits_last.retain_grad()
    F.mse_loss(out.f_hat, f).backward()
    assert logits_last.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.tokenizer.parameters())  # the tokenizer stays frozen


def test_loss_modes_and_their_terms():
    model = _model().train()
    image, depth = _batch()
    tf, logs_tf = depthart_loss(model, image, depth, mode="teacher_forcing")
    assert "mse" not in logs_tf and torch.isclose(tf, logs_tf["ce"])
    dyn, logs = depthart_loss(model, image, depth, mode="dynamic", mse_weight=10.0)
    torch.testing.assert_close(dyn, logs["ce"] + 10.0 * logs["mse"])
    ce_only, logs0 = depthart_loss(model, image, depth, mode="dynamic", mse_weight=0.0)
    assert "mse" not in logs0 and torch.isclose(ce_only, logs0["ce"])
    with pytest.raises(ValueError, match="dynamic"):
        depthart_loss(model, image, depth, mode="scheduled")


@pytest.mark.parametrize("mode", ["teacher_forcing", "dynamic"])
def test_tiny_depthart_learns(mode: str):
    """From VAR's initialisation, 60 AdamW steps on a fixed batch cut the loss by more than half and lift the
    token accuracy to over 10x chance (1/64)."""
    torch.manual_seed(0)
    model = DepthARTModel(DepthARTConfig.from_dict(SMALL)).train()
    image, depth = _batch(4)
    opt = torch.optim.AdamW(model.transformer.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss, logs = depthart_loss(model, image, depth, mode=mode, mse_weight=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.4 * losses[0], losses
    assert logs["acc"] > 10 / 64, logs


# ------------------------------------------------------------------ inference
def test_greedy_sampling_follows_the_self_refinement_path():
    """The KV-cached sampler at temperature 0 takes the same tokens as the training pass's argmax feedback."""
    model = _model()
    image, depth = _batch()
    prefix = model.image_prefix(image)
    f = model.tokenizer.encode_latent(model.depth_input(depth))
    with torch.no_grad():
        refine = model.self_refine(prefix, f)
    torch.testing.assert_close(model.sample_latent(image, temperature=0.0, num_samples=1), refine.f_hat)


def test_averaged_embeddings_and_seeded_sampling():
    model = _model()
    image, _ = _batch()
    a = model.predict_depth(image, generator=torch.Generator().manual_seed(3))
    b = model.predict_depth(image, generator=torch.Generator().manual_seed(3))
    c = model.predict_depth(image, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (2, 1, 16, 16) and bool((a > 0).all())
    # 5 averaged samples per token: the latent's codes are means of codebook vectors, not codebook vectors
    f_avg = model.sample_latent(image, generator=torch.Generator().manual_seed(0), num_samples=5)
    f_one = model.sample_latent(image, generator=torch.Generator().manual_seed(0), num_samples=1)
    assert not torch.allclose(f_avg, f_one)
    var_avg = torch.stack([model.sample_latent(image, generator=torch.Generator().manual_seed(s), num_samples=5)
                           for s in range(4)]).var(0).mean()
    var_one = torch.stack([model.sample_latent(image, generator=torch.Generator().manual_seed(s), num_samples=1)
                           for s in range(4)]).var(0).mean()
    assert var_avg < var_one  # averaging reduces the sampling noise


def test_any_input_size_and_bad_inputs():
    model = _model()
    assert model.predict_depth(torch.rand(1, 3, 37, 53)).shape == (1, 1, 37, 53)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.predict_depth(torch.rand(1, 1, 16, 16))


def test_config_validation():
    with pytest.raises(ValueError, match="unknown DepthART transformer keys"):
        DepthARTConfig(transformer=dict(depth=2, vocab_size=10))
    with pytest.raises(ValueError, match="RGB image tokenizer"):
        DepthARTConfig(tokenizer=dict(VQVAE_PRESETS["tiny"], in_channels=1))
    with pytest.raises(ValueError, match="unknown DepthART config keys"):
        DepthARTConfig.from_dict({"bins": 3})
    with pytest.raises(KeyError, match="unknown DepthART preset"):
        create_depthart("huge")


def test_presets_build_with_the_papers_sizes():
    with torch.device("meta"):
        model = DepthARTModel(DEPTHART_PRESETS["paper"])
    tr = model.transformer
    assert (tr.cfg.depth, tr.cfg.width, tr.cfg.num_heads, tr.cfg.vocab_size) == (16, 1024, 16, 4096)
    assert tr.cfg.schedule.total_tokens == 680 and tr.cfg.max_prefix_len == 680
    assert 300e6 < sum(p.numel() for p in tr.parameters()) < 330e6  # VAR-d16 (310M) + the prefix projection


def test_export_round_trip(tmp_path: Path):
    model = _model()
    save_pretrained(model, tmp_path / "m")
    loaded = from_pretrained(tmp_path / "m").eval()
    image, _ = _batch()
    torch.testing.assert_close(loaded.predict_depth(image, temperature=0.0), model.predict_depth(image, temperature=0.0))
    assert json.loads((tmp_path / "m" / "config.json").read_text())["kind"] == "depthart"


def test_init_from_var_embeds_the_prefix_like_var(tmp_path: Path):
    """VAR's transformer weights load by its key table; the prefix starts as VAR's own token embedding."""
    from safetensors.torch import save_file

    from test_var_checkpoints import random_var_transformer_state_dict

    pn = (1, 2, 4, 8)
    sd = random_var_transformer_state_dict(2, V=64, Cvae=8, num_classes=10, patch_nums=pn)
    save_file(sd, str(tmp_path / "var.safetensors"))
    model = _model(transformer=dict(depth=2, width=128, num_heads=2, num_classes=10, drop_path_rate=0.0))
    init_from_var(model, tmp_path / "var.safetensors")
    tr = model.transformer
    torch.testing.assert_close(tr.head.weight, sd["head.weight"])
    torch.testing.assert_close(tr.blocks[1].attn.mat_qkv.weight, sd["blocks.1.attn.mat_qkv.weight"])
    x = torch.randn(2, tr.cfg.schedule.total_tokens, 8)
    want = F.linear(x, sd["word_embed.weight"], sd["word_embed.bias"]) + sd["pos_1LC"] + sd["lvl_embed.weight"][sd["lvl_1L"][0]]
    torch.testing.assert_close(tr.embed_prefix(x), want)
    assert model.condition(2, torch.device("cpu")).allclose(sd["class_emb.weight"][10].expand(2, -1))  # null class
    with pytest.raises(Exception, match="does not fit"):
        init_from_var(_model(), tmp_path / "var.safetensors")  # an unconditional, narrower transformer


# ------------------------------------------------------------------ both stages through the CLI
def test_two_stage_training_and_eval_through_the_cli(tmp_path: Path):
    """Stage 1 (tokenizer on RGB-D), stage 2 (DepthART, dynamic targets), then ``scalear depth eval``, which
    median-scales a relative-depth model and says so."""
    from scalear.cli import run_lightning

    root = Path(__file__).resolve().parents[1] / "configs" / "depth"
    data = ["--data.init_args.data.init_args.train_size", "8", "--data.init_args.data.init_args.val_size", "4",
            "--data.init_args.data.init_args.image_size", "[16, 16]", "--data.init_args.batch_size", "4"]
    small_tok = ["--model.init_args.vqvae", json.dumps({**SMALL["tokenizer"], "ch_mult": [1, 2], "patch_nums": [1, 2, 4, 8]})]
    common = ["--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.enable_progress_bar", "false",
              "--trainer.enable_model_summary", "false"]
    run_lightning(["fit", "--config", str(root / "depthart_tokenizer_tiny.yaml"), *common, *data, *small_tok,
                   "--trainer.default_root_dir", str(tmp_path / "tok"), "--trainer.logger.init_args.save_dir",
                   str(tmp_path / "tok"), "--model.init_args.export_dir", str(tmp_path / "export")])
    tok_dir = tmp_path / "export" / "tokenizer"
    assert (tok_dir / "model.safetensors").is_file()
    run_lightning(["fit", "--config", str(root / "depthart_tiny.yaml"), *common,
                   "--data.init_args.train_size", "8", "--data.init_args.val_size", "4", "--data.init_args.batch_size", "4",
                   "--data.init_args.image_size", "[16, 16]", "--model.init_args.tokenizer", str(tok_dir),
                   "--model.init_args.transformer", json.dumps(SMALL["transformer"]),
                   "--trainer.default_root_dir", str(tmp_path / "dart"), "--trainer.logger.init_args.save_dir",
                   str(tmp_path / "dart"), "--model.init_args.export_dir", str(tmp_path / "export")])
    model_dir = tmp_path / "export" / "depthart"
    assert isinstance(from_pretrained(model_dir), DepthARTModel)
    out = subprocess.run([sys.executable, "-m", "scalear.cli", "depth", "eval", "--model", str(model_dir), "--dataset",
                          "procedural", "--size", "2", "--image-size", "16,16", "--quiet", "--out", str(tmp_path / "m.json")],
                         capture_output=True, text=True, check=True)
    assert "median-scaled" in out.stdout
    assert json.loads((tmp_path / "m.json").read_text())["median_scaling"] is True


def test_predict_command_marks_relative_depth(tmp_path: Path):
    """``scalear depth predict`` with a DepthART model writes every output and states that the depth is relative."""
    from PIL import Image

    from scalear.domains.depth.cli import main

    save_pretrained(_model(), tmp_path / "m")
    photo = tmp_path / "in" / "photo.png"
    photo.parent.mkdir()
    Image.fromarray((torch.rand(20, 30, 3) * 255).byte().numpy()).save(photo)
    assert main(["predict", "--model", str(tmp_path / "m"), "--input", str(photo), "--out", str(tmp_path / "out"),
                 "--quiet"]) == 0
    side = json.loads((tmp_path / "out" / "photo_depth.json").read_text())
    assert "98th-percentile" in side["depth_is_relative"]
    assert (tmp_path / "out" / "photo_depth.npy").is_file() and (tmp_path / "out" / "photo_depth_color.png").is_file()
