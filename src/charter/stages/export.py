"""Export a Hugging Face checkpoint to GGUF for the embedded llama.cpp engine, and check it.

``charter train`` writes a transformers checkpoint; llama.cpp (``local/PATH.gguf``) runs it
much faster as one GGUF file. llama.cpp's ``convert_hf_to_gguf.py`` ships in no wheel, so
this module writes the file with the ``gguf`` package, for :data:`SUPPORTED_ARCHITECTURES`
and byte-level BPE tokenizers (``gpt2`` in GGUF terms)::

    from charter.stages.export import compare_logits, export_gguf
    gguf = export_gguf(Path("runs/sft/checkpoint"), Path("runs/sft/model.gguf"))
    compare_logits(Path("runs/sft/checkpoint"), gguf, ["Hello", "2 + 2 ="])  # [0.01, 0.02]

:func:`export_gguf` maps the config to ``llama.*`` keys, the tokenizer to ``tokenizer.*``
(chat template included) and the weights to llama.cpp's tensor names, permuting the rows of
Q and K (llama.cpp rotates interleaved pairs, transformers rotates halves). Before the file
appears it is checked (:func:`charter.stages.export_check.check_export`, re-exported here):
llama.cpp must reproduce transformers' next-token log-probabilities within a tolerance.

torch, transformers, safetensors, gguf and xllamacpp are imported only when a function runs.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Literal

from charter.errors import CharterError
from charter.stages.export_check import EXPORT_TOLERANCE, check_export, compare_logits

__all__ = ["EXPORT_TOLERANCE", "check_export", "compare_logits", "export_gguf"]

log = logging.getLogger(__name__)
VERSION = 1  # in cache keys and fingerprints: bump when what this stage writes changes

SUPPORTED_ARCHITECTURES = ("llama",)
# tokenizer.json pre-tokenizer steps -> llama.cpp's name for the same split (tokenizer.ggml.pre).
PRE_TOKENIZERS = {("ByteLevel",): "gpt-2", ("Digits", "ByteLevel"): "smollm"}


def _read_config(checkpoint: Path) -> dict[str, Any]:
    """Read ``config.json``, refusing architectures and features the exporter cannot write."""
    try:
        config: dict[str, Any] = json.loads((checkpoint / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise CharterError(f"cannot read the checkpoint config in '{checkpoint}': {err}") from None
    arch = config.get("model_type")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise CharterError(
            f"cannot export '{checkpoint}' to GGUF: architecture '{arch}' is not supported "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    unsupported = {
        "rope scaling": rope.get("rope_type", rope.get("type", "default")) != "default",
        "attention bias": config.get("attention_bias", False),
        "MLP bias": config.get("mlp_bias", False),
        "activation other than silu": config.get("hidden_act", "silu") != "silu",
    }
    for feature, present in unsupported.items():
        if present:
            raise CharterError(f"cannot export '{checkpoint}' to GGUF: {feature} is not supported")
    return config


def _llama_keys(config: dict[str, Any]) -> dict[str, Any]:
    """The ``llama.*`` hyperparameters, keyed by their ``GGUFWriter.add_*`` method suffix."""
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or {}  # transformers 5 moved rope_theta in here
    return {
        "context_length": config["max_position_embeddings"],
        "embedding_length": config["hidden_size"],
        "block_count": config["num_hidden_layers"],
        "feed_forward_length": config["intermediate_size"],
        "head_count": heads,
        "head_count_kv": config.get("num_key_value_heads") or heads,
        "key_length": head_dim,
        "value_length": head_dim,
        "rope_dimension_count": head_dim,
        "rope_freq_base": float(config.get("rope_theta") or rope.get("rope_theta", 10000.0)),
        "layer_norm_rms_eps": float(config["rms_norm_eps"]),
        "vocab_size": config["vocab_size"],
    }


def export_gguf(
    checkpoint: Path, out: Path, *, dtype: Literal["f32", "f16"] = "f16", check: bool = True
) -> Path:
    """Write the Hugging Face checkpoint at ``checkpoint`` as one GGUF file llama.cpp runs.

    Args:
        checkpoint: A ``save_pretrained`` directory: ``config.json``, safetensors weights,
            ``tokenizer.json`` and the tokenizer's config with its chat template.
        out: The ``.gguf`` file to write; it appears only once complete and checked.
        dtype: Storage type of the weight matrices; norms stay float32 either way.
        check: Run :func:`check_export` on the file before it appears (loads the checkpoint
            in transformers and the file in llama.cpp).

    Returns:
        ``out``.

    Raises:
        CharterError: The architecture, a config feature or the tokenizer is unsupported, or
            the written file fails :func:`check_export` (it is removed).
    """
    if dtype not in ("f32", "f16"):
        raise CharterError(f"GGUF export dtype must be f32 or f16, got '{dtype}'")
    config = _read_config(checkpoint)
    keys = _llama_keys(config)
    import gguf

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    writer = gguf.GGUFWriter(partial, "llama")
    log.info("exporting %s to %s (%s)", checkpoint, out, dtype)
    try:
        writer.add_name(checkpoint.resolve().name)
        file_type = gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16
        writer.add_file_type(file_type)
        for key, value in keys.items():
            getattr(writer, f"add_{key}")(value)
        _add_tokenizer(writer, checkpoint, keys["vocab_size"])
        tied = bool(config.get("tie_word_embeddings", False))
        _add_tensors(writer, checkpoint, keys, tied, dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        if check:
            check_export(checkpoint, partial, dtype)
        os.replace(partial, out)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    return out


def _pre_tokenizer(spec: dict[str, Any]) -> str:
    """llama.cpp's name for the pre-tokenizer in ``tokenizer.json``, or a CharterError."""

    def step(part: dict[str, Any]) -> str:
        if part.get("type") == "ByteLevel":
            plain = part.get("use_regex", True) and not part.get("add_prefix_space", False)
            return "ByteLevel" if plain else json.dumps(part)
        if part.get("type") == "Digits" and part.get("individual_digits"):
            return "Digits"
        return json.dumps(part)

    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    steps = tuple(step(part) for part in parts)
    bpe = spec.get("model", {}).get("type") == "BPE" and not spec.get("normalizer")
    if not bpe or steps not in PRE_TOKENIZERS:
        raise CharterError(
            "cannot export the tokenizer to GGUF: only byte-level BPE tokenizers are supported "
            f"(pre-tokenizer steps {steps}; known: {sorted(PRE_TOKENIZERS)})"
        )
    return PRE_TOKENIZERS[steps]


