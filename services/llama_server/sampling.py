"""Greedy decoding under a grammar, checked on a shortlist first: the same tokens, without a full-vocabulary pass.

llama-cpp-python 0.3.36 samples through one llama.cpp chain (penalties, grammar, greedy) applied to every token of
the vocabulary. With a grammar (the judge's JSON schemas) the grammar step tests all ~152,000 of Qwen2.5's tokens
against the grammar at every step: JSON decoded at 14 tokens/s where free text runs at 23 (2-core machine).

At temperature 0 the answer is the highest-logit token the grammar allows, after penalties. Penalties with
repeat >= 1 and frequency/presence >= 0 only ever lower a logit, so every token outside the SHORTLIST highest raw
logits ends at or below the lowest raw logit of the shortlist (the floor). The same chain is therefore applied to
the shortlist alone; when the token it picks is allowed and lies strictly above the floor, it is the token the full
pass would pick, and it is accepted into the chain (grammar and penalty state advance exactly as llama.cpp's own
`llama_sampler_sample` advances them). Otherwise (nothing allowed in the shortlist, a tie at the floor, sampling
at temperature > 0, a logits processor, a penalty that could raise a logit) the stock full pass runs.

llama.cpp's own server does the same in spirit (it samples first and checks the grammar on the chosen token).
tests/test_model_server.py checks that both ways write the same replies.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

SHORTLIST = 64  # raw-logit candidates the chain sees first; the full pass is the fallback

_stock_sample: Any = None  # llama_cpp.Llama.sample, kept by use_greedy_grammar_shortlist()


def shortlist_token(chain: Any, ctx: Any, ridx: int, n_vocab: int, shortlist: int = SHORTLIST) -> int | None:
    """The chain's greedy pick among the `shortlist` highest logits, accepted into the chain; None if not provably
    the pick of the full vocabulary (then nothing was accepted)."""
    import llama_cpp
    import numpy as np

    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, ridx), shape=(n_vocab,))
    # in token-id order, as the full pass sees them: greedy keeps the first of equal maxima (the lowest id)
    top = np.sort(np.argpartition(logits, -shortlist)[-shortlist:])
    floor = float(logits[top].min())
    data = (llama_cpp.llama_token_data * shortlist)()
    for slot, token in zip(data, top.tolist()):
        slot.id, slot.logit, slot.p = token, float(logits[token]), 0.0
    cur = llama_cpp.llama_token_data_array(data=data, size=shortlist, selected=-1, sorted=False)
    llama_cpp.llama_sampler_apply(chain, ctypes.byref(cur))
    if not 0 <= cur.selected < cur.size:
        return None
    chosen = cur.data[cur.selected]
    if not math.isfinite(chosen.logit) or chosen.logit <= floor:
        return None
    llama_cpp.llama_sampler_accept(chain, chosen.id)
    return int(chosen.id)


def lowers_logits_only(kwargs: dict[str, Any]) -> bool:
    """True when the chain is penalties, grammar and greedy, with penalties that can only lower a logit."""
    return (kwargs.get("temp", 0.8) == 0.0 and kwargs.get("grammar") is not None
            and kwargs.get("logits_processor") is None and kwargs.get("mirostat_mode", 0) == 0
            and kwargs.get("repeat_penalty", 1.0) >= 1.0 and kwargs.get("frequency_penalty", 0.0) >= 0.0
            and kwargs.get("presence_penalty", 0.0) >= 0.0)


def shortlist_sample(self: Any, *args: Any, **kwargs: Any) -> int:
    """Llama.sample with the shortlist first for greedy grammar decoding (generate() calls it with keywords)."""
    if args or self._sampler is None or not lowers_logits_only(kwargs):
        return _stock_sample(self, *args, **kwargs)
    idx = kwargs.get("idx")
    ridx = idx - self.n_tokens if idx is not None else -1
    token = shortlist_token(self._sampler.sampler, self._ctx.ctx, ridx, self._n_vocab)
    return token if token is not None else self._sampler.sample(self._ctx, ridx)


def use_greedy_grammar_shortlist() -> None:
    """Make every Llama in this process decode greedy grammar replies through the shortlist (idempotent)."""
    global _stock_sample
    from llama_cpp.llama import Llama

    if Llama.sample is not shortlist_sample:
        _stock_sample = Llama.sample
        Llama.sample = shortlist_sample  # type: ignore[method-assign]
