"""The /v1 routes in OpenAI's wire format, one module per route family: models (list, load,
unload, health), chat, completions, embeddings, audio (speech in), speech (speech out, voices),
images; vision.py turns image content parts of chat messages into model inputs. What they share
with Ollama's /api routes (bodies, resolving, jobs, errors) is ../common.py."""

from ominix.api.openai import audio, chat, completions, embeddings, images, models, speech

ROUTE_MODULES = (models, chat, completions, embeddings, audio, speech, images)