def _add_tokenizer(writer: Any, checkpoint: Path, vocab_size: int) -> None:
    """Write the vocabulary, merges, special tokens and chat template as llama.cpp reads them."""
    import gguf
    from transformers import AutoTokenizer

    try:
        spec = json.loads((checkpoint / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CharterError(f"cannot read the tokenizer in '{checkpoint}': {err}") from None
    tokenizer = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise CharterError(f"'{checkpoint}': the tokenizer has ids beyond vocab_size {vocab_size}")
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):  # ids the tokenizer never produces pad the embedding rows
        tokens.append(by_id.get(index, f"[PAD{index}]"))
        if index not in by_id:
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            special = added[index].special
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(spec))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    merges = spec["model"].get("merges", [])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    ids = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id}
    ids |= {"pad": tokenizer.pad_token_id, "unk": tokenizer.unk_token_id}
    for name, value in ids.items():
        if value is not None:
            getattr(writer, f"add_{name}_token_id")(value)
    # Whether the tokenizer adds BOS/EOS to plain text lives in its post-processor; ask it.
    sample = list(tokenizer("a")["input_ids"])
    writer.add_add_bos_token(ids["bos"] is not None and sample[0] == ids["bos"])
    writer.add_add_eos_token(ids["eos"] is not None and sample[-1] == ids["eos"])
    if isinstance(tokenizer.chat_template, str):
        writer.add_chat_template(tokenizer.chat_template)


def _weight_files(checkpoint: Path) -> list[Path]:
    index = checkpoint / "model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text())["weight_map"].values())
        return [checkpoint / shard for shard in sorted(shards)]
    files = sorted(checkpoint.glob("*.safetensors"))
    if not files:
        raise CharterError(f"'{checkpoint}' has no .safetensors weights to export")
    return files


def _add_tensors(
    writer: Any, checkpoint: Path, keys: dict[str, Any], tied: bool, dtype: str
) -> None:
    """Add every weight under its llama.cpp name, Q and K permuted, matrices in ``dtype``."""
    import gguf
    import numpy as np
    import torch
    from safetensors import safe_open

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, keys["block_count"])
    heads = {"q_proj": keys["head_count"], "k_proj": keys["head_count_kv"]}
    for path in _weight_files(checkpoint):
        with safe_open(str(path), framework="pt") as weights:
            for key in weights.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if key.endswith("rotary_emb.inv_freq") or (tied and key == "lm_head.weight"):
                    continue  # recomputed by llama.cpp / the same matrix as token_embd
                stem, suffix = key.rsplit(".", 1)
                name = names.get_name(stem)
                if name is None:
                    raise CharterError(f"cannot export '{checkpoint}': unknown tensor '{key}'")
                array = weights.get_tensor(key).to(torch.float32).numpy()
                count = next((n for part, n in heads.items() if f".{part}" in stem), None)
                if count is not None:
                    # llama.cpp rotates interleaved pairs of each head; transformers rotates
                    # its two halves. Reorder the rows so both compute the same rotation.
                    shape = array.shape
                    array = array.reshape(count, 2, shape[0] // count // 2, *shape[1:])
                    array = array.swapaxes(1, 2).reshape(shape)
                if dtype == "f16" and array.ndim > 1:
                    array = array.astype(np.float16)
                writer.add_tensor(f"{name}.{suffix}", np.ascontiguousarray(array))
