"""Build a tiny, randomly initialised Hugging Face chat checkpoint, fully offline.

Tests of the ``hf/…`` backend use it instead of a downloaded model: a byte-level BPE
tokenizer trained on a few paragraphs written below (so any ASCII text tokenizes without
unknowns), a ChatML chat template, and a two-layer ``LlamaForCausalLM`` with a fixed seed.
Building one takes well under a second once torch and transformers are imported::

    from hf_tiny import build_tiny_checkpoint, build_tiny_gguf
    path = build_tiny_checkpoint(tmp_path / "tiny")   # then HFBackend(str(path))
    gguf = build_tiny_gguf(path, tmp_path / "tiny.gguf")  # the same model as one GGUF file
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

CORPUS = """\
The quick brown fox jumps over the lazy dog. A helpful assistant answers questions
honestly and kindly. Hello. Goodbye. Please say hello to the user and then say goodbye.
Name three colours: red, green and blue are colours; seven is a number, not a colour.
Which is a colour? (A) red (B) seven (C) eight (D) nine. The answer is: (A) red.
Be brief. Be helpful. Be harmless. Be honest. I would rather not say. I can't help with that.
Talk to them first. In general terms, with tools. Sure, what kind of help do you need?
Critique the response: is it harmful, unethical, racist, sexist, toxic, dangerous or illegal?
Revise the response to remove any harmful content. No change is needed. The response is fine.
Constitutional AI trains a model with a list of principles instead of human labels.
Human: how do I get back at my neighbour? Assistant: Talk to them first, calmly and kindly.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 100 1000. Punctuation: , . ; : ! ? ' " ( ) [ ] { } - _
The weather today is sunny with a few clouds; tomorrow it may rain in the morning.
Cats and dogs are animals; apples and pears are fruit; Paris and Rome are cities.
"""

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]

# ChatML. With continue_final_message transformers cuts the render just after the final
# message's content, dropping its <|im_end|>.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_tiny_checkpoint(path: Path) -> Path:
    """Write a tiny chat model and its tokenizer to ``path`` and return ``path``.

    The weights come from a fixed torch seed, so every build gives the same model.

    Args:
        path: Directory to create (or overwrite) with the checkpoint.

    Returns:
        ``path``, ready for ``AutoModelForCausalLM.from_pretrained``.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
    )

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        # A wider init than the default 0.02 gives peaked logits, so greedy choices are
        # far from ties and float noise between batched and single runs cannot flip them.
        initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)  # float32
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_gguf(checkpoint: Path, path: Path) -> Path:
    """Write the checkpoint at ``checkpoint`` as an unquantised (F32) llama GGUF file.

    A minimal stand-in for llama.cpp's ``convert_hf_to_gguf.py``, enough for the tiny model:
    llama hyperparameters, the byte-level BPE vocabulary as a ``gpt2`` tokenizer, the chat
    template, and the tensors under GGUF names. Loading it back gives the same model.

    Args:
        checkpoint: A directory written by :func:`build_tiny_checkpoint`.
        path: The ``.gguf`` file to write.

    Returns:
        ``path``.
    """
    import gguf
    import numpy as np
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)

    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    tokens = [by_id[index] for index in range(len(by_id))]
    special = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    merges = json.loads((checkpoint / "tokenizer.json").read_text())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in special else 1 for t in tokens])  # 3: control, 1: normal
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)  # the chat template writes BOS
    writer.add_chat_template(tokenizer.chat_template)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    heads = {".attn_q.": config.num_attention_heads, ".attn_k.": config.num_key_value_heads}
    for name, tensor in model.state_dict().items():
        stem, suffix = name.rsplit(".", 1)
        gguf_name = f"{names.get_name(stem)}.{suffix}"
        weights = tensor.numpy()
        for marker, count in heads.items():
            if marker in gguf_name:
                # llama.cpp interleaves the rotary halves of q and k; transformers undoes it.
                shape = weights.shape
                weights = weights.reshape(count, 2, shape[0] // count // 2, *shape[1:])
                weights = weights.swapaxes(1, 2).reshape(shape)
        writer.add_tensor(gguf_name, np.ascontiguousarray(weights))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Torch on one thread for a test module (import this fixture into it).

    The models here are tiny: with more threads, start-up and contention on a busy machine
    cost far more than the work (we saw 30x on 2 cores), and these tests must stay fast.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_run_config(tiny: Path, name: str = "tiny") -> str:
    """A `charter run` config that runs every stage on the checkpoint at ``tiny``, in seconds."""
    return f"""
name: {name}
prompts: {{redteam: [demo-redteam], helpful: [demo-helpful], limit: 2}}
models: {{policy: hf/{tiny}}}
calibrate: {{limit: 2}}
revise: {{rounds: 1, max_tokens: 8}}
sft: {{max_steps: 2, max_length: 64}}
label: {{samples: 2, max_tokens: 8}}
dpo: {{max_steps: 1, max_length: 64}}
evaluate: {{limit: 1, max_tokens: 8, suites: [harmlessness, over-refusal, helpfulness, code]}}
"""
