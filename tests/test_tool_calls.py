"""Issue I, item 2: tool calls survive the gateway — the real ``llamastudio serve``, the rig's real
llama-server, a tiny model whose chat template declares tools (``tests/rig/tools.py``), and the
real ``openai`` and ``anthropic`` SDKs as clients.

llama-server builds a grammar from the tools' JSON schemas, so the call's shape (names, required
keys, types) is the grammar's, whatever the random weights; the model's steering (see
``tests/rig/tools.py``) only makes the call start at once and end right after. Every string in
these schemas has an ``enum`` (a free string would come back empty: ``""``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from llamastudio.errors import InvalidInput
from llamastudio.gateway.toolchoice import named_tool_choice
from tests.rig.factory import BUILDERS, Vocab
from tests.rig.studio import Studio
from tests.rig.tools import write_tool_model

KEY = "gw-secret"
MODEL = "tools"
ARGS = ["-c", "2048", "-np", "1", "-t", "2"]
MAX_TOKENS = 96  # a forced call here takes ~40 tokens (~1 s on 2 idle cores: the grammar checks a
# 151,936-token vocab at every step the steered tokens do not fit)

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Paris", "Tokyo"]}, "days": {"type": "integer"}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
TIME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
    "required": ["zone"],
    "additionalProperties": False,
}
SCHEMAS = {"get_weather": WEATHER_SCHEMA, "get_time": TIME_SCHEMA}

# llama-server alone takes OpenAI's named tool_choice for "auto" (the model may answer in prose)
# and Anthropic's for "any tool" (it may call the other one); the gateway makes the choice
# explicit (gateway/toolchoice.py).


def oai_tool(name: str) -> Any:  # Any: the SDKs type these as their TypedDicts
    return {
        "type": "function",
        "function": {"name": name, "description": f"{name} for a place", "parameters": SCHEMAS[name]},
    }


def anthropic_tool(name: str) -> Any:
    return {"name": name, "description": f"{name} for a place", "input_schema": SCHEMAS[name]}


ASK: Any = [{"role": "user", "content": "What is the weather in Paris for 2 days?"}]


def check_arguments(name: str, arguments: dict[str, Any]) -> None:
    """What the grammar guarantees: exactly the schema's keys, each of its type (enum included)."""
    schema = SCHEMAS[name]
    assert set(arguments) == set(schema["required"]), arguments
    for key, value in arguments.items():
        prop = schema["properties"][key]
        if prop["type"] == "integer":
            assert isinstance(value, int) and not isinstance(value, bool), arguments
        else:
            assert value in prop["enum"], arguments


@pytest.fixture(scope="module")
def studio(
    tmp_path_factory: pytest.TempPathFactory, rig_bin: Callable[[str], Path], vocab: Vocab
) -> Iterator[Studio]:
    root = tmp_path_factory.mktemp("tools")
    write_tool_model(root / "tiny-tools.gguf")
    BUILDERS["qwen3"](root / "chatml.gguf", vocab)  # the factory's template: no tools
    with Studio(root / "studio", rig_bin("llama-server"), gateway_key=KEY) as s:
        s.configure(MODEL, model=str(root / "tiny-tools.gguf"), args=ARGS)
        s.configure("no-tools", model=str(root / "chatml.gguf"), args=ARGS)
        yield s


@pytest.fixture(scope="module")
def oai(studio: Studio) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{studio.gateway_url}/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def claude(studio: Studio) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=studio.gateway_url, api_key=KEY, max_retries=0, timeout=120)


def test_the_engine_renders_tools_with_the_models_template(studio: Studio) -> None:
    """llama-server (Jinja on by default in this build) reads the GGUF's Qwen2.5 template and
    reports it can describe tools and calls; read through the gateway (``/props?model=``)."""
    with studio.gateway() as gw:
        props = gw.get("/props", params={"model": MODEL})
    assert props.status_code == 200, props.text
    caps = props.json()["chat_template_caps"]
    assert caps["supports_tools"] and caps["supports_tool_calls"] and caps["supports_parallel_tool_calls"]
    assert "<tool_call>" in props.json()["chat_template"]


def test_a_template_without_tools_cannot_be_forced_to_call_one(studio: Studio) -> None:
    """The factory's models carry a ChatML template that never mentions tools: llama-server says
    so in its caps, builds no grammar, and would answer a *required* call in prose, 200, silently.
    The gateway says why instead; a request that does not force a call still goes through."""
    ask = {"model": "no-tools", "messages": ASK, "tools": [oai_tool("get_weather")], "max_tokens": 4}
    with studio.gateway() as gw:
        caps = gw.get("/props", params={"model": "no-tools"}).json()["chat_template_caps"]
        forced = gw.post("/v1/chat/completions", json={**ask, "tool_choice": "required"})
        named = gw.post(
            "/v1/messages",
            json={
                **ask,
                "tools": [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}],
                "tool_choice": {"type": "any"},
            },
        )
        free = gw.post("/v1/chat/completions", json={**ask, "tool_choice": "auto"})
    assert not caps["supports_tools"] and not caps["supports_tool_calls"]
    for r in (forced, named):
        assert r.status_code == 400, r.text
        assert "does not render tools" in r.json()["error"]["message"]
    assert free.status_code == 200, free.text
    assert "tool_calls" not in free.json()["choices"][0]["message"]


