"""Check a GGUF export against its transformers checkpoint: the same next-token log-probs.

:func:`check_export` runs before an export's file appears (:func:`charter.stages.export.
export_gguf`): llama.cpp must reproduce transformers' next-token log-probabilities on
:data:`CHECK_MESSAGES` within :data:`EXPORT_TOLERANCE`, else the file is removed.
:func:`compare_logits` serves the file with llama.cpp and measures how far its next-token
log-probabilities are from transformers' on the checkpoint, for any prompts.

torch, transformers and xllamacpp are imported only when a function runs.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from charter.errors import CharterError

log = logging.getLogger(__name__)
TOP_K = 10  # llama.cpp's most likely next tokens compared per position
# The largest next-token log-prob difference (llama.cpp on the export vs transformers in
# float32) an export may show. Measured, largest over 3 prompts and 3-5 positions: f32 2e-6
# on the tiny 2-layer Llama of tests/hf_tiny.py and 2e-4 on SmolLM2-135M; f16 7e-3 and 2e-2
# (the rounding of every weight to float16). The bounds sit 2.5-5x above the larger one, and
# below what a wrong tensor gives: one matrix of the tiny model scaled by 1.1 moves it 0.09.
EXPORT_TOLERANCE = {"f32": 1e-3, "f16": 5e-2}
# The check's prompts, rendered with the checkpoint's chat template.
CHECK_MESSAGES = ("Hello, how are you?", "Name three colours.", "What is 2 + 2?")
CHECK_TOKENS = 2  # greedy positions compared after each prompt's first next token


def check_export(checkpoint: Path, gguf_path: Path, dtype: str) -> float:
    """Check that llama.cpp on ``gguf_path`` reproduces transformers on ``checkpoint``.

    On failure ``gguf_path`` is removed, so a wrong export is never left to be served.

    Compares next-token log-probabilities (:func:`compare_logits`) on :data:`CHECK_MESSAGES`
    as chat prompts, at their first :data:`CHECK_TOKENS` + 1 positions.

    Returns:
        The largest difference, at most ``EXPORT_TOLERANCE[dtype]``.

    Raises:
        CharterError: The engines tokenize or predict differently, or the difference is over
            the tolerance (NaN counts as over); the message names both numbers.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
    prompts = list(CHECK_MESSAGES)
    if isinstance(tokenizer.chat_template, str):
        chats = [[{"role": "user", "content": text}] for text in CHECK_MESSAGES]
        prompts = [
            str(tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))
            for chat in chats
        ]
    tolerance = EXPORT_TOLERANCE[dtype]
    wrong = f"the GGUF export of '{checkpoint}' is wrong (the file was removed)"
    try:
        worst = max(compare_logits(checkpoint, gguf_path, prompts, max_tokens=CHECK_TOKENS))
    except CharterError as err:
        gguf_path.unlink(missing_ok=True)
        raise CharterError(f"{wrong}: {err}", exit_code=1) from None
    if not worst <= tolerance:
        gguf_path.unlink(missing_ok=True)
        raise CharterError(
            f"{wrong}: llama.cpp's next-token log-probs differ from transformers' by up to "
            f"{worst:.3g}, over the {dtype} tolerance {tolerance:g} "
            "(charter.stages.export_check.EXPORT_TOLERANCE)",
            exit_code=1,
        )
    log.info("GGUF check: log-probs within %.3g of transformers (%s)", worst, dtype)
    return worst


