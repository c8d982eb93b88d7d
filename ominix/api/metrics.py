"""GET /metrics in Prometheus text format.

Each app has its own CollectorRegistry (tests create many apps in one process). Request counts and
latency histograms are observed as things happen; everything else (queue depth, batch size, tokens,
resident models, prompt cache) is read from the worker and the pool at scrape time, so the
inference thread does no extra work for it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

router = APIRouter()

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("ominix_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=self.registry)
        self.ttft = Histogram("ominix_time_to_first_token_seconds",
                              "Time from submission to a sequence's first token", buckets=_LATENCY_BUCKETS,
                              registry=self.registry)
        self.token_latency = Histogram("ominix_inter_token_latency_seconds",
                                       "Time between consecutive tokens of a sequence", buckets=_LATENCY_BUCKETS,
                                       registry=self.registry)
        self.worker = None
        self.pool = None
        self.registry.register(_EngineCollector(self))

    def attach(self, worker, pool) -> None:
        self.worker, self.pool = worker, pool


class _EngineCollector:
    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def describe(self):
        return []

    def collect(self):
        import mlx.core as mx

        worker, pool = self.metrics.worker, self.metrics.pool
        if worker is None:
            return
        stats = worker.stats
        yield GaugeMetricFamily("ominix_queue_depth", "Requests waiting to start", value=worker.queue_depth)
        yield GaugeMetricFamily("ominix_running_sequences", "Sequences prefilling or decoding",
                                value=worker.running_sequences)
        yield GaugeMetricFamily("ominix_running_jobs", "Stepped jobs running (embeddings, speech, images)",
                                value=worker.running_jobs)
        batch = GaugeMetricFamily("ominix_batch_size", "Sequences in the running decode batch", labels=["model"])
        for model, size in worker.batch_sizes.items():
            batch.add_metric([model], size)
        yield batch
        for name, key, help_text in (
            ("ominix_prompt_tokens", "prompt_tokens", "Prompt tokens of admitted requests"),
            ("ominix_prefill_tokens", "prefill_tokens", "Prompt tokens run through the model (not cached)"),
            ("ominix_cached_prompt_tokens", "cached_tokens", "Prompt tokens served from the prompt cache"),
            ("ominix_generated_tokens", "generated_tokens", "Tokens generated"),
            ("ominix_decode_steps", "decode_steps", "Batched decode steps"),
            ("ominix_job_steps", "job_steps", "Steps of stepped jobs (embedding batches, audio windows, ...)"),
            ("ominix_request_timeouts", "timeouts", "Requests stopped by the request timeout"),
            ("ominix_rejected_requests", "rejected", "Requests refused because the queue was full"),
        ):
            yield CounterMetricFamily(name, help_text, value=stats[key])
        cache = worker.prompt_cache.stats()
        yield CounterMetricFamily("ominix_prompt_cache_hits", "Prompt cache lookups that reused a prefix",
                                  value=cache["hits"])
        yield CounterMetricFamily("ominix_prompt_cache_misses", "Prompt cache lookups without reuse",
                                  value=cache["misses"])
        yield GaugeMetricFamily("ominix_prompt_cache_bytes", "Bytes held by the prompt cache", value=cache["bytes"])
        yield GaugeMetricFamily("ominix_prompt_cache_entries", "Entries in the prompt cache", value=cache["entries"])
        resident = pool.resident()
        memory = GaugeMetricFamily("ominix_model_memory_bytes", "Memory of each resident model", labels=["model"])
        for model_id, r in resident.items():
            memory.add_metric([model_id], r.nbytes)
        yield memory
        yield GaugeMetricFamily("ominix_resident_models", "Models loaded", value=len(resident))
        yield GaugeMetricFamily("ominix_memory_budget_bytes", "Memory budget for resident models",
                                value=pool.memory_budget)
        yield GaugeMetricFamily("ominix_mlx_active_memory_bytes", "MLX active memory", value=mx.get_active_memory())
        yield GaugeMetricFamily("ominix_mlx_cache_memory_bytes", "MLX buffer cache", value=mx.get_cache_memory())


@router.get("/metrics")
async def metrics(request: Request):
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

