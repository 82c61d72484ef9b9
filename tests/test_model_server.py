"""The local stand-in for vLLM: structured tool calls with tool_choice "auto", streaming, 404 for unknown models.

The server tests start the real llama.cpp server (services.llama_server.server) through the stack, in an isolated
state folder on free ports; the helpers below them are checked offline.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from openai import AuthenticationError, NotFoundError, OpenAI

from helpers.layers.models import servers as model_server
from helpers.local import stack
from services.llama_server import server as llama_server, tool_calls

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city name"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The current local time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
QUESTION = [{"role": "user", "content": "What is the weather in Paris right now?"}]


@pytest.fixture
def server(isolated_settings):
    stack.ensure("model-server")
    client = OpenAI(base_url=isolated_settings.model_server_url,
                    api_key=isolated_settings.model_server_api_key.get_secret_value())
    yield isolated_settings, client
    stack.down()


# ---------------------------------------------------------------- against the real server


@pytest.mark.services
def test_auto_tool_choice_returns_structured_tool_calls(server):
    settings, client = server
    reply = client.chat.completions.create(model=settings.served_chat_model, messages=QUESTION, tools=[WEATHER],
                                           tool_choice="auto", temperature=0)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments, dict) and isinstance(arguments["city"], str) and arguments["city"]


@pytest.mark.services
def test_the_tool_result_goes_back_to_the_model_and_the_call_is_structured_with_two_tools(server):
    settings, client = server
    reply = client.chat.completions.create(model=settings.served_chat_model, messages=QUESTION,
                                           tools=[WEATHER, TIME], tool_choice="required", temperature=0)
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name in {"get_weather", "get_time"}, "the grammar only allows offered tools"
    assert set(json.loads(call.function.arguments)) == {"city"}, "arguments follow the chosen tool's schema"
    follow_up = QUESTION + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 18, "sky": "sunny"})},
    ]
    again = client.chat.completions.create(model=settings.served_chat_model, messages=follow_up, tools=[WEATHER],
                                           tool_choice="none", temperature=0, max_tokens=40)
    assert again.choices[0].message.content and not again.choices[0].message.tool_calls


@pytest.mark.services
def test_streaming_text_and_streaming_a_tool_call(server):
    settings, client = server
    stream = client.chat.completions.create(model=settings.served_chat_model, stream=True, temperature=0,
                                            max_tokens=24,
                                            messages=[{"role": "user", "content": "Count from 1 to 10."}])
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 3 and "".join(pieces).strip()

    stream = client.chat.completions.create(model=settings.served_chat_model, messages=QUESTION, tools=[WEATHER],
                                            tool_choice="auto", temperature=0, stream=True)
    chunks = list(stream)
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "get_weather"
    assert isinstance(json.loads("".join(tc.function.arguments or "" for tc in calls)), dict)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.services
def test_a_health_check_during_a_stream_waits_instead_of_cutting_the_answer(server):
    settings, client = server
    stream = client.chat.completions.create(model=settings.served_chat_model, stream=True, temperature=0,
                                            max_tokens=32, messages=[{"role": "user", "content": "Count to 50."}])
    chunks = iter(stream)
    first = next(chunks)
    with ThreadPoolExecutor(1) as pool:
        listed = pool.submit(lambda: [m.id for m in client.models.list().data])  # what stack.ensure asks
        rest = list(chunks)
        assert listed.result(timeout=120) == [settings.served_chat_model]
    finish = [c.choices[0].finish_reason for c in [first, *rest] if c.choices and c.choices[0].finish_reason]
    assert finish == ["length"], "the stream ended before max_tokens: llama.cpp interrupted it"


@pytest.mark.services
def test_no_tools_means_plain_chat(server):
    settings, client = server
    reply = client.chat.completions.create(model=settings.served_chat_model, temperature=0, max_tokens=16,
                                           messages=[{"role": "user", "content": "Say hello."}])
    assert reply.choices[0].message.content and not reply.choices[0].message.tool_calls


@pytest.mark.services
def test_unknown_model_is_404_and_a_wrong_key_is_401(server):
    settings, client = server
    with pytest.raises(NotFoundError) as error:
        client.chat.completions.create(model="gpt-4o", messages=QUESTION, max_tokens=4)
    assert error.value.body["code"] == "model_not_found" and settings.served_chat_model in error.value.body["message"]
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=settings.model_server_url, api_key="wrong").chat.completions.create(
            model="gpt-4o", messages=QUESTION, max_tokens=4)
    assert [m.id for m in client.models.list().data] == [settings.served_chat_model]


def test_the_stack_starts_the_launcher_with_the_tool_handler(isolated_settings):
    argv = model_server.chat_server_command(isolated_settings)
    assert argv[1:3] == ["-m", "services.llama_server.server"]
    config = json.loads(open(argv[-1]).read())
    assert config["models"][0]["chat_format"] == tool_calls.HANDLER_NAME
    assert config["models"][0]["model_alias"] == isolated_settings.served_chat_model


# ---------------------------------------------------------------- offline


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<tool_call>\n{", True),
        ('```json\n{\n  "name": "get_weather"', True),
        ('{"name": "get', True),
        ("{\n ", True),  # too early to tell: a JSON object may still be a call
        ('{"city": "Paris"}', False),
        ("The weather in Paris", False),
        ("```python\nprint(1)", False),
    ],
)
def test_looks_like_tool_call(text, expected):
    assert tool_calls.looks_like_tool_call(text) is expected


def test_call_schema_allows_only_offered_tools():
    one = tool_calls.call_schema([WEATHER])
    assert one["properties"]["name"] == {"const": "get_weather"}
    assert one["properties"]["arguments"] == WEATHER["function"]["parameters"]
    both = tool_calls.call_schema([WEATHER, TIME])
    assert [o["properties"]["name"]["const"] for o in both["anyOf"]] == ["get_weather", "get_time"]


def test_normalise_messages_turns_argument_strings_into_objects():
    messages = tool_calls.normalise_messages([
        {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]},
    ])
    assert messages[0]["content"] == "hi there"
    assert messages[1]["content"] == "" and messages[1]["tool_calls"][0]["function"]["arguments"] == {"a": 1}


def _call_middleware(body: dict, authorization: str | None) -> tuple[int, dict | None, list[bytes]]:
    """Run OpenAIRequestGuard around a tiny ASGI app that echoes the body it received."""
    seen: list[bytes] = []

    async def app(scope, receive, send):
        more = True
        while more:
            message = await receive()
            seen.append(message.get("body", b""))
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    middleware = llama_server.OpenAIRequestGuard(app, known=["reasoning"], api_key="sk-test")
    raw = json.dumps(body).encode()
    incoming = [{"type": "http.request", "body": raw[:5], "more_body": True},
                {"type": "http.request", "body": raw[5:], "more_body": False}]
    sent: list[dict] = []

    async def receive():
        return incoming.pop(0)

    async def send(message):
        sent.append(message)

    headers = [(b"authorization", authorization.encode())] if authorization else []
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers}
    asyncio.run(middleware(scope, receive, send))
    status = sent[0]["status"]
    payload = json.loads(sent[1]["body"]) if status == 404 else None
    return status, payload, seen


def test_null_assistant_content_is_dropped():
    body = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": []}]}
    assert llama_server.drop_null_content(body) is True
    assert body["messages"][1] == {"role": "assistant", "tool_calls": []} and body["messages"][0]["content"] == "hi"
    assert llama_server.drop_null_content(body) is False


def test_middleware_rejects_unknown_names_and_replays_the_body_otherwise():
    status, payload, seen = _call_middleware({"model": "gpt-4o"}, "Bearer sk-test")
    assert status == 404 and payload["error"]["code"] == "model_not_found" and seen == []
    status, _payload, seen = _call_middleware({"model": "reasoning", "messages": []}, "Bearer sk-test")
    assert status == 200 and json.loads(b"".join(seen)) == {"model": "reasoning", "messages": []}
    status, _payload, seen = _call_middleware({"model": "gpt-4o"}, "Bearer wrong")
    assert status == 200 and seen, "without the key the app itself answers (401): no model names leak"


def test_slim_cache_states_keep_one_row_of_logits_and_restore_the_prefix(isolated_settings):
    from llama_cpp import Llama

    from helpers.layers.models import fetch

    small = "smollm2-135m-instruct-q4_1"  # the mechanics are the same on any model; the smallest registered is fastest
    llm = Llama(model_path=str(fetch(small)), n_ctx=512, n_threads=isolated_settings.threads,
                verbose=False)
    prompt = "Karpenter is a node autoscaler for Kubernetes. It launches"
    expected = llm.create_completion(prompt, max_tokens=8, temperature=0)["choices"][0]["text"]
    state = llama_server.slim_state(llm)  # what the prompt cache keeps after that completion
    assert state.scores.shape == (1, llm.n_vocab()), "the whole logits buffer was copied"
    assert state.n_tokens == llm.n_tokens > 8
    llm.reset()
    llm.create_completion("Something else entirely.", max_tokens=2, temperature=0)
    llama_server.slim_load(llm, state)  # what the cache does when a new prompt shares the saved one's prefix
    assert llm.n_tokens == state.n_tokens
    assert llm.create_completion(prompt, max_tokens=8, temperature=0)["choices"][0]["text"] == expected


def test_the_chat_model_server_keeps_a_prompt_cache(isolated_settings):
    config = model_server.server_config(isolated_settings, isolated_settings.chat_model,
                                        isolated_settings.served_chat_model, 1, embedding=False)
    assert config["models"][0]["cache"] is True and config["models"][0]["cache_size"] <= 512 << 20
    assert config["models"][0]["logits_all"] is False  # the server's default (True) costs prefill time and memory
    assert config["models"][0]["flash_attn"] is True  # fused attention: faster prompt prefill (first token)


def test_the_prompt_cache_keeps_one_entry_per_prompt_family():
    from types import SimpleNamespace

    cache = llama_server.prompt_family_cache_class()(capacity_bytes=1000)
    family = llama_server.FAMILY_PREFIX_TOKENS
    judge = tuple(range(family + 50))  # the judge's fixed instructions, then one question
    state = SimpleNamespace(llama_state_size=100)
    cache[judge + (1, 2)] = state
    cache[(7, 8, 9)] = state  # another prompt (the agent's draft): its own family
    cache[judge + (3, 4)] = state  # the next judge call replaces the first one's entry
    assert sorted(len(k) for k in cache.cache_state) == [3, family + 52]
    assert judge + (3, 4) in cache.cache_state and judge + (1, 2) not in cache.cache_state
    assert cache[judge + (5,)] is state, "a new question still finds the shared instructions"
    short = tuple(range(10))  # a short prompt the new one extends is covered by it too
    cache[short] = state
    cache[short + (99,)] = state
    assert short not in cache.cache_state and short + (99,) in cache.cache_state


def test_the_server_builds_its_prompt_cache_as_a_family_cache(monkeypatch):
    import llama_cpp

    monkeypatch.setattr(llama_cpp, "LlamaRAMCache", llama_cpp.LlamaRAMCache)  # restored after the test
    llama_server.use_prompt_family_cache()
    llama_server.use_prompt_family_cache()  # idempotent: not a subclass of a subclass
    assert llama_cpp.LlamaRAMCache.__name__ == "PromptFamilyCache"
    assert llama_cpp.LlamaRAMCache.__mro__[1] is llama_cpp.llama_cache.LlamaRAMCache


def test_greedy_grammar_decoding_through_the_shortlist_writes_the_same_replies(isolated_settings, monkeypatch):
    import json

    from llama_cpp import Llama, LlamaGrammar

    from helpers.layers.agent import rag_metrics
    from helpers.layers.models import fetch
    from services.llama_server import sampling

    llm = Llama(model_path=str(fetch(isolated_settings.chat_model)), n_ctx=1024, n_threads=isolated_settings.threads,
                verbose=False)
    grammar = LlamaGrammar.from_json_schema(json.dumps(rag_metrics.statements_schema()), verbose=False)
    prompts = [rag_metrics.ragas_prompt("statements", {"question": q, "answer": a}) for q, a in (
        ("Why is my GPU pod Pending?", "No GPU node pool matches the pod's tolerations, so Karpenter cannot place it."),
        ("What does HNSW do?", "HNSW builds a layered graph; a search walks it from the top layer down [1]."))]

    def replies() -> list[str]:
        return [llm.create_completion(p, max_tokens=48, temperature=0, repeat_penalty=1.1, grammar=grammar)
                ["choices"][0]["text"] for p in prompts]

    stock = replies()
    decided = []
    real_shortlist_token = sampling.shortlist_token
    monkeypatch.setattr(sampling, "shortlist_token", lambda *a, **k: decided.append(real_shortlist_token(*a, **k))
                        or decided[-1])
    monkeypatch.setattr(Llama, "sample", Llama.sample)  # put back after the test
    sampling.use_greedy_grammar_shortlist()
    assert replies() == stock, "the shortlist must pick exactly the tokens of the full pass"
    assert all(json.loads(r)["statements"] for r in stock)
    assert decided and sum(t is not None for t in decided) / len(decided) > 0.5, "the shortlist rarely decided"
    asked = len(decided)
    free = llm.create_completion(prompts[0], max_tokens=8, temperature=0)["choices"][0]["text"]
    assert free and len(decided) == asked, "without a grammar the stock path runs"
