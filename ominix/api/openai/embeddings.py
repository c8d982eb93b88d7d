"""POST /v1/embeddings: a stepped EmbedJob; vectors as floats or base64 float32."""

from __future__ import annotations

import base64
import logging

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ominix.api.schemas import EmbeddingRequest
from ominix.api.common import (
    auth, final_result, keep_alive_of, read_request, resolve, start_job,
)

log = logging.getLogger("ominix.api")
router = APIRouter()


@router.post("/v1/embeddings", dependencies=auth)
async def embeddings(request: Request):
    from ominix.engine.embed import EmbedJob

    req: EmbeddingRequest = await read_request(request, EmbeddingRequest)
    ref = await resolve(request, req.model, "embedding")
    stream, first = await start_job(request, ref.id, EmbedJob(req.inputs(), req.dimensions), keep_alive_of(req))
    vectors, tokens = await final_result(request, stream, first)
    data = [{"object": "embedding", "index": i, "embedding": _encode(v, req.encoding_format)}
            for i, v in enumerate(vectors)]
    return JSONResponse({"object": "list", "data": data, "model": req.model,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _encode(vector: np.ndarray, encoding_format: str):
    if encoding_format == "base64":  # little-endian float32, as OpenAI sends it
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
