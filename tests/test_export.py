"""GGUF export: a tiny random Llama (see ``hf_tiny.py``) exported and run by llama.cpp.

The engines must agree on every prompt's tokens and, to float precision, on next-token
log-probabilities. The SmolLM2 round trip (embedded GGUF -> transformers -> GGUF) is slow
and runs only with ``-m slow``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("xllamacpp")

import gguf
import numpy as np
from hf_tiny import build_tiny_checkpoint
from safetensors.torch import load_file, save_file

from charter.errors import CharterError
from charter.stages.export import EXPORT_TOLERANCE, check_export, compare_logits, export_gguf

PROMPTS = [
    "Hello there, how are you today?",
    "<|im_start|>user\nName three colours: 1 2 33 444<|im_end|>\n<|im_start|>assistant\n",
    "The quick brown fox!!  jumps -- café 🙂\tover\n\n",
]
F32_TOLERANCE = EXPORT_TOLERANCE["f32"]  # measured about 3e-6, f16 about 5e-3
F16_TOLERANCE = EXPORT_TOLERANCE["f16"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("export") / "tiny")


def field(reader: gguf.GGUFReader, key: str) -> object:
    return reader.fields[key].contents()


def tied_digit_variant(checkpoint: Path, path: Path) -> Path:
    """The tiny model with tied embeddings and SmolLM2's digit-splitting pre-tokenizer."""
    shutil.copytree(checkpoint, path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | {"tie_word_embeddings": True}))
    weights = load_file(path / "model.safetensors")
    del weights["lm_head.weight"]  # save_pretrained drops it for tied models
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    spec = json.loads((path / "tokenizer.json").read_text())
    byte_level = spec["pre_tokenizer"]
    digits = {"type": "Digits", "individual_digits": True}
    spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [digits, byte_level]}
    (path / "tokenizer.json").write_text(json.dumps(spec))
    return path


def test_f32_export_matches_transformers(checkpoint: Path, tmp_path: Path) -> None:
    out = export_gguf(checkpoint, tmp_path / "tiny.f32.gguf", dtype="f32")
    diffs = compare_logits(checkpoint, out, PROMPTS, max_tokens=3)
    assert len(diffs) == 3 and max(diffs) < F32_TOLERANCE, diffs

    reader = gguf.GGUFReader(out)
    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "llama.block_count") == 2
    assert field(reader, "llama.attention.head_count_kv") == 2
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.pre") == "gpt-2"
    assert field(reader, "tokenizer.ggml.add_bos_token") is False
    template = (checkpoint / "chat_template.jinja").read_text()
    assert field(reader, "tokenizer.chat_template") == template
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert len(types) == 2 * 9 + 3 and "output.weight" in types
    assert set(types.values()) == {gguf.GGMLQuantizationType.F32}
    assert not list(tmp_path.glob(".*partial"))


