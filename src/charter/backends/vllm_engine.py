"""``vllm/…``: a model run in this process by vLLM, for GPU machines (optional extra).

    pip install 'charter[vllm]'
    charter revise --model vllm/Qwen/Qwen2.5-7B-Instruct --concurrency 256 …
    charter label --labeller vllm//models/my-checkpoint …     # a local folder

One ``vllm.LLM`` per backend, built on first use. ``generate`` hands vLLM the whole batch —
continuous batching and prefix caching are vLLM's — with a seed per conversation, so a
result does not depend on its batch. ``choice_logprobs`` appends each choice's tokens to the
prompt and reads their log-probabilities from ``prompt_logprobs``: one prefill, no sampling,
the same numbers :class:`charter.backends.hf.HFBackend` computes. Prompts are rendered with
the checkpoint's chat template, as the ``hf/…`` backend does.

vLLM needs a GPU and is not a dependency of Charter; without it this backend says so in one
line. docs/scale-out.md gives the commands for a GPU box.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from charter.backends.base import Completion, GenerationConfig, request_seed
from charter.backends.hf import chat_prompt_ids
from charter.errors import CharterError
from charter.records import Conversation, Usage

log = logging.getLogger(__name__)

VLLM_MISSING = (
    "the vllm/… backend needs vLLM and a GPU: pip install 'charter[vllm]' (see "
    "docs/scale-out.md); on a CPU machine use local/… or openai/… instead"
)


class VLLMBackend:
    """``vllm.LLM`` in this process behind Charter's two calls."""

    def __init__(
        self, model: str, *, concurrency: int | None = None, **engine_options: Any
    ) -> None:
        try:
            import vllm  # type: ignore[import-not-found, unused-ignore]  # optional, GPU only
        except ImportError:
            raise CharterError(VLLM_MISSING) from None
        self._vllm = vllm
        self.name = f"vllm/{model}"
        self.model = model
        # max_num_seqs is vLLM's batch: how many sequences it decodes together.
        self.engine_options = {"enable_prefix_caching": True, **engine_options}
        if concurrency:
            self.engine_options["max_num_seqs"] = concurrency
        self._llm: Any = None
        self.tokenizer: Any = None
        self.totals = Usage()

    def _engine(self) -> Any:
        if self._llm is None:
            log.info("loading %s in vLLM", self.model)
            try:
                self._llm = self._vllm.LLM(model=self.model, **self.engine_options)
            except Exception as err:  # vLLM raises many kinds: no GPU, bad path, OOM …
                message = " ".join(str(err).split())[:300]
                raise CharterError(f"vLLM could not load {self.model}: {message}") from None
            self.tokenizer = self._llm.get_tokenizer()
        return self._llm

    def generate(
        self, conversations: Sequence[Conversation], config: GenerationConfig
    ) -> list[Completion]:
        if not conversations:
            return []
        llm = self._engine()
        prompts = [{"prompt_token_ids": self._encode(c)} for c in conversations]
        params = [
            self._vllm.SamplingParams(
                temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens,
                seed=request_seed(config.seed, c), stop=list(config.stop) or None,
            )
            for c in conversations
        ]  # fmt: skip
        start = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        latency = (time.perf_counter() - start) / len(conversations)  # the batch's, shared
        completions = []
        for output in outputs:
            reply = output.outputs[0]
            completion = Completion(
                text=reply.text, finish_reason=reply.finish_reason or "stop",
                prompt_tokens=len(output.prompt_token_ids),
                cached_tokens=int(getattr(output, "num_cached_tokens", 0) or 0),
                completion_tokens=len(reply.token_ids), latency_s=latency,
            )  # fmt: skip
            self.totals += completion.usage()
            completions.append(completion)
        return completions

    def choice_logprobs(self, conversation: Conversation, choices: Sequence[str]) -> list[float]:
        """Exact log-probability of each choice's tokens after the prompt, from one prefill.

        As with ``hf/…``, prompt and choice are tokenized separately and their ids joined.
        """
        llm = self._engine()
        prompt = self._encode(conversation)
        choice_ids = [self.tokenizer.encode(c, add_special_tokens=False) for c in choices]
        if not all(choice_ids):
            raise CharterError(f"{self.name}: every choice needs at least one token: {choices!r}")
        # prompt_logprobs=1: each position lists its actual token (plus the top one).
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        outputs = llm.generate(
            [{"prompt_token_ids": prompt + ids} for ids in choice_ids], params, use_tqdm=False
        )
        scores = []
        for output, ids in zip(outputs, choice_ids, strict=True):
            positions = output.prompt_logprobs[len(prompt) :]
            scores.append(
                sum(float(at[token].logprob) for at, token in zip(positions, ids, strict=True))
            )
            self.totals += Usage(calls=1, prompt_tokens=len(output.prompt_token_ids))
        return scores

    def close(self) -> None:
        """Drop the engine so its GPU memory can be freed."""
        self._llm = None

    def _encode(self, conversation: Conversation) -> list[int]:
        return chat_prompt_ids(self.tokenizer, conversation, self.name)
