"""A llama-cpp-python chat handler that answers `tool_choice: "auto"` with structured OpenAI `tool_calls`.

Why it exists: llama-cpp-python 0.3.36's `chatml-function-calling` handler breaks with Qwen's tokenizer when
`tool_choice` is "auto" (../shared/NOTES.md): it lets the model pick between `functions.<name>:` and
`message:`, and when it picks `message:` it constrains the reply with the grammar meant for the *next*
function name, so the reply comes back as the text `functions.<name>:` with no `tool_calls`.

What this handler does instead, with the model's own chat template (the Hermes format that vLLM's
`--tool-call-parser hermes` parses on EKS: tools listed in `<tools>`, calls written as
`<tool_call>{"name": ..., "arguments": ...}</tool_call>`, results fed back as `<tool_response>`):

1. `tool_choice` "none", or no tools: plain chat, exactly as llama-cpp-python's default handler.
2. "auto": greedily generate the first few tokens of the reply. If they open a tool call (`<tool_call>`, or a
   JSON object starting with `"name"`, bare or in a ```json fence, the way small Qwen2.5-Coder models write
   it), the model has chosen a tool; otherwise the reply is an ordinary message, generated (or streamed)
   by the default handler.
3. A chosen tool, "required", or a named tool: generate the call under a grammar built from the tools'
   JSON schemas, so `name` is one of the offered tools and `arguments` is valid JSON for it; return it as
   a structured `tool_calls` entry (streamed as OpenAI chunks when asked).

Honest limits: one tool call per turn (no parallel calls); the decision is the model's own, so a 0.5B model
sometimes calls a tool it did not need. Register it with `register()`, then use chat_format "hermes-tools".
"""

from __future__ import annotations

import json
import re
import time
import uuid
import weakref
from collections.abc import Iterator
from typing import Any

HANDLER_NAME = "hermes-tools"
PEEK_TOKENS = 10  # enough for '```json\n{\n  "name"' or '<tool_call>\n{"name"'
CALL_PREFIX = "<tool_call>\n"
CALL_MAX_TOKENS = 512  # a tool call's JSON is short; the cap only stops a runaway argument

_FORMATTERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def looks_like_tool_call(text: str) -> bool:
    """Whether the start of a reply opens a tool call (Hermes `<tool_call>`, or a JSON object led by "name")."""
    head = text.lstrip()
    if head.startswith("<tool_call>"):
        return True
    head = re.sub(r"^```(?:json)?", "", head)
    compact = re.sub(r"\s+", "", head)
    target = '{"name"'
    return compact.startswith(target) or (compact.startswith("{") and target.startswith(compact))


def call_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON schema of one call to any of these tools: {"name": <a tool>, "arguments": <its parameters>}."""
    options = []
    for tool in tools:
        fn = tool.get("function") or {}
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": fn["name"]}, "arguments": params},
                "required": ["name", "arguments"],
            }
        )
    return options[0] if len(options) == 1 else {"anyOf": options}


def normalise_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages in the shape the model's chat template expects: text content, tool-call arguments as objects."""
    result = []
    for message in messages:
        msg = dict(message)
        content = msg.get("content")
        if isinstance(content, list):  # OpenAI content parts: keep the text parts
            msg["content"] = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        elif content is None:
            msg["content"] = ""
        calls = []
        for call in msg.get("tool_calls") or []:
            call = dict(call)
            fn = dict(call.get("function") or {})
            if isinstance(fn.get("arguments"), str):
                try:
                    fn["arguments"] = json.loads(fn["arguments"])
                except json.JSONDecodeError:
                    pass  # keep the string: the template prints it as it is
            call["function"] = fn
            calls.append(call)
        if calls:
            msg["tool_calls"] = calls
        result.append(msg)
    return result


