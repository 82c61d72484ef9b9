"""Code the LiteLLM gateway loads from its config: the PII guardrail and the API-key check.

The proxy runs from its own environment (.venvs/litellm locally, the LiteLLM image on EKS), where this
file sits next to the gateway's config.yaml and is loaded by name (`gateway_hooks.PiiGuardrail`). It
needs only the standard library and LiteLLM; `find_pii` and `mask_pii` also work without LiteLLM, so the
workshop's own environment can show what the patterns match.
"""

from __future__ import annotations

import os
import re
import secrets
from typing import Any

try:  # inside the gateway's environment
    from litellm.integrations.custom_guardrail import CustomGuardrail
except ImportError:  # elsewhere only the pattern functions are usable
    CustomGuardrail = object  # type: ignore[assignment,misc]

# What the guardrail looks for, in the order it looks. Each match is replaced by its placeholder.
PII_PATTERNS: dict[str, re.Pattern[str]] = {
    # US Social Security numbers: 3-2-4 digits split by "-" or " ", without the never-issued
    # area numbers 000, 666 and 900-999, group 00 or serial 0000.
    "US_SSN": re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\w-])"),
    # e-mail addresses: local part @ domain with a dot and a 2+ letter top-level domain.
    "EMAIL": re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
    # phone numbers: North American (555) 123-4567, 555.123.4567, +1 555 123 4567, and international
    # numbers written with a leading +country code (+44 20 7946 0958).
    "PHONE": re.compile(
        r"(?<![\w+])(?:"
        r"(?:\+?1[ .-]?)?(?:\(\d{3}\)|\d{3})[ .-]?\d{3}[ .-]\d{4}"
        r"|\+\d{1,3}(?:[ .-]?\d{1,4}){2,5}"
        r")(?!\w)"
    ),
}
PLACEHOLDER = "[{}]"
ACTIONS = ("mask", "reject")


def find_pii(text: str) -> dict[str, int]:
    """How many of each kind of PII a text holds, e.g. {"EMAIL": 1} (never the values themselves)."""
    counts: dict[str, int] = {}
    for kind, pattern in PII_PATTERNS.items():
        found = len(pattern.findall(text))
        if found:
            counts[kind] = found
        text = pattern.sub(PLACEHOLDER.format(kind), text)
    return counts


def mask_pii(text: str) -> str:
    """The text with every e-mail address, phone number and US SSN replaced by a placeholder."""
    for kind, pattern in PII_PATTERNS.items():
        text = pattern.sub(PLACEHOLDER.format(kind), text)
    return text


def _text_slots(data: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(container, key) of every user-supplied string in a chat, completion or embedding request."""
    slots: list[tuple[Any, Any]] = []
    for message in data.get("messages") or []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            slots.append((message, "content"))
        elif isinstance(content, list):
            slots += [(part, "text") for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)]
    for field in ("input", "prompt"):
        value = data.get(field)
        if isinstance(value, str):
            slots.append((data, field))
        elif isinstance(value, list):
            slots += [(value, i) for i, item in enumerate(value) if isinstance(item, str)]
    return slots


class PiiGuardrail(CustomGuardrail):
    """A LiteLLM guardrail: masks (or rejects) e-mail addresses, phone numbers and US SSNs before the model sees them."""

    def __init__(self, pii_action: str = "mask", **kwargs: Any) -> None:
        if pii_action not in ACTIONS:
            raise ValueError(f"pii_action must be one of {ACTIONS}, not {pii_action!r}")
        self.pii_action = pii_action
        super().__init__(**kwargs)

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: str) -> dict:
        """Runs on every request before routing (and before the cache): mask in place, or refuse with 400."""
        from fastapi import HTTPException

        found: dict[str, int] = {}
        for container, key in _text_slots(data):
            for kind, count in find_pii(container[key]).items():
                found[kind] = found.get(kind, 0) + count
        if not found:
            return data
        if self.pii_action == "reject":
            kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(found.items()))
            raise HTTPException(
                status_code=400,
                detail={"error": f"Request blocked by the PII guardrail: it contains {kinds}. "
                                 "Remove personal data (e-mail addresses, phone numbers, SSNs) and retry."},
            )
        for container, key in _text_slots(data):
            container[key] = mask_pii(container[key])
        metadata = data.setdefault("metadata", {})
        if isinstance(metadata, dict):
            metadata["pii_masked"] = found
        return data


async def user_api_key_auth(request: Any, api_key: str) -> Any:
    """The gateway's key check when it has no database: only the master key passes; anything else is a clean 401.

    Configured with `custom_auth_settings: {mode: auto}`, so raising a plain Exception hands the request
    back to LiteLLM's own check: that happens for the master key, and for every key when a database
    (DATABASE_URL) holds virtual keys (the eks target). Without this, LiteLLM answers a wrong key with
    400 "No connected db." and a missing key with 500.
    """
    from litellm.proxy._types import ProxyException

    if os.environ.get("DATABASE_URL"):
        raise Exception("virtual keys are checked by LiteLLM against the database")
    master = os.environ.get("LITELLM_MASTER_KEY", "")
    if api_key and master and secrets.compare_digest(api_key.encode(), master.encode()):
        raise Exception("the master key is checked by LiteLLM")
    raise ProxyException(
        message="Authentication error: invalid or missing API key. Send the gateway's key as "
                "'Authorization: Bearer <key>'.",
        type="auth_error",
        param="api_key",
        code=401,
    )