def test_required_tool_call_openai(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[oai_tool("get_weather")],
        tool_choice="required",
        max_tokens=MAX_TOKENS,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls
    assert calls and len(calls) == 1
    call = calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert isinstance(call.id, str) and call.id
    check_arguments("get_weather", json.loads(call.function.arguments))


def assemble(chunks: list[Any]) -> tuple[dict[int, dict[str, Any]], str | None]:
    """The streamed tool-call deltas of one choice, by index: id, name, arguments (joined)."""
    calls: dict[int, dict[str, Any]] = {}
    finish: str | None = None
    for chunk in chunks:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": "", "deltas": 0})
            call["deltas"] += 1
            if delta.id:
                assert call["id"] in (None, delta.id), (call, delta)  # an id is sent once (or repeated)
                call["id"] = delta.id
            if delta.function and delta.function.name:
                call["name"] += delta.function.name
            if delta.function and delta.function.arguments:
                call["arguments"] += delta.function.arguments
    return calls, finish


def test_required_tool_call_streamed_openai(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[oai_tool("get_weather")],
        tool_choice="required",
        max_tokens=MAX_TOKENS,
        stream=True,
    )
    calls, finish = assemble(list(stream))
    assert finish == "tool_calls"
    assert list(calls) == [0], calls
    call = calls[0]
    assert call["id"] and call["name"] == "get_weather"
    assert call["deltas"] > 1, call  # streamed in pieces, not one final blob
    check_arguments("get_weather", json.loads(call["arguments"]))


def test_tool_choice_naming_one_function_openai(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[oai_tool("get_weather"), oai_tool("get_time")],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=MAX_TOKENS,
    )
    calls = r.choices[0].message.tool_calls
    assert calls, r.choices[0]
    for c in calls:
        assert c.type == "function" and c.function.name == "get_time", calls
        check_arguments("get_time", json.loads(c.function.arguments))


def test_naming_an_undeclared_tool_is_refused_by_the_gateway(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(
            model=MODEL,
            messages=ASK,
            tools=[oai_tool("get_weather")],
            tool_choice={"type": "function", "function": {"name": "get_time"}},
            max_tokens=MAX_TOKENS,
        )
    body: Any = err.value.body
    assert (
        body["source"] == "studio" and "'get_time'" in body["message"] and "'get_weather'" in body["message"]
    )


def test_parallel_tool_calls_with_two_tools_openai(oai: openai.OpenAI) -> None:
    """llama.cpp guarantees well-formed calls to declared tools, not how many (≥ 1)."""
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[oai_tool("get_weather"), oai_tool("get_time")],
        tool_choice="required",
        parallel_tool_calls=True,
        max_tokens=MAX_TOKENS,
        stream=True,
    )
    calls, finish = assemble(list(stream))
    assert finish == "tool_calls" and calls
    assert sorted(calls) == list(range(len(calls)))  # indexes 0..n-1
    assert len({c["id"] for c in calls.values()}) == len(calls)  # distinct ids
    for call in calls.values():
        assert call["name"] in SCHEMAS
        check_arguments(call["name"], json.loads(call["arguments"]))


def test_tool_result_round_trip_openai(oai: openai.OpenAI) -> None:
    tools = [oai_tool("get_weather")]
    first = oai.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=tools,
        tool_choice="required",
        max_tokens=MAX_TOKENS,
    )
    message = first.choices[0].message
    assert message.tool_calls
    call = message.tool_calls[0]
    history: list[Any] = [
        *ASK,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"forecast": "sunny", "high_c": 21}'},
    ]
    second = oai.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=history,
        tools=tools,
        max_tokens=8,
    )
    assert second.status_code == 200
    reply = second.parse()
    assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")
    # the tool's answer reached the prompt: it is longer than the first one by at least its tokens
    assert reply.usage and first.usage and reply.usage.prompt_tokens > first.usage.prompt_tokens + 10


def test_tool_use_any_anthropic(claude: anthropic.Anthropic) -> None:
    msg = claude.messages.create(
        model=MODEL,
        max_tokens=MAX_TOKENS,
        messages=ASK,
        tools=[anthropic_tool("get_weather")],
        tool_choice={"type": "any"},
    )
    assert msg.stop_reason == "tool_use", msg
    uses = [b for b in msg.content if b.type == "tool_use"]
    assert len(uses) == 1
    use = uses[0]
    assert use.name == "get_weather" and use.id and isinstance(use.input, dict)
    check_arguments("get_weather", use.input)


