"""Parity of the FLUX.2 [klein] and Z-Image pipelines against diffusers on tiny random checkpoints
in the published layout (built by tests/image_checkpoints.py, loaded through our loader).

Each part is checked on its own (text-encoder hidden states, one transformer forward, VAE decode
and encode (ominix/models/autoencoder.py), scheduler sigmas/timesteps), then whole generations
from the same initial noise to the same image: float32 everywhere, PSNR of the uint8 images above
40 dB.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from ominix.engine.image.pipeline import Options, load_image_pipeline  # noqa: E402
from tests.image_checkpoints import build_flux2_klein, build_zimage, load_reference, psnr  # noqa: E402

PROMPTS = ["a red fox in the snow", "你好，世界！ a longer prompt about mountains and the sea"]


def close(ours, ref, tol):
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape
    err = np.abs(ours - ref).max() / max(1e-6, np.abs(ref).max())
    assert err < tol, f"relative max error {err:.2e} >= {tol}"


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    path = build_flux2_klein(tmp_path_factory.mktemp("img") / "flux2-klein", te_layers=28)
    return path, load_reference(path, "flux2"), load_image_pipeline(path, Options(dtype="float32"))


@pytest.fixture(scope="module")
def zimg(tmp_path_factory):
    path = build_zimage(tmp_path_factory.mktemp("img") / "z-image")
    return path, load_reference(path, "zimage"), load_image_pipeline(path, Options(dtype="float32"))


def nchw(x: mx.array) -> np.ndarray:
    return np.array(x).transpose(0, 3, 1, 2)


def nhwc(x) -> mx.array:
    return mx.array(x.detach().numpy().transpose(0, 2, 3, 1))


# --- FLUX.2 [klein] ------------------------------------------------------------------------------


def test_flux2_text_encoder(flux):
    _, ref, ours = flux
    with torch.no_grad():
        expected = ref._get_qwen3_prompt_embeds(ref.text_encoder, ref.tokenizer, PROMPTS)
    got = ours.encode(ours.text_encoder, PROMPTS)
    close(got, expected.numpy(), 1e-4)


def test_flux2_transformer_forward(flux):
    _, ref, ours = flux
    g = torch.Generator().manual_seed(1)
    h, w, c = 3, 5, ours.transformer.args.in_channels
    x = torch.randn(2, h * w, c, generator=g)
    ctx = torch.randn(2, 7, ours.transformer.args.joint_attention_dim, generator=g)
    t = torch.tensor([0.7, 0.3])
    txt_ids = ref._prepare_text_ids(ctx)
    img_ids = ref._prepare_latent_ids(torch.zeros(2, c, h, w))
    with torch.no_grad():
        expected = ref.transformer(hidden_states=x, encoder_hidden_states=ctx, timestep=t,
                                   img_ids=img_ids, txt_ids=txt_ids, return_dict=False)[0]  # fmt: skip
    from ominix.engine.image.flux2 import grid_ids, text_ids

    rope = ours.transformer.rope(text_ids(7), grid_ids(h, w))
    got = ours.transformer(mx.array(x.numpy()), mx.array(ctx.numpy()), mx.array(t.numpy()), rope)
    close(got, expected.numpy(), 1e-4)


def test_flux2_vae(flux):
    _, ref, ours = flux
    g = torch.Generator().manual_seed(2)
    z = torch.randn(1, 4, 6, 10, generator=g)
    image = torch.rand(1, 3, 12, 20, generator=g) * 2 - 1
    with torch.no_grad():
        decoded = ref.vae.decode(z).sample
        encoded = ref.vae.encode(image).latent_dist.mode()
    close(nchw(ours.vae.decode(nhwc(z))), decoded.numpy(), 1e-4)
    close(nchw(ours.vae.encode(nhwc(image))), encoded.numpy(), 1e-4)


@pytest.mark.parametrize("steps", [1, 4, 28])
@pytest.mark.parametrize("size", [(64, 64), (128, 48)])
def test_flux2_scheduler(flux, steps, size):
    _, ref, ours = flux
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

    from ominix.engine.image.scheduler import flux2_mu

    seq = (size[0] // 16) * (size[1] // 16)
    mu = compute_empirical_mu(seq, steps)
    assert flux2_mu(seq, steps) == pytest.approx(mu)
    ref.scheduler.set_timesteps(steps, sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    sigmas = ours.scheduler.sigmas(steps, mu)
    np.testing.assert_allclose(sigmas, ref.scheduler.sigmas.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours.scheduler.timesteps(sigmas), ref.scheduler.timesteps.numpy(),
                               rtol=1e-6)  # fmt: skip


def run_ours(pipe, prompts, noise, steps, guidance=1.0, negative=None, references=None):
    te = pipe.text_encoder
    prompt = pipe.encode(te, prompts)
    neg = pipe.encode(te, negative) if negative else None
    state = pipe.start(prompt, neg, noise, steps, guidance, references)
    while state.index < state.steps:
        pipe.step(state)
    return np.array(pipe.decode(state))


def test_flux2_pipeline(flux):
    _, ref, ours = flux
    g = torch.Generator().manual_seed(3)
    width, height = 64, 48  # non-square
    m = ours.multiple
    noise = torch.randn(2, 16, height // m, width // m, generator=g)
    with torch.no_grad():
        expected = ref(prompt=PROMPTS, width=width, height=height, num_inference_steps=3,
                       latents=noise, output_type="np").images  # fmt: skip
    got = run_ours(ours, PROMPTS, nhwc(noise), 3)
    expected = (expected * 255).round().astype(np.uint8)
    assert got.shape == expected.shape == (2, height, width, 3)
    assert psnr(got, expected) > 40


def test_flux2_edit_pipeline(flux):
    """Reference-image conditioning (FLUX.2's edit path): the VAE encodes the reference, its
    tokens join the sequence at t = 10."""
    from PIL import Image

    _, ref, ours = flux
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    g = torch.Generator().manual_seed(4)
    noise = torch.randn(1, 16, 64 // ours.multiple, 80 // ours.multiple, generator=g)
    with torch.no_grad():
        expected = ref(image=Image.fromarray(pixels), prompt=PROMPTS[:1], num_inference_steps=2,
                       latents=noise, output_type="np").images  # fmt: skip
    reference = mx.array(pixels.astype(np.float32) / 127.5 - 1)
    got = run_ours(ours, PROMPTS[:1], nhwc(noise), 2, references=[reference])
    expected = (expected * 255).round().astype(np.uint8)
    assert got.shape == expected.shape == (1, 64, 80, 3)
    assert psnr(got, expected) > 40


# --- Z-Image -------------------------------------------------------------------------------------


def test_zimage_text_encoder(zimg):
    _, ref, ours = zimg
    with torch.no_grad():
        expected = ref._encode_prompt(list(PROMPTS), device="cpu")
    got = ours.encode(ours.text_encoder, PROMPTS)
    assert [g.shape for g in got] == [tuple(e.shape) for e in expected]
    for a, b in zip(got, expected):
        close(a, b.numpy(), 1e-4)


def test_zimage_transformer_forward(zimg):
    _, ref, ours = zimg
    g = torch.Generator().manual_seed(5)
    c = ours.transformer.args.in_channels
    x = torch.randn(2, c, 1, 6, 10, generator=g)  # 3 x 5 tokens: padded to 32
    caps = [torch.randn(7, 32, generator=g), torch.randn(40, 32, generator=g)]  # ragged
    t = torch.tensor([0.2, 0.9])
    with torch.no_grad():
        expected = ref.transformer(list(x.unbind(0)), t, caps, return_dict=False)[0]
    layout = ours.transformer.prepare([7, 40], 3, 5)
    width = layout["caps"]["width"]
    padded = mx.stack([mx.pad(mx.array(c_.numpy()), [(0, width - c_.shape[0]), (0, 0)]) for c_ in caps])
    cap_tokens = ours.transformer.embed_captions(padded, layout)
    got = ours.transformer(nhwc(x[:, :, 0]), mx.array(t.numpy()), cap_tokens, layout)
    close(nchw(got), torch.stack(expected)[:, :, 0].numpy(), 1e-4)


def test_zimage_vae(zimg):
    _, ref, ours = zimg
    g = torch.Generator().manual_seed(6)
    z = torch.randn(1, 4, 5, 7, generator=g)
    with torch.no_grad():
        decoded = ref.vae.decode(z).sample
    close(nchw(ours.vae.decode(nhwc(z))), decoded.numpy(), 1e-4)


@pytest.mark.parametrize("steps", [1, 8, 9])
def test_zimage_scheduler(zimg, steps):
    _, ref, ours = zimg
    from diffusers.pipelines.z_image.pipeline_z_image import get_default_z_image_sigmas

    ref.scheduler.set_timesteps(steps, sigmas=get_default_z_image_sigmas(steps), mu=0.5)
    sigmas = ours.scheduler.sigmas(steps, 0.5)
    np.testing.assert_allclose(sigmas, ref.scheduler.sigmas.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours.scheduler.timesteps(sigmas), ref.scheduler.timesteps.numpy(),
                               rtol=1e-6)  # fmt: skip


@pytest.mark.parametrize("guidance", [0.0, 3.0])
def test_zimage_pipeline(zimg, guidance):
    _, ref, ours = zimg
    g = torch.Generator().manual_seed(7)
    width, height = 48, 40  # 10 x 12 = 120 image tokens: padded to 128
    f = ours.multiple // 2
    noise = torch.randn(2, 4, height // f, width // f, generator=g)
    negative = ["blurry", "low quality, 模糊"] if guidance else None  # diffusers edits its lists
    with torch.no_grad():
        expected = ref(prompt=list(PROMPTS), width=width, height=height, num_inference_steps=3,
                       guidance_scale=guidance, negative_prompt=list(negative or []) or None,
                       latents=noise,
                       output_type="np").images  # fmt: skip
    got = run_ours(ours, PROMPTS, nhwc(noise), 3, guidance, negative)
    expected = (expected * 255).round().astype(np.uint8)
    assert got.shape == expected.shape == (2, height, width, 3)
    assert psnr(got, expected) > 40
