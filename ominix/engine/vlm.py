"""Vision chat on the engine: the loader, a prompt's images as bounded worker steps, and the
placeholder expansion.

A chat prompt rendered by a vision model's template holds one `<|image_pad|>` per image;
`expand_prompt` widens each to the number of tokens its patch grid merges into. `VisionPrompt`
runs the vision tower one image per step (the LLM lane calls `step()` until `ready`), then places
the features (`model.media_inputs`): the prompt then prefills in chunks like any other, and its
sequences decode in the model's batch with their rope delta (batch.py carries it per row).
"""

from __future__ import annotations

import dataclasses

import mlx.core as mx

from ominix.engine.images import ProcessedImage


def load(path, *, dtype=None):
    """(model, tokenizer) for a vision chat checkpoint; the architecture must take images."""
    from ominix.engine.load import LoadError, load as load_checkpoint

    model, tokenizer = load_checkpoint(path, dtype=dtype)
    if not hasattr(model, "encode_image"):
        raise LoadError(f"model_type '{model.model_type}' has no vision tower in this build")
    return model, tokenizer


def image_token_id(model) -> int:
    return model.args.image_token_id


def expand_prompt(model, ids: list[int], images: list[ProcessedImage]) -> list[int]:
    """Each image placeholder in `ids` -> as many placeholders as its image has tokens. A model
    whose template places no images (Prismatic) puts them itself (`place_images`)."""
    if hasattr(model, "place_images"):
        return model.place_images(ids, len(images))
    token = image_token_id(model)
    slots = [i for i, t in enumerate(ids) if t == token]
    if len(slots) != len(images):
        raise ValueError(f"the prompt has {len(slots)} image placeholder(s) for {len(images)} image(s); "
                         "the model's chat template did not place every image")
    out, start = [], 0
    for slot, image in zip(slots, images):
        out += ids[start:slot] + [token] * model.image_tokens(image.grid)
        start = slot + 1
    return out + ids[start:]


class VisionPrompt:
    """One prompt's images, encoded one per `step()`; shared by the prompt's n choices."""

    def __init__(self, model, prompt: list[int], images: list[ProcessedImage]):
        self.model = model
        self.prompt = prompt
        self.images = images
        self.features: list = []
        self.media = None
        self.users = 0  # sequences that still have to prefill with these images

    @property
    def ready(self) -> bool:
        return self.media is not None

    def step(self) -> None:
        image = self.images[len(self.features)]
        embeds, deepstack = self.model.encode_image(image.patches, image.grid)
        mx.eval(embeds, deepstack)
        self.features.append((embeds, deepstack))
        if len(self.features) == len(self.images):
            self.media = self.model.media_inputs(self.prompt, [i.grid for i in self.images], self.features)
            mx.eval(self.media.embeds, self.media.deepstack, self.media.positions, self.media.index)

    def release(self) -> None:
        """One sequence finished its prefill; after the last, only the rope delta is kept (decoding
        needs no image features)."""
        self.users -= 1
        if self.users <= 0 and self.media is not None:
            self.features = []
            self.media = dataclasses.replace(self.media, index=None, embeds=None, deepstack=[], positions=None)

    def encode_all(self):
        while not self.ready:
            self.step()
        return self.media


class WithMedia:
    """A model bound to one prompt's images, for the single-request generate loop (`ominix run`):
    called like any chat model, it passes the images along."""

    def __init__(self, model, media):
        self.model, self.media = model, media
        self.args = model.args
        self.layers = model.layers

    def __call__(self, inputs, cache=None):
        return self.model(inputs, cache=cache, media=self.media)