def test_f16_export_keeps_norms_in_f32(checkpoint: Path, tmp_path: Path) -> None:
    out = export_gguf(checkpoint, tmp_path / "tiny.gguf")
    diffs = compare_logits(checkpoint, out, PROMPTS)
    assert max(diffs) < F16_TOLERANCE, diffs
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(out).tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.F16
    assert types["token_embd.weight"] == gguf.GGMLQuantizationType.F16
    assert types["blk.1.ffn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert types["output_norm.weight"] == gguf.GGMLQuantizationType.F32


def test_export_check_passes_on_a_correct_export(checkpoint: Path, tmp_path: Path) -> None:
    out = export_gguf(checkpoint, tmp_path / "tiny.gguf", check=False)
    worst = check_export(checkpoint, out, "f16")
    # Above zero: two engines were compared (an engine against itself gives exactly 0).
    assert 1e-4 < worst <= F16_TOLERANCE, worst
    assert out.is_file()


def test_export_check_fails_on_a_corrupted_tensor(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_tensor = gguf.GGUFWriter.add_tensor

    def scaled(writer: gguf.GGUFWriter, name: str, tensor: np.ndarray, **kwargs: Any) -> None:
        if name == "blk.1.ffn_down.weight":  # one matrix 1.5x too large
            tensor = (tensor * 1.5).astype(tensor.dtype)
        add_tensor(writer, name, tensor, **kwargs)

    monkeypatch.setattr(gguf.GGUFWriter, "add_tensor", scaled)
    pattern = r"differ from transformers' by up to (\S+), over the f16 tolerance 0\.05"
    with pytest.raises(CharterError, match=pattern) as caught:
        export_gguf(checkpoint, tmp_path / "out" / "tiny.gguf")
    found = re.search(pattern, str(caught.value))
    assert found and float(found[1]) > F16_TOLERANCE
    assert caught.value.exit_code == 1
    assert list((tmp_path / "out").iterdir()) == []  # neither the file nor its .partial


def test_tied_embeddings_and_digit_pre_tokenizer(checkpoint: Path, tmp_path: Path) -> None:
    tied = tied_digit_variant(checkpoint, tmp_path / "tied")
    out = export_gguf(tied, tmp_path / "tied.gguf", dtype="f32")
    reader = gguf.GGUFReader(out)
    assert "output.weight" not in {t.name for t in reader.tensors}
    assert field(reader, "tokenizer.ggml.pre") == "smollm"
    diffs = compare_logits(tied, out, [*PROMPTS, "12345 + 678 = 90"], max_tokens=2)
    assert max(diffs) < F32_TOLERANCE, diffs


def test_compare_logits_reports_a_different_model(checkpoint: Path, tmp_path: Path) -> None:
    tied = tied_digit_variant(checkpoint, tmp_path / "tied")
    wrong = export_gguf(tied, tmp_path / "tied.gguf", dtype="f32")  # another lm_head
    diffs = compare_logits(checkpoint, wrong, [PROMPTS[0], PROMPTS[2]])  # no digits
    assert min(diffs) > 1.0, diffs


def test_compare_logits_catches_a_tokenizer_mismatch(checkpoint: Path, tmp_path: Path) -> None:
    # The variant's GGUF splits digits one by one; the plain checkpoint's tokenizer does not.
    tied = tied_digit_variant(checkpoint, tmp_path / "tied")
    other = export_gguf(tied, tmp_path / "tied.gguf", dtype="f32")
    with pytest.raises(CharterError, match=r"prompt 0: llama\.cpp tokenizes it as"):
        compare_logits(checkpoint, other, ["Numbers: 1 22 333 4444 55555"])


def test_unsupported_architecture_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    neox = shutil.copytree(checkpoint, tmp_path / "neox")
    config = json.loads((neox / "config.json").read_text())
    (neox / "config.json").write_text(json.dumps(config | {"model_type": "gpt_neox"}))
    with pytest.raises(CharterError, match=r"'gpt_neox' is not supported \(supported: llama\)"):
        export_gguf(neox, tmp_path / "neox.gguf")
    assert not list(tmp_path.glob("*.gguf"))


def test_failed_export_leaves_no_file(checkpoint: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(checkpoint, tmp_path / "broken")
    spec = json.loads((broken / "tokenizer.json").read_text())
    spec["normalizer"] = {"type": "NFC"}  # llama.cpp's gpt2 tokenizer has no normalizer
    (broken / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(CharterError, match="only byte-level BPE tokenizers"):
        export_gguf(broken, tmp_path / "out" / "broken.gguf")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.slow
def test_smollm2_round_trip(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    markexpr = request.config.getoption("markexpr") or ""
    if "slow" not in markexpr or "not slow" in markexpr:
        pytest.skip("loads SmolLM2 into transformers (about a minute); run with -m slow")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from charter.models import embedded_gguf

    source = embedded_gguf()
    options = {"gguf_file": source.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(source.parent, **options)
    model = AutoModelForCausalLM.from_pretrained(source.parent, dtype="float32", **options)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it, although
    # its weights are already dequantised float32.
    model.hf_quantizer = None
    del model.config.quantization_config
    model.save_pretrained(tmp_path / "smollm2")
    tokenizer.save_pretrained(tmp_path / "smollm2")
    prompts = [
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
        "The three primary colours are",
        "def fibonacci(n):\n    ",
    ]
    for dtype, tolerance in (("f32", F32_TOLERANCE), ("f16", F16_TOLERANCE)):
        out = export_gguf(tmp_path / "smollm2", tmp_path / f"smollm2.{dtype}.gguf", dtype=dtype)
        diffs = compare_logits(tmp_path / "smollm2", out, prompts, max_tokens=4)
        assert max(diffs) < tolerance, (dtype, diffs)
