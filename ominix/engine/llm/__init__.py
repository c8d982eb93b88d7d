"""Language-model specifics of the engine.

    tokenizer.py     tokenizer.json + chat template, streaming detokenizer, stop strings
    sample.py        sampling, and `sampling_params`: the one rule for defaults (generation_config)
    decode.py        `Decoder`: one sequence's tokens -> text, stop, finish (the only copy)
    generate.py      one request alone: chunked prefill + async decode loop (`ominix run`, bench)
    cache.py, batch.py, prompt_cache.py   KV caches, batched rows, reusable prompt prefixes
    jobs.py          `GenerateJob` (a chat/completion request) and its events
    lane.py          one model's continuous batch on the worker: a prefill chunk + a decode step per turn
    constrained.py   JSON / JSON-schema constraints (llguidance)
    chat.py          chat prompts, reasoning and tool-call parsing
"""
