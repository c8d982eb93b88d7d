"""Serving many users: aggregate throughput with 1..16 concurrent streams, and the time to first token
of a second turn over a long history (prompt cache), for OminiX and mlx-lm's server on the same load.

    python benchmarks/bench_serving.py                 # float32 small Qwen3, 1/2/4/8/16 streams
    python benchmarks/bench_serving.py --quick         # 1/4 streams, fewer tokens
    python benchmarks/bench_serving.py --no-mlx-lm     # OminiX only
    python benchmarks/bench_serving.py --no-mlx-lm --streams 1,8 --ominix-root ../old-checkout
                                                       # another OminiX tree (before/after a change)

The checkpoint is bench_llm.py's small Qwen3 (hidden 512, 8 layers, the real 151,936-token vocabulary,
random weights). Both servers run as subprocesses on 127.0.0.1 and get the same requests: greedy
/v1/completions with a word-level prompt. Throughput = completion tokens of all streams / wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from bench_llm import make_checkpoints  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, model: Path, port: int, cwd: str | None = None) -> subprocess.Popen:
    if kind == "ominix":
        cmd = [sys.executable, "-m", "ominix", "serve", "--port", str(port), "--model", str(model),
               "--log-level", "warning", "--prompt-cache", "2GB"]
    else:
        cmd = [sys.executable, "-m", "mlx_lm", "server", "--model", str(model), "--port", str(port),
               "--log-level", "WARNING", "--temp", "0.0"]
    # `python -m ominix` imports the package from its working directory first: --ominix-root picks the tree.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=cwd)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{kind} server did not start")


def words(n: int, seed: int) -> str:
    return " ".join(f"w{(seed * 7 + i * 13) % 61}" for i in range(n))


async def complete(client, url, model, prompt, max_tokens) -> tuple[int, float]:
    start = time.perf_counter()
    r = await client.post(url + "/v1/completions", json={
        "model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0})
    r.raise_for_status()
    return r.json()["usage"]["completion_tokens"], time.perf_counter() - start


async def throughput(url, model, streams: int, tokens: int) -> float:
    async with httpx.AsyncClient(timeout=600) as client:
        await complete(client, url, model, words(16, 999), 4)  # warm up
        start = time.perf_counter()
        done = await asyncio.gather(*(complete(client, url, model, words(32, i), tokens) for i in range(streams)))
        return sum(n for n, _ in done) / (time.perf_counter() - start)


async def second_turn(url, model, history_words: int) -> tuple[float, float]:
    """(cold, warm) seconds to the first token of a turn over `history_words` words of history."""
    async with httpx.AsyncClient(timeout=600) as client:
        history = words(history_words, 1)
        await complete(client, url, model, history, 8)  # turn 1 (fills the prompt cache)
        _, warm = await complete(client, url, model, history + " w5 w6 w7 w8", 1)
        _, cold = await complete(client, url, model, "w60 " + words(history_words, 2) + " w5 w6 w7 w8", 1)
        return cold, warm


def run(kind: str, model: Path, args) -> dict:
    port = free_port()
    proc = start(kind, model, port, args.ominix_root if kind == "ominix" else None)
    url = f"http://127.0.0.1:{port}"
    name = str(model)
    try:
        result = {"tps": {}}
        for n in args.streams:
            try:
                result["tps"][n] = asyncio.run(throughput(url, name, n, args.tokens))
            except httpx.HTTPError as e:  # mlx-lm's server drops connections under load
                result["tps"][n] = None
                print(f"  {kind:7s} {n:2d} streams: failed ({type(e).__name__})", file=sys.stderr)
                continue
            print(f"  {kind:7s} {n:2d} streams: {result['tps'][n]:7.1f} tok/s", file=sys.stderr)
        try:
            result["cold"], result["warm"] = asyncio.run(second_turn(url, name, args.history))
        except httpx.HTTPError:
            result["cold"] = result["warm"] = None
        return result
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--variant", default="float32", choices=["float32", "bf16", "4bit", "8bit"])
    p.add_argument("--tokens", type=int, default=64, help="completion tokens per stream")
    p.add_argument("--history", type=int, default=2000, help="words (= tokens) of history for the second turn")
    p.add_argument("--no-mlx-lm", action="store_true")
    p.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "ominix-bench"))
    p.add_argument("--streams", dest="streams_csv", help="comma-separated stream counts (default 1,2,4,8,16; --quick 1,4)")
    p.add_argument("--ominix-root", help="run the OminiX server from this source tree (default: the installed one)")
    args = p.parse_args(argv)
    args.streams = [1, 4] if args.quick else [1, 2, 4, 8, 16]
    if args.streams_csv:
        args.streams = [int(n) for n in args.streams_csv.split(",")]
    if args.quick:
        args.tokens, args.history = 24, 500
    model = make_checkpoints(Path(args.cache_dir), [args.variant])[args.variant]
    results = {"ominix": run("ominix", model, args)}
    if not args.no_mlx_lm:
        results["mlx-lm"] = run("mlx-lm", model, args)
    print(f"\nsmall Qwen3 ({args.variant}), {args.tokens} tokens per stream, greedy /v1/completions")
    header = "streams  " + "  ".join(f"{k:>18s}" for k in results)
    print(header)
    for n in args.streams:
        cells = []
        for r in results.values():
            tps, one = r["tps"][n], r["tps"][args.streams[0]]
            cells.append("failed" if tps is None else f"{tps:8.1f} tok/s {tps / one:4.1f}x" if one else f"{tps:8.1f} tok/s")
        print(f"{n:7d}  " + "  ".join(f"{c:>18s}" for c in cells))
    for kind, r in results.items():
        if r["cold"] is None:
            print(f"{kind}: second turn failed")
            continue
        print(f"{kind}: second turn over {args.history} tokens: cold {r['cold']:.2f}s, warm {r['warm']:.3f}s "
              f"({r['cold'] / r['warm']:.1f}x faster)")
    if "mlx-lm" in results:
        for n in args.streams:
            ours, theirs = results["ominix"]["tps"][n], results["mlx-lm"]["tps"][n]
            if ours and theirs:
                print(f"OminiX / mlx-lm at {n} streams: {ours / theirs:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
