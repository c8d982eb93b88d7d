"""Image generation specifics of the engine (FLUX.2 [klein], Z-Image) in the diffusers layout.

    pipeline.py      model_index.json -> components (transformer, VAE, text encoder, scheduler),
                     dtype / --quantize / text-encoder release, sizes, noise; the kind's loader
    flux2.py, zimage.py   each family's prompts, latent layout and one denoising step
    text.py          the Qwen3 text encoder: chat template, padding, hidden states of chosen layers
    scheduler.py     flow-matching Euler sigmas with the published shift schedules
    references.py    reference images for edits, prepared as the FLUX.2 pipeline does
    job.py           `ImageJob` (a StepJob: encode, one denoising step per turn, decode) and events
    output.py        pixels <-> PNG (text chunks) / JPEG / WebP via Pillow
    convert.py       save an MLX-quantized copy in the same layout
"""
