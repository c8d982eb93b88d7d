"""Tiny GPT-SoVITS checkpoints in the published layouts, shared by the parity and end-to-end tests.

Widths shrink where the architecture allows; what the published code hard-wires stays: cnhubert's
768-wide output (SoVITS' ssl_proj reads 768), SoVITS' 192-wide text encoder and 512-wide style
vector (MRTE is built with its defaults), the 1024-entry codebook, the 732 v2 symbols, 32 kHz.
"""

from __future__ import annotations

HUBERT_CONFIG = {  # chinese-hubert-base's config.json keys, tiny values
    "_name_or_path": "tiny-random-chinese-hubert-base", "activation_dropout": 0.1, "apply_spec_augment": True,
    "architectures": ["HubertModel"], "attention_dropout": 0.1, "bos_token_id": 1, "classifier_proj_size": 256,
    "conv_bias": False, "conv_dim": [32] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2], "ctc_loss_reduction": "sum", "ctc_zero_infinity": False,
    "do_stable_layer_norm": False, "eos_token_id": 2, "feat_extract_activation": "gelu",
    "feat_extract_dropout": 0.0, "feat_extract_norm": "group", "feat_proj_dropout": 0.1,
    "feat_proj_layer_norm": True, "final_dropout": 0.1, "hidden_act": "gelu", "hidden_dropout": 0.1,
    "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 64, "layer_norm_eps": 1e-05,
    "layerdrop": 0.1, "mask_feature_length": 10, "mask_feature_prob": 0.0, "mask_time_length": 10,
    "mask_time_prob": 0.05, "model_type": "hubert", "num_attention_heads": 12, "num_conv_pos_embedding_groups": 16,
    "num_conv_pos_embeddings": 16, "num_feat_extract_layers": 7, "num_hidden_layers": 2, "pad_token_id": 0,
    "torch_dtype": "float32", "transformers_version": "4.16.2", "use_weighted_layer_sum": False, "vocab_size": 32,
}  # fmt: skip

SOVITS_CONFIG = {  # configs/s2.json, tiny values
    "train": {"log_interval": 100, "eval_interval": 500, "seed": 1234, "epochs": 100, "learning_rate": 0.0001,
              "betas": [0.8, 0.99], "eps": 1e-09, "batch_size": 32, "fp16_run": True, "lr_decay": 0.999875,
              "segment_size": 20480, "init_lr_ratio": 1, "warmup_epochs": 0, "c_mel": 45, "c_kl": 1.0,
              "text_low_lr_rate": 0.4, "grad_ckpt": False},
    "data": {"max_wav_value": 32768.0, "sampling_rate": 32000, "filter_length": 2048, "hop_length": 640,
             "win_length": 2048, "n_mel_channels": 128, "mel_fmin": 0.0, "mel_fmax": None, "add_blank": True,
             "n_speakers": 300, "cleaned_text": True},
    "model": {"inter_channels": 32, "hidden_channels": 192, "filter_channels": 64, "n_heads": 2, "n_layers": 2,
              "kernel_size": 3, "p_dropout": 0.1, "resblock": "1", "resblock_kernel_sizes": [3, 7, 11],
              "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "upsample_rates": [10, 8, 2, 2, 2],
              "upsample_initial_channel": 32, "upsample_kernel_sizes": [16, 16, 8, 2, 2], "n_layers_q": 3,
              "use_spectral_norm": False, "gin_channels": 512, "semantic_frame_rate": "25hz",
              "freeze_quantizer": True, "version": "v2"},
    "s2_ckpt_dir": "logs/s2/big2k1",
    "content_module": "cnhubert",
}  # fmt: skip
