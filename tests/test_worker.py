"""The stepped worker: a long job of any kind never freezes a chat stream, cancelling it frees the
thread at once, embeddings run in steps, and each kind refuses the other kinds' work clearly."""

from __future__ import annotations

import queue
import threading
import time

import httpx
import mlx.core as mx
import openai
import pytest

from ominix.api.app import create_app
from ominix.engine.llm.tokenizer import load_tokenizer
from ominix.engine.pool import ModelPool
from ominix.engine.worker import Done, Failed, StepJob
from tests.server_fixtures import ServerThread, qwen3_embedding, random_qwen3


class Ticking(StepJob):
    """A synthetic long job: `steps` bounded steps of real MLX work (a denoising step or an audio
    window stands in the same place)."""

    def __init__(self, steps: int):
        self.steps = steps
        self.done = 0
        self.closed = False
        self.step_times: list[float] = []

    def step(self) -> bool:
        x = mx.random.normal((192, 192))
        mx.eval(x @ x)
        time.sleep(0.004)
        self.done += 1
        self.step_times.append(time.perf_counter())
        return self.done == self.steps

    def result(self):
        return self.done

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("worker")
    pool = ModelPool()
    pool.register(str(random_qwen3(root / "tiny")), "tiny")
    pool.register(str(qwen3_embedding(root / "emb", prefixed=False)), "emb")
    with ServerThread(create_app(pool, preload=["tiny", "emb"])) as s:
        s.no_eos = {str(t): -100 for t in load_tokenizer(root / "tiny").eos_token_ids}
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=60)


def submit(server, job):
    events: queue.Queue = queue.Queue()
    ticket = server.app.state.worker.submit("", job, events.put)
    return ticket, events


def last_event(events: queue.Queue, timeout: float):
    while True:
        event = events.get(timeout=timeout)
        if isinstance(event, (Done, Failed)):
            return event


def stream_chat(server, client, max_tokens=24) -> list[float]:
    """Arrival times of a streamed chat's content chunks (EOS banned: all `max_tokens` come)."""
    times, usage = [], None
    stream = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello"}], stream=True, max_tokens=max_tokens,
        temperature=0, logit_bias=server.no_eos, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.perf_counter())
        usage = chunk.usage or usage
    assert usage.completion_tokens == max_tokens and len(times) >= 2
    return times


def test_chat_streams_between_the_steps_of_a_long_job(server, client):
    job = Ticking(2000)
    ticket, events = submit(server, job)
    while job.done < 5:  # the long job is running
        time.sleep(0.01)
    token_times = stream_chat(server, client)
    assert not ticket.ended and job.done < job.steps, "the chat had to wait for the long job"
    # The job kept stepping while the chat streamed: both made progress in the same window.
    during = [t for t in job.step_times if token_times[0] < t < token_times[-1]]
    assert during, "the long job did not step while the chat streamed"

    cancelled_at = time.perf_counter()
    ticket.cancel()
    event = last_event(events, timeout=10)
    assert isinstance(event, Failed) and type(event.error).__name__ == "Cancelled"
    assert job.closed
    steps_after_cancel = [t for t in job.step_times if t > cancelled_at]
    assert len(steps_after_cancel) <= 1  # stopped before its next step
    assert server.app.state.worker.running_jobs == 0
    health = httpx.get(server.url + "/health").json()
    assert health["running_jobs"] == 0
    assert "ominix_job_steps" in httpx.get(server.url + "/metrics").text
    stream_chat(server, client, max_tokens=4)  # and the thread is free


def test_a_long_job_finishes_with_its_result(server):
    job = Ticking(30)
    _, events = submit(server, job)
    event = last_event(events, timeout=30)
    assert isinstance(event, Done) and event.result == 30 and job.closed


def test_embeddings_run_in_steps(server, client):
    steps = server.app.state.worker.stats["job_steps"]
    texts = [f"text number {i} " * (1 + i % 7) for i in range(300)]
    threads_result = {}

    def embed():
        threads_result["r"] = client.embeddings.create(model="emb", input=texts)

    thread = threading.Thread(target=embed)
    thread.start()
    token_times = stream_chat(server, client, max_tokens=8)
    thread.join(60)
    response = threads_result["r"]
    assert len(response.data) == 300 and token_times
    # 300 inputs: tokenized 64 per step, embedded 16 per step.
    assert server.app.state.worker.stats["job_steps"] - steps >= 300 // 64 + 300 // 16
    whole = client.embeddings.create(model="emb", input=texts[:16])
    assert whole.data[3].embedding == pytest.approx(response.data[3].embedding, abs=1e-5)


def test_each_kind_refuses_the_other_kinds_work(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="emb", messages=[{"role": "user", "content": "x"}])
    message = e.value.body["message"] if isinstance(e.value.body, dict) else str(e.value)
    assert "embedding model" in message and "POST /v1/embeddings" in message
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="tiny", input="x")
    message = e.value.body["message"] if isinstance(e.value.body, dict) else str(e.value)
    assert "chat model" in message and "POST /v1/chat/completions" in message


def test_one_models_long_prefill_does_not_starve_another(tmp_path):
    """Every model with work gets a turn: B answers while A's long prompt is still prefilling
    (the old loop prefilled the first model's prompt to the end before any other's)."""
    from ominix.engine.llm.jobs import ChoiceDone, GenerateJob, TokenEvent
    from ominix.engine.worker import Worker

    pool = ModelPool(use_catalog=False)
    pool.register(str(random_qwen3(tmp_path / "a", max_position_embeddings=4096)), "a")
    pool.register(str(random_qwen3(tmp_path / "b", seed=1)), "b")
    worker = Worker(pool, prompt_cache_bytes=0, prefill_step_size=16)  # A's prompt: ~120 chunks
    worker.start()
    try:
        for name in ("a", "b"):  # both resident first, so both are admitted in the same turn
            pool.start_load(pool.resolve(name)).result()
        order, finished = [], threading.Event()

        def sink(model):
            def put(event):
                order.append((model, type(event).__name__))
                if isinstance(event, (Done, Failed)) and model == "a":
                    finished.set()
            return put

        greedy = {"temperature": 0.0}
        worker.submit("a", GenerateJob(prompts=[list(range(3, 600)) * 3], sampling=greedy, max_tokens=2), sink("a"))
        worker.submit("b", GenerateJob(prompts=[[5, 6, 7]], sampling=greedy, max_tokens=6), sink("b"))
        assert finished.wait(60)
        first_a = order.index(("a", TokenEvent.__name__))
        assert ("b", ChoiceDone.__name__) in order[:first_a], order
    finally:
        worker.stop()
