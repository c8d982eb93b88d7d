"""Write an mflux pack with mflux's own code (run by the mflux reference venv, see
tests/test_image_mflux_pack.py): `python mflux_pack_builder.py flux2|zimage SRC DST BITS|none`.

SRC is a diffusers FLUX.2 [klein] or Z-Image folder. mflux's WeightLoader reads it through mflux's weight
mapping; its transformer and Qwen3 text encoder are built at SRC's (tiny) sizes; the VAE, whose
mflux class has the real sizes fixed, is held as the mapped tensors with mflux's attention block in
its mid blocks, so quantization reaches the same layers as in a real pack. Then mflux's
WeightApplier quantizes (or not) and its ModelSaver writes the pack, as `mflux-save` does.
"""

import json
import sys
from pathlib import Path

import mlx.nn as nn
from mflux.models.common.tokenizer import TokenizerLoader
from mflux.models.common.weights.loading.weight_applier import WeightApplier
from mflux.models.common.weights.loading.weight_loader import WeightLoader
from mflux.models.common.weights.saving.model_saver import ModelSaver

family, src, dst, bits = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
bits = None if bits == "none" else int(bits)
tc = json.loads((src / "transformer" / "config.json").read_text())
te = json.loads((src / "text_encoder" / "config.json").read_text())
te_args = dict(vocab_size=te["vocab_size"], hidden_size=te["hidden_size"], num_hidden_layers=te["num_hidden_layers"],
               num_attention_heads=te["num_attention_heads"], num_key_value_heads=te["num_key_value_heads"],
               intermediate_size=te["intermediate_size"], head_dim=te["head_dim"])  # fmt: skip


class Pipeline:
    pass


pipe = Pipeline()
if family == "flux2":
    from mflux.models.flux2.model.flux2_text_encoder.qwen3_text_encoder import Qwen3TextEncoder
    from mflux.models.flux2.model.flux2_transformer.transformer import Flux2Transformer
    from mflux.models.flux2.model.flux2_vae.common.attention import Flux2AttentionBlock as VAEAttention
    from mflux.models.flux2.weights.flux2_weight_definition import Flux2KleinWeightDefinition as Definition

    pipe.transformer = Flux2Transformer(**{k: tuple(v) if isinstance(v, list) else v for k, v in tc.items()
                                           if not k.startswith("_") and k not in ("eps",)})  # fmt: skip
    pipe.text_encoder = Qwen3TextEncoder(**te_args)
else:
    from mflux.models.z_image.model.z_image_text_encoder.text_encoder import TextEncoder
    from mflux.models.z_image.model.z_image_transformer.transformer import ZImageTransformer
    from mflux.models.z_image.model.z_image_vae.common.attention import Attention as VAEAttention
    from mflux.models.z_image.weights.z_image_weight_definition import ZImageWeightDefinition as Definition

    pipe.transformer = ZImageTransformer(
        patch_size=tc["all_patch_size"][0], f_patch_size=tc["all_f_patch_size"][0], in_channels=tc["in_channels"],
        dim=tc["dim"], n_layers=tc["n_layers"], n_refiner_layers=tc["n_refiner_layers"], n_heads=tc["n_heads"],
        norm_eps=tc["norm_eps"], qk_norm=tc["qk_norm"], cap_feat_dim=tc["cap_feat_dim"], rope_theta=tc["rope_theta"],
        t_scale=tc["t_scale"], axes_dims=tc["axes_dims"], axes_lens=tc["axes_lens"],
    )  # fmt: skip
    pipe.text_encoder = TextEncoder(**te_args)
weights = WeightLoader.load(weight_definition=Definition, model_path=str(src))
vae_weights = weights.components["vae"]
pipe.vae = nn.Module()
for key, value in vae_weights.items():
    pipe.vae[key] = value
for side in ("encoder", "decoder"):
    channels = vae_weights[side]["mid_block"]["attentions"][0]["to_q"]["weight"].shape[0]
    block = VAEAttention(channels)
    block.update(vae_weights[side]["mid_block"]["attentions"][0])
    pipe.vae[side]["mid_block"]["attentions"] = [block]
pipe.bits = WeightApplier.apply_and_quantize(
    weights=weights, quantize_arg=bits, weight_definition=Definition,
    models={"vae": pipe.vae, "transformer": pipe.transformer, "text_encoder": pipe.text_encoder},
)
pipe.tokenizers = TokenizerLoader.load_all(Definition.get_tokenizers(), str(src))
ModelSaver.save_model(model=pipe, bits=pipe.bits, base_path=dst, weight_definition=Definition)
print(json.dumps({"bits": pipe.bits}))
