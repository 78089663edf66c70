"""A stand-in for the parts of vLLM's offline API that ``vllm/…`` uses, run by transformers.

vLLM needs a GPU, so on CPU machines the ``vllm/…`` backend is tested against this module,
put in ``sys.modules["vllm"]``: ``LLM(model=…)``, ``LLM.get_tokenizer()``,
``LLM.generate(prompts, params, use_tqdm=False)`` with ``{"prompt_token_ids": …}`` prompts,
and ``SamplingParams``. Outputs have vLLM's shapes: ``prompt_logprobs`` is a list with None
first, then one ``{token_id: Logprob}`` per prompt token; ``outputs[0]`` has ``text``,
``token_ids`` and ``finish_reason``. The numbers come from the model itself, so the backend's
scores can be checked against the ``hf/…`` backend's. On a GPU box the real vLLM is tested
instead (tests/test_backend_contract.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any


@dataclass
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    seed: int | None = None
    stop: list[str] | None = None
    prompt_logprobs: int | None = None


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


class LLM:
    def __init__(self, model: str, **options: Any) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = model
        self.options = options
        self._tokenizer = AutoTokenizer.from_pretrained(model)
        self._model = AutoModelForCausalLM.from_pretrained(model).eval()

    def get_tokenizer(self) -> Any:
        return self._tokenizer

    def generate(
        self, prompts: list[dict[str, list[int]]], params: Any, use_tqdm: bool = True
    ) -> list[Any]:
        each = params if isinstance(params, list) else [params] * len(prompts)
        return [self._one(p["prompt_token_ids"], s) for p, s in zip(prompts, each, strict=True)]

    def _one(self, ids: list[int], params: SamplingParams) -> Any:
        import torch

        tensor = torch.tensor([ids])
        prompt_logprobs = None
        with torch.inference_mode():
            if params.prompt_logprobs is not None:
                logprobs = torch.log_softmax(self._model(tensor).logits[0].float(), dim=-1)
                prompt_logprobs = [None] + [
                    {token: Logprob(float(logprobs[at - 1, token]))}
                    for at, token in enumerate(ids) if at > 0
                ]  # fmt: skip
            torch.manual_seed(params.seed or 0)
            sampled = self._model.generate(
                tensor, attention_mask=torch.ones_like(tensor), max_new_tokens=params.max_tokens,
                do_sample=params.temperature > 0, temperature=params.temperature or None,
                top_p=params.top_p, pad_token_id=self._tokenizer.eos_token_id,
            )[0, len(ids) :].tolist()  # fmt: skip
        text = self._tokenizer.decode(sampled, skip_special_tokens=True)
        finish = "length" if len(sampled) >= params.max_tokens else "stop"
        reply = SimpleNamespace(text=text, token_ids=sampled, finish_reason=finish)
        return SimpleNamespace(prompt_token_ids=ids, prompt_logprobs=prompt_logprobs,
                               outputs=[reply], num_cached_tokens=0)  # fmt: skip
