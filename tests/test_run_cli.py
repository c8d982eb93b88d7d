"""`ominix run` end to end in a subprocess: one-shot prompt, piped stdin, interactive chat on a tty."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time

import pytest

from ominix.engine.llm.generate import generate
from ominix.engine.llm.sample import SamplingParams
from ominix.engine.load import load
from tests.checkpoints import build_checkpoint

MAX = 8


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("run") / "qwen3", "qwen3")


@pytest.fixture(scope="module")
def reference(checkpoint):
    """What the CLI must print for a conversation: greedy generation in-process."""
    model, tokenizer = load(checkpoint)

    def answer(messages, **template_kwargs):
        prompt = tokenizer.apply_chat_template(messages, **template_kwargs)
        return generate(model, tokenizer, prompt, SamplingParams(temperature=0), max_tokens=MAX).text

    return answer


def ominix(*args, input=None, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "ominix", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )


def test_run_one_prompt(checkpoint, reference):
    result = ominix("run", str(checkpoint), "Hello there", "--temp", "0", "--max-tokens", str(MAX))
    assert result.returncode == 0, result.stderr
    assert result.stdout == reference([{"role": "user", "content": "Hello there"}]) + "\n"


def test_run_piped_stdin_system_and_no_think(checkpoint, reference):
    args = ["run", str(checkpoint), "--temp", "0", "--max-tokens", str(MAX), "--system", "Be brief.", "--no-think"]
    result = ominix(*args, "--verbose", input="What is 2+2?\n")
    assert result.returncode == 0, result.stderr
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?\n"}]
    assert result.stdout == reference(messages, enable_thinking=False) + "\n"
    for figure in ("prompt eval count:", "prompt eval rate:", "eval count:", "eval rate:", "time to first token:", "peak memory:"):
        assert figure in result.stderr


def test_run_errors_are_one_line(tmp_path):
    result = ominix("run", str(tmp_path), "hi")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in result.stderr
    result = ominix("run", str(tmp_path), "hi", "--max-tokens", "0")
    assert result.returncode != 0 and "Traceback" not in result.stderr


def _chat_on_tty(args, lines, timeout=120):
    """Drive `ominix run` with a real terminal on stdin/stdout, typing `lines` one by one."""
    import pty

    master, slave = pty.openpty()
    # The child becomes a session leader (start_new_session) and takes the pty as its controlling
    # terminal, so Ctrl-C (\x03) turns into SIGINT. A small launcher does that before exec, because
    # a preexec_fn is unsafe in this multi-threaded test process (torch and MLX threads).
    launcher = (
        "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
        "os.execv(sys.executable, [sys.executable, '-m', 'ominix', *sys.argv[1:]])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher, *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        close_fds=True,
        start_new_session=True,
    )
    os.close(slave)
    output, pending, deadline = b"", list(lines), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            # Type the next line only once the program asks for it.
            if pending and output.count(b">>> ") > len(lines) - len(pending):
                line = pending.pop(0)
                if line == "\x03":
                    # Let input() reach its read(): a SIGINT landing just before it only sets a flag
                    # that Python checks when the read returns (a person never types that fast).
                    time.sleep(0.5)
                os.write(master, (line if line == "\x03" else line + "\n").encode())
            if proc.poll() is not None and not ready:
                break
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"`ominix run` did not finish; terminal output:\n{output.decode('utf-8', 'replace')}")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return proc.returncode, output.decode("utf-8", "replace").replace("\r\n", "\n")


def test_interactive_chat_keeps_history_and_commands(checkpoint, reference):
    lines = ["/system Be brief.", "Hello", "\x03", "And then?", "/clear", "Hello", "/?", "/bye"]
    code, out = _chat_on_tty(["run", str(checkpoint), "--temp", "0", "--max-tokens", str(MAX)], lines)
    assert code == 0, out
    system = {"role": "system", "content": "Be brief."}
    first = reference([system, {"role": "user", "content": "Hello"}])
    second = reference(
        [system, {"role": "user", "content": "Hello"}, {"role": "assistant", "content": first},
         {"role": "user", "content": "And then?"}]
    )
    assert "Use Ctrl + d or /bye to exit." in out  # Ctrl-C at the prompt keeps the session
    assert "Set system message." in out and "Cleared session context." in out and "/bye" in out
    assert f"Hello\n{first}\n" in out
    assert f"And then?\n{second}\n" in out
    # After /clear the same question gets the same answer as the first time (history is gone).
    after_clear = out[out.index("Cleared session context.") :]
    assert f"Hello\n{first}\n" in after_clear
    assert "/system TEXT" in after_clear  # the help text


def test_later_turns_reuse_the_conversation_cache(checkpoint, reference):
    """The second turn prefills only what is new, and answers exactly as a fresh prefill would."""
    lines = ["Hello", "And then?", "/bye"]
    code, out = _chat_on_tty(["run", str(checkpoint), "--temp", "0", "--max-tokens", str(MAX), "--verbose"], lines)
    assert code == 0, out
    first = reference([{"role": "user", "content": "Hello"}])
    second = reference([{"role": "user", "content": "Hello"}, {"role": "assistant", "content": first},
                        {"role": "user", "content": "And then?"}])
    assert f"Hello\n{first}\n" in out and f"And then?\n{second}\n" in out
    counts = re.findall(r"prompt eval count:\s+(\d+) token\(s\), (\d+) cached", out)
    assert len(counts) == 2 and counts[0][1] == "0"
    assert int(counts[1][1]) > 0  # the first turn's prompt came from the cache