def compare_logits(
    checkpoint: Path, gguf_path: Path, prompts: Sequence[str], *, max_tokens: int = 0
) -> list[float]:
    """Measure how closely llama.cpp on ``gguf_path`` reproduces transformers on ``checkpoint``.

    Each prompt is tokenized by both (they must agree), then compared at its next token and
    at ``max_tokens`` further positions along llama.cpp's greedy continuation. At each
    position the difference is taken over llama.cpp's :data:`TOP_K` most likely tokens.

    Args:
        checkpoint: The Hugging Face checkpoint, run exactly in float32.
        gguf_path: Its GGUF export.
        prompts: Raw text, special tokens such as ``<|im_start|>`` allowed.
        max_tokens: Greedy tokens to follow after the first next token.

    Returns:
        Per prompt, the largest absolute difference between the engines' log-probabilities.

    Raises:
        CharterError: The tokenizations differ, or the engines' most likely tokens differ by
            more than a near tie (HF log-prob gap above twice the measured difference).
    """
    import httpx
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
    model: Any = AutoModelForCausalLM.from_pretrained(
        checkpoint, dtype=torch.float32, local_files_only=True
    )
    model.eval()
    encoded = [list(tokenizer(prompt)["input_ids"]) for prompt in prompts]
    forced = tokenizer("a", add_special_tokens=False)["input_ids"][0]
    from charter.backends.local import start_llama_server

    longest = max(map(len, encoded), default=0) + max_tokens + 64
    server = start_llama_server(
        gguf_path, parallel=1, context=longest, threads=os.cpu_count() or 1, exact=True
    )
    try:
        with httpx.Client(base_url=server.listening_address, timeout=120) as client:
            diffs = []
            for index, (prompt, ids) in enumerate(zip(prompts, encoded, strict=True)):
                llama_ids = _post(client, "/tokenize", {"content": prompt, "add_special": True})
                if llama_ids["tokens"] != ids:
                    raise CharterError(
                        f"prompt {index}: llama.cpp tokenizes it as {llama_ids['tokens'][:16]}, "
                        f"transformers as {ids[:16]}"
                    )
                steps = _llama_steps(client, ids, max_tokens, forced)
                context = ids + [top[0][0] for top in steps[:-1]]
                with torch.inference_mode():
                    logits = model(torch.tensor([context])).logits[0, len(ids) - 1 :]
                diffs.append(_difference(logits.double().log_softmax(-1), steps, index))
            return diffs
    finally:
        server = None  # the last reference: llama.cpp stops and frees the model


def _llama_steps(
    client: Any, ids: list[int], max_tokens: int, forced: int
) -> list[list[tuple[int, float]]]:
    """llama.cpp's top (token, log-prob) pairs at each position of its greedy continuation."""
    steps, context = [], list(ids)
    for _ in range(max_tokens + 1):
        # The server drops the log-probs of a sampled token that ends mid UTF-8 character,
        # so force a plain one; the log-probs reported are of the raw logits regardless.
        body = {"prompt": context, "n_predict": 1, "n_probs": TOP_K, "temperature": 0}
        body |= {"logit_bias": [[forced, 1000.0]], "cache_prompt": False}
        content = _post(client, "/v1/completions", body)["choices"][0]["logprobs"]["content"]
        top = [(entry["id"], entry["logprob"]) for entry in content[0]["top_logprobs"]]
        steps.append(top)
        context.append(top[0][0])
    return steps


def _difference(logprobs: Any, steps: list[list[tuple[int, float]]], index: int) -> float:
    """Largest log-prob difference over ``steps``; a CharterError if the argmax truly differs."""
    worst = 0.0
    for position, top in enumerate(steps):
        row = logprobs[position]
        diffs = [abs(float(row[token]) - logprob) for token, logprob in top]
        diff = math.inf if any(map(math.isnan, diffs)) else max(diffs)  # max() skips NaN
        best, llama_best = int(row.argmax()), top[0][0]
        gap = float(row[best] - row[llama_best])
        if best != llama_best and gap > 2 * diff:
            raise CharterError(
                f"prompt {index}, position {position}: transformers predicts token {best}, "
                f"llama.cpp token {llama_best} (log-prob gap {gap:.3g}); the export is wrong"
            )
        worst = max(worst, diff)
    return worst


def _post(client: Any, path: str, body: dict[str, Any]) -> Any:
    response = client.post(path, json=body)
    if response.status_code != 200:
        raise CharterError(f"llama.cpp {path} failed ({response.status_code}): {response.text}")
    return response.json()
