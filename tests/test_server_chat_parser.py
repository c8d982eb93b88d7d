"""engine/chat.py: reasoning and tool-call parsing on realistic Qwen output, whole and streamed."""

import json
import random

import pytest

from ominix.engine.llm.chat import ChatOutputParser, collect, content_text, parse_reply, to_template_messages

QWEN3_THINK_AND_CALL = (
    "<think>\nThe user asks about the weather in Paris. I should call get_weather.\n</think>\n\n"
    "<tool_call>\n"
    '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n'
    "</tool_call>"
)
QWEN25_TWO_CALLS = (
    "I'll look both up.\n"
    "<tool_call>\n"
    '{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
    "</tool_call>\n"
    "<tool_call>\n"
    '{"name": "get_time", "arguments": {"tz": "Europe/Paris"}}\n'
    "</tool_call>"
)


def test_qwen3_reasoning_and_tool_call():
    reply = parse_reply(QWEN3_THINK_AND_CALL)
    assert reply.reasoning == "The user asks about the weather in Paris. I should call get_weather."
    assert reply.content is None
    [call] = reply.tool_calls
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris", "unit": "celsius"}
    assert call.id.startswith("call_")


def test_content_then_two_calls():
    reply = parse_reply(QWEN25_TWO_CALLS)
    assert reply.content == "I'll look both up."
    assert [c.name for c in reply.tool_calls] == ["get_weather", "get_time"]
    assert json.loads(reply.tool_calls[1].arguments) == {"tz": "Europe/Paris"}


def test_plain_answer_after_thinking_keeps_its_text():
    reply = parse_reply("<think>\nshort\n</think>\n\nParis is the capital of France.\n")
    assert reply.reasoning == "short"
    assert reply.content == "Paris is the capital of France.\n"
    assert reply.tool_calls == []


def test_empty_think_block_from_disabled_thinking():
    reply = parse_reply("<think>\n\n</think>\n\nHello!")
    assert reply.reasoning is None and reply.content == "Hello!"


def test_prompt_that_opened_think_starts_in_reasoning():
    reply = parse_reply("I should greet.\n</think>\n\nHi there.", in_reasoning=True)
    assert reply.reasoning == "I should greet." and reply.content == "Hi there."


def test_think_tag_in_the_middle_is_content():
    reply = parse_reply("Use the <think> tag like this.")
    assert reply.content == "Use the <think> tag like this." and reply.reasoning is None


def test_malformed_tool_call_is_returned_as_text():
    text = "<tool_call>\n{not json}\n</tool_call>"
    reply = parse_reply(text)
    assert reply.tool_calls == [] and reply.content == text


def test_unterminated_tool_call_still_parses_when_complete_json():
    reply = parse_reply('<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n')
    assert [c.name for c in reply.tool_calls] == ["f"]


def test_arguments_given_as_json_string():
    reply = parse_reply('<tool_call>{"name": "f", "arguments": "{\\"x\\": 2}"}</tool_call>')
    assert json.loads(reply.tool_calls[0].arguments) == {"x": 2}


def test_tools_off_leaves_tags_as_content():
    reply = parse_reply(QWEN25_TWO_CALLS, parse_tools=False)
    assert reply.tool_calls == [] and "<tool_call>" in reply.content


@pytest.mark.parametrize("text", [QWEN3_THINK_AND_CALL, QWEN25_TWO_CALLS, "<think>a</think>b <tool_call"])
def test_streaming_any_split_equals_whole(text):
    whole = parse_reply(text)
    rng = random.Random(0)
    for _ in range(30):
        parser = ChatOutputParser()
        deltas, i = [], 0
        while i < len(text):
            j = i + rng.randint(1, 6)
            deltas += parser.feed(text[i:j])
            i = j
        deltas += parser.finish()
        got = collect(deltas)
        assert (got.content, got.reasoning) == (whole.content, whole.reasoning)
        assert [(c.name, c.arguments) for c in got.tool_calls] == [
            (c.name, c.arguments) for c in whole.tool_calls
        ]


def test_streaming_never_leaks_a_partial_tag():
    parser = ChatOutputParser()
    out = []
    for piece in ["Let me check", ". <to", "ol_ca", "ll>\n{\"name\": \"f\", ", '"arguments": {}}\n</tool_call>']:
        out += parser.feed(piece)
    out += parser.finish()
    contents = [d.content for d in out if d.content]
    assert "".join(contents) == "Let me check."
    assert all("<" not in c for c in contents)


def test_message_conversion():
    msgs = to_template_messages([
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "tool_calls": [{"id": "1", "type": "function",
                                              "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "1", "content": "42"},
    ])
    assert msgs[0] == {"role": "system", "content": "be brief"}
    assert msgs[1]["content"] == "ab"
    assert msgs[2]["content"] == "" and msgs[2]["tool_calls"][0]["function"]["name"] == "f"
    assert msgs[3]["tool_call_id"] == "1"
    with pytest.raises(ValueError, match="image_url"):
        content_text([{"type": "image_url", "image_url": {"url": "x"}}])
