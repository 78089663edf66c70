"""``hf/…``: a local Hugging Face transformers checkpoint, run in this process.

The part after ``hf/`` is a path: a checkpoint directory (``config.json``, weights and a
tokenizer with a chat template, as written by ``save_pretrained``) or a ``.gguf`` file, which
transformers dequantises on load. Nothing is downloaded::

    charter revise --model hf/./checkpoints/qwen2.5-0.5b-instruct ...
    charter revise --model hf/models/tiny.Q8_0.gguf ...

Prompts are rendered with the tokenizer's chat template. Greedy requests (temperature 0) are
batched with left padding; sampled ones run one conversation at a time, each seeded with
:func:`~charter.backends.base.request_seed`, so a result does not depend on its batch.
``choice_logprobs`` reads exact log-probabilities from the logits of one forward pass.

torch and transformers are imported only when an ``HFBackend`` is built; install them with
``pip install torch==2.13.0 && pip install 'charter[hf]'``.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from charter.backends.base import Completion, GenerationConfig, request_seed
from charter.errors import CharterError
from charter.records import Conversation

INSTALL_HINT = "pip install torch==2.13.0 && pip install 'charter[hf]'"


def _import_hf() -> tuple[Any, Any]:
    """Import torch and transformers, or say how to install them."""
    try:
        torch = importlib.import_module("torch")
        transformers = importlib.import_module("transformers")
    except ImportError as exc:
        raise CharterError(
            f"the hf backend needs torch and transformers ({exc}); install them with: "
            f"{INSTALL_HINT}"
        ) from exc
    return torch, transformers


def _checkpoint_path(model: str) -> Path:
    """The checkpoint directory or ``.gguf`` file ``model`` names, checked to exist."""
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path
    if path.is_dir() and (path / "config.json").is_file():
        return path
    if not path.exists():
        raise CharterError(f"hf/{model}: no such checkpoint directory or .gguf file: '{path}'")
    raise CharterError(
        f"hf/{model}: '{path}' is neither a checkpoint directory (no config.json) nor a .gguf file"
    )


def _sampling_options(config: GenerationConfig) -> dict[str, Any]:
    """transformers sampling flags for ``config``; greedy sets none (setting them warns)."""
    if config.temperature == 0:
        return {"do_sample": False}
    # Charter's settings have no top-k: disable it, or transformers' default (50) or the
    # checkpoint's generation_config.json would silently apply.
    return {"do_sample": True, "temperature": config.temperature, "top_p": config.top_p, "top_k": 0}


class HFBackend:
    """A local transformers causal language model behind Charter's two calls.

    Args:
        model: Path to a checkpoint directory or a ``.gguf`` file (the part after ``hf/``).
        device: torch device to run on, e.g. ``"cpu"``, ``"cuda"`` or ``"cuda:1"``.
        batch_size: Most conversations (greedy) or choices scored in one forward batch.
        dtype: torch dtype name (``"float32"``, ``"bfloat16"``, ...) or ``"auto"`` for the
            checkpoint's own; ``None`` means float32 on CPU and ``"auto"`` elsewhere.

    Raises:
        CharterError: torch or transformers is missing, or ``model`` is not a checkpoint.
    """

    def __init__(
        self, model: str, *, device: str = "cpu", batch_size: int = 8, dtype: str | None = None
    ) -> None:
        self.name = f"hf/{model}"
        self._torch, self._transformers = _import_hf()
        self._path = _checkpoint_path(model)
        if batch_size < 1:
            raise CharterError(f"{self.name}: batch_size must be at least 1, got {batch_size}")
        self._device = device
        self._batch_size = batch_size
        if dtype is None:
            dtype = "float32" if device == "cpu" else "auto"
        self._dtype: Any = dtype if dtype == "auto" else getattr(self._torch, dtype, None)
        if not (self._dtype == "auto" or isinstance(self._dtype, self._torch.dtype)):
            raise CharterError(f"{self.name}: unknown torch dtype '{dtype}'")
        self._loaded: tuple[Any, Any] | None = None

    @property
    def model(self) -> Any:
        """The transformers model, loaded on first use and in eval mode."""
        return self._load()[0]

    @property
    def tokenizer(self) -> Any:
        """The checkpoint's tokenizer, loaded on first use; it always has a pad token."""
        return self._load()[1]

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is not None:
            return self._loaded
        auto_tokenizer = self._transformers.AutoTokenizer
        auto_model = self._transformers.AutoModelForCausalLM
        # Never reach the Hub: the path is all there is.
        options: dict[str, Any] = {"local_files_only": True}
        directory = self._path
        if self._path.suffix == ".gguf":  # transformers dequantises GGUF weights on load
            directory, options["gguf_file"] = self._path.parent, self._path.name
        try:
            tokenizer = auto_tokenizer.from_pretrained(directory, **options)
            model = auto_model.from_pretrained(directory, dtype=self._dtype, **options)
        except (OSError, ValueError, ImportError, KeyError) as exc:
            raise CharterError(f"{self.name}: cannot load '{self._path}': {exc}") from exc
        if not getattr(tokenizer, "chat_template", None):
            raise CharterError(f"{self.name}: '{self._path}' has no chat template (a base model?)")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.to(self._device)
        model.eval()
        self._loaded = (model, tokenizer)
        return self._loaded

    def _encode(self, conversation: Conversation) -> list[int]:
        return chat_prompt_ids(self.tokenizer, conversation, self.name)

    def _eos_ids(self) -> set[int]:
        """Token ids that end a reply: the generation config's (often several), else the EOS."""
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return set(eos) if isinstance(eos, list) else {eos} if eos is not None else set()

    def generate(
        self, conversations: Sequence[Conversation], config: GenerationConfig
    ) -> list[Completion]:
        """One completion per conversation, in order.

        ``latency_s`` is the wall time of the batch the conversation was generated in.
        """
        prompts = [self._encode(c) for c in conversations]
        sampling = config.temperature > 0
        step = 1 if sampling else self._batch_size
        completions: list[Completion] = []
        for start in range(0, len(prompts), step):
            seed = request_seed(config.seed, conversations[start]) if sampling else None
            with self._seeded(seed):
                completions += self._generate_batch(prompts[start : start + step], config)
        return completions

    @contextlib.contextmanager
    def _seeded(self, seed: int | None) -> Iterator[None]:
        """Seed torch's RNG for one request, restoring the caller's RNG state afterwards."""
        if seed is None:
            yield
            return
        device = self.model.device
        devices = [] if device.type == "cpu" else [device.index or 0]
        device_type = "cuda" if device.type == "cpu" else device.type
        with self._torch.random.fork_rng(devices=devices, device_type=device_type):
            self._torch.manual_seed(seed)
            yield

    def _generate_batch(
        self, prompts: list[list[int]], config: GenerationConfig
    ) -> list[Completion]:
        torch, model, tokenizer = self._torch, self.model, self.tokenizer
        pad, eos = tokenizer.pad_token_id, self._eos_ids()
        width = max(len(p) for p in prompts)
        # Left padding: every prompt ends at the same column, where generation starts.
        input_ids = [[pad] * (width - len(p)) + p for p in prompts]
        mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
        options = self._transformers.GenerationConfig(
            max_new_tokens=config.max_tokens,
            pad_token_id=pad,
            eos_token_id=sorted(eos) or None,
            stop_strings=[s for s in config.stop if s] or None,
            repetition_penalty=1.0,  # a checkpoint's own default would silently apply
            **_sampling_options(config),
        )
        start = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(
                input_ids=torch.tensor(input_ids, device=model.device),
                attention_mask=torch.tensor(mask, device=model.device),
                generation_config=options,
                tokenizer=tokenizer,  # needed by stop_strings
            )
        latency = time.perf_counter() - start
        return [
            self._completion(row, len(prompt), config, eos, pad, latency)
            for row, prompt in zip(output[:, width:].tolist(), prompts, strict=True)
        ]

    def _completion(
        self,
        new_ids: list[int],
        prompt_tokens: int,
        config: GenerationConfig,
        eos: set[int],
        pad: int,
        latency: float,
    ) -> Completion:
        """Count, decode and trim one row of generated ids (padding after the end dropped)."""
        count = len(new_ids)
        hit_eos = False
        for index, token in enumerate(new_ids):
            if token in eos:
                count, hit_eos = index + 1, True
                break
        if not hit_eos:
            while count and new_ids[count - 1] == pad:  # finished early on a stop string
                count -= 1
        text: str = self.tokenizer.decode(new_ids[:count], skip_special_tokens=True)
        cuts = [text.find(s) for s in config.stop if s and s in text]
        if cuts:
            text = text[: min(cuts)]
        length = not hit_eos and not cuts and count >= config.max_tokens
        return Completion(
            text=text,
            finish_reason="length" if length else "stop",
            prompt_tokens=prompt_tokens,
            cached_tokens=0,
            completion_tokens=count,
            latency_s=latency,
        )

    def choice_logprobs(self, conversation: Conversation, choices: Sequence[str]) -> list[float]:
        """Exact log-probability of each choice continuing the assistant's reply.

        The prompt is the chat template's render (the final assistant message continued if
        the conversation ends with one, else a new assistant turn opened). Prompt and choice
        are tokenized separately and their ids concatenated, so each value is the summed
        log-probability of exactly that token sequence, which may differ slightly from the
        tokenization of the joined text. Choices are scored in right-padded batches.
        """
        prompt = self._encode(conversation)
        choice_ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
        scores: list[float] = []
        for start in range(0, len(choice_ids), self._batch_size):
            scores += self._score_batch(prompt, choice_ids[start : start + self._batch_size])
        return scores

    def _score_batch(self, prompt: list[int], choices: list[list[int]]) -> list[float]:
        torch, model, pad = self._torch, self.model, self.tokenizer.pad_token_id
        longest = max(len(c) for c in choices)
        if longest == 0:
            return [0.0] * len(choices)
        input_ids = [prompt + c + [pad] * (longest - len(c)) for c in choices]
        mask = [[1] * (len(prompt) + len(c)) + [0] * (longest - len(c)) for c in choices]
        with torch.inference_mode():
            # The logits at the last prompt position and after predict the choice tokens.
            logits = model(
                input_ids=torch.tensor(input_ids, device=model.device),
                attention_mask=torch.tensor(mask, device=model.device),
                logits_to_keep=longest + 1,
            ).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
        scores = []
        for row, choice in enumerate(choices):
            targets = torch.tensor(choice, device=logprobs.device, dtype=torch.long)
            picked = logprobs[row, : len(choice)].gather(-1, targets[:, None])
            scores.append(float(picked.sum()))
        return scores

    def close(self) -> None:
        """Drop the model and tokenizer so their memory can be freed."""
        self._loaded = None


def chat_prompt_ids(tokenizer: Any, conversation: Conversation, name: str) -> list[int]:
    """Prompt token ids: the chat template's render, tokenized without extra specials.

    A conversation that ends with an assistant message is continued (its end-of-turn
    dropped); any other gets the template's generation prompt for a new assistant turn.
    Shared by the backends that render prompts themselves (``hf/…``, ``vllm/…``).
    """
    messages = [m.model_dump() for m in conversation]
    continue_final = bool(messages) and messages[-1]["role"] == "assistant"
    try:
        text = tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=not continue_final,
            continue_final_message=continue_final,
        )
    except Exception as exc:  # templates raise their own errors (jinja raise_exception)
        raise CharterError(f"{name}: the chat template failed: {exc}") from exc
    # The template already writes BOS where the model wants one; don't add another.
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise CharterError(f"{name}: the chat template rendered an empty prompt")
    return ids