def _formatter(llama: Any) -> Any:
    """The model's own chat template as a llama-cpp-python formatter (built once per model)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    if llama not in _FORMATTERS:
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError(
                f"{HANDLER_NAME}: the model file has no chat template (tokenizer.chat_template); "
                "use a chat model whose GGUF carries one, or another chat_format."
            )
        eos = llama.detokenize([llama.token_eos()], special=True).decode("utf-8", errors="ignore")
        bos = llama.detokenize([llama.token_bos()], special=True).decode("utf-8", errors="ignore")
        _FORMATTERS[llama] = Jinja2ChatFormatter(
            template=template, eos_token=eos, bos_token=bos, stop_token_ids=[llama.token_eos()]
        )
    return _FORMATTERS[llama]


def _plain_chat(llama: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, **kwargs: Any) -> Any:
    """Ordinary chat with the model's template (llama-cpp-python's default handler)."""
    handler = _formatter(llama).to_chat_handler()
    return handler(llama=llama, messages=messages, tools=tools, tool_choice=None, **kwargs)


def _prompt_tokens(llama: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[int]:
    prompt = _formatter(llama)(messages=messages, tools=tools).prompt
    return llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)


def _model_chooses_a_tool(llama: Any, prompt: list[int]) -> bool:
    peek = llama.create_completion(prompt=prompt, max_tokens=PEEK_TOKENS, temperature=0.0, stream=False)
    return looks_like_tool_call(peek["choices"][0]["text"])


def _generate_call(llama: Any, prompt: list[int], tools: list[dict[str, Any]], kwargs: dict[str, Any]) -> dict:
    from llama_cpp import llama_grammar

    try:
        grammar = llama_grammar.LlamaGrammar.from_json_schema(json.dumps(call_schema(tools)), verbose=False)
    except Exception:  # a schema the converter cannot express: still force valid JSON
        grammar = llama_grammar.LlamaGrammar.from_string(llama_grammar.JSON_GBNF, verbose=False)
    sampling = {
        k: kwargs[k]
        for k in ("temperature", "top_p", "top_k", "min_p", "typical_p", "seed", "repeat_penalty",
                  "presence_penalty", "frequency_penalty", "model")
        if kwargs.get(k) is not None
    }  # fmt: skip
    prefix = llama.tokenize(CALL_PREFIX.encode("utf-8"), add_bos=False, special=True)
    return llama.create_completion(
        prompt=prompt + prefix,
        max_tokens=max(kwargs.get("max_tokens") or 0, CALL_MAX_TOKENS),
        grammar=grammar,
        stream=False,
        **sampling,
    )


def _tool_calls(completion: dict, tools: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The generated call as OpenAI tool_calls, or None when it is not a complete call to an offered tool."""
    try:
        call = json.loads(completion["choices"][0]["text"])
    except json.JSONDecodeError:
        return None
    names = {t["function"]["name"] for t in tools}
    if not isinstance(call, dict) or call.get("name") not in names:
        return None
    arguments = call.get("arguments", {})
    return [
        {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(arguments, ensure_ascii=False)},
        }
    ]


def _response(completion: dict, tool_calls: list[dict[str, Any]] | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": tool_calls}
    finish = "tool_calls"
    if tool_calls is None:  # cut short (max_tokens) or not a call: hand back the text, say why it ended
        message = {"role": "assistant", "content": completion["choices"][0]["text"]}
        finish = completion["choices"][0]["finish_reason"] or "length"
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": completion["model"],
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": completion["usage"],
    }


def _chunks(response: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A finished response replayed as OpenAI stream chunks (role, then the call or text, then the finish)."""
    choice = response["choices"][0]
    base = {"id": response["id"], "object": "chat.completion.chunk", "created": response["created"],
            "model": response["model"]}  # fmt: skip
    yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": None},
                                "logprobs": None, "finish_reason": None}]}  # fmt: skip
    message = choice["message"]
    if message.get("tool_calls"):
        delta: dict[str, Any] = {"tool_calls": [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]}
    else:
        delta = {"content": message.get("content") or ""}
    yield {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}
    yield {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": choice["finish_reason"]}]}


def hermes_tools_handler(
    *,
    llama: Any,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    tool_choice: str | dict[str, Any] | None = None,
    functions: list[dict[str, Any]] | None = None,
    function_call: str | dict[str, Any] | None = None,
    stream: bool = False,
    **kwargs: Any,
) -> Any:
    """Chat completion with tools in the model's own (Hermes) format; structured tool_calls for "auto" too."""
    if functions and not tools:  # the legacy OpenAI names
        tools = [{"type": "function", "function": f} for f in functions]
    if function_call is not None and tool_choice is None:
        tool_choice = (function_call if isinstance(function_call, str)
                       else {"type": "function", "function": function_call})
    messages = normalise_messages(messages)
    if not tools or tool_choice == "none":
        return _plain_chat(llama, messages, None, stream=stream, **kwargs)
    candidates = tools
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        candidates = [t for t in tools if t["function"]["name"] == name]
        if not candidates:
            raise ValueError(f"tool_choice names {name!r}, which is not among the tools offered.")
    prompt = _prompt_tokens(llama, messages, tools)
    if tool_choice in (None, "auto") and not _model_chooses_a_tool(llama, prompt):
        return _plain_chat(llama, messages, tools, stream=stream, **kwargs)
    completion = _generate_call(llama, prompt, candidates, kwargs)
    response = _response(completion, _tool_calls(completion, candidates))
    return _chunks(response) if stream else response


def register() -> str:
    """Register the handler with llama-cpp-python under HANDLER_NAME (idempotent); return the name."""
    from llama_cpp.llama_chat_format import LlamaChatCompletionHandlerRegistry

    LlamaChatCompletionHandlerRegistry().register_chat_completion_handler(
        HANDLER_NAME, hermes_tools_handler, overwrite=True
    )
    return HANDLER_NAME