def test_tool_use_named_streamed_anthropic(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model=MODEL,
        max_tokens=MAX_TOKENS,
        messages=ASK,
        tools=[anthropic_tool("get_weather"), anthropic_tool("get_time")],
        tool_choice={"type": "tool", "name": "get_time"},
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
    starts = [e for e in events if e.type == "content_block_start" and e.content_block.type == "tool_use"]
    assert starts, kinds
    partial = [
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert partial and json.loads("".join(partial))  # the input, streamed as JSON pieces
    uses = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and uses
    assert {u.name for u in uses} == {"get_time"}
    for use in uses:
        assert isinstance(use.input, dict)
        check_arguments("get_time", use.input)


def test_tool_result_round_trip_anthropic(claude: anthropic.Anthropic) -> None:
    tools = [anthropic_tool("get_weather")]
    first = claude.messages.create(
        model=MODEL,
        max_tokens=MAX_TOKENS,
        messages=ASK,
        tools=tools,
        tool_choice={"type": "any"},
    )
    use = next(b for b in first.content if b.type == "tool_use")
    history: list[Any] = [
        *ASK,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 C"}],
        },
    ]
    second = claude.messages.with_raw_response.create(
        model=MODEL,
        max_tokens=8,
        messages=history,
        tools=tools,
    )
    assert second.status_code == 200
    reply = second.parse()
    assert reply.type == "message" and reply.stop_reason in ("end_turn", "max_tokens", "tool_use")

    # llama-server counts the cached prefix apart from input_tokens
    def prompt(u: anthropic.types.Usage) -> int:
        return u.input_tokens + (u.cache_read_input_tokens or 0)

    assert prompt(reply.usage) > prompt(first.usage) + 5  # the tool's result reached the prompt


# -- a named tool choice, made explicit for llama-server (gateway/toolchoice.py) ----------------------
OAI_NAMED: Any = {"type": "function", "function": {"name": "get_time"}}


@pytest.mark.parametrize(
    ("path", "body", "tools", "choice"),
    [
        (  # OpenAI: tools narrowed to the named one, tool_choice "required"
            "/v1/chat/completions",
            {"tools": [oai_tool("get_weather"), oai_tool("get_time")], "tool_choice": OAI_NAMED},
            [oai_tool("get_time")],
            "required",
        ),
        (  # Anthropic: llama-server maps {"type": "tool"} to "required" itself: tools narrowed only
            "/v1/messages",
            {
                "tools": [anthropic_tool("get_weather"), anthropic_tool("get_time")],
                "tool_choice": {"type": "tool", "name": "get_time"},
            },
            [anthropic_tool("get_time")],
            {"type": "tool", "name": "get_time"},
        ),
    ],
)
def test_named_tool_choice_is_rewritten(path: str, body: dict[str, Any], tools: Any, choice: Any) -> None:
    out = json.loads(named_tool_choice(json.dumps({"model": "m", "messages": ASK, **body}).encode(), path))
    assert out == {"model": "m", "messages": ASK, "tools": tools, "tool_choice": choice}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"tools": [oai_tool("get_time")], "tool_choice": "required"}),
        ("/v1/chat/completions", {"tools": [oai_tool("get_time")], "tool_choice": {"type": "auto"}}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "no tool_choice key"}]}),
        ("/v1/messages", {"tools": [anthropic_tool("get_time")], "tool_choice": {"type": "any"}}),
        ("/v1/completions", {"prompt": "x", "tool_choice": OAI_NAMED}),  # not a chat route
        ("/v1/chat/completions", [{"tool_choice": OAI_NAMED}]),  # not an object: the engine says so
    ],
)
def test_other_bodies_keep_their_bytes(path: str, body: Any) -> None:
    raw = json.dumps(body, indent=1).encode()
    assert named_tool_choice(raw, path) is raw
    assert named_tool_choice(b'{"tool_choice": {', path) == b'{"tool_choice": {'  # not JSON


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"tools": [oai_tool("get_weather")], "tool_choice": OAI_NAMED}),
        ("/chat/completions", {"tool_choice": OAI_NAMED}),
        ("/v1/messages", {"tools": [anthropic_tool("get_weather")], "tool_choice": {"type": "tool"}}),
    ],
)
def test_naming_an_undeclared_tool_is_a_clear_400(path: str, body: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput, match=re.escape("which `tools` does not declare")) as err:
        named_tool_choice(json.dumps(body).encode(), path)
    assert err.value.status_code == 400


def test_the_rewritten_form_forces_the_named_tool_through_the_gateway(studio: Studio) -> None:
    """What the gateway sends llama-server for a named choice makes it call that tool (llama-server
    alone takes the named form for "auto" and may answer in prose)."""
    body = {
        "model": MODEL,
        "messages": ASK,
        "tools": [oai_tool("get_weather"), oai_tool("get_time")],
        "tool_choice": OAI_NAMED,
        "max_tokens": MAX_TOKENS,
    }
    sent = named_tool_choice(json.dumps(body).encode(), "/v1/chat/completions")
    with studio.gateway() as gw:
        r = gw.post("/v1/chat/completions", content=sent, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    calls = r.json()["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_time"]
    check_arguments("get_time", json.loads(calls[0]["function"]["arguments"]))
