"""The LangChain side of bench/versus.py: SL-CAI the way LangChain's docs show it.

Runs inside the benchmark's own virtual environment (langchain-classic, langchain-openai),
never in Charter's. Reads a JSON job (server URL, prompts, principles, max tokens) from
argv[1], runs ``ConstitutionalChain`` on each prompt one after another against the
OpenAI-compatible server, and prints one JSON line: seconds, calls and token counts as the
server reported them, the engine's own time (llama.cpp's ``timings`` in each reply) and this
process's CPU time. With ``--profile`` it also prints cProfile's top functions to stderr.
"""

from __future__ import annotations

import cProfile
import json
import pstats
import sys
import time
from typing import Any

import httpx
from langchain_classic.chains import ConstitutionalChain, LLMChain
from langchain_classic.chains.constitutional_ai.models import ConstitutionalPrinciple
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.prompts import PromptTemplate
from langchain_openai import ChatOpenAI


class Tokens(BaseCallbackHandler):
    """Adds up the usage the server returns with every call."""

    def __init__(self) -> None:
        self.calls = self.prompt = self.cached = self.completion = 0

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        usage = (response.llm_output or {}).get("token_usage") or {}
        self.calls += 1
        self.prompt += usage.get("prompt_tokens", 0)
        self.completion += usage.get("completion_tokens", 0)
        self.cached += (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0


class EngineTime:
    """Adds up llama.cpp's own timings from every reply (an httpx response hook)."""

    def __init__(self) -> None:
        self.prompt_ms = self.predicted_ms = 0.0

    def __call__(self, response: httpx.Response) -> None:
        response.read()
        timings = response.json().get("timings") or {}
        self.prompt_ms += float(timings.get("prompt_ms", 0.0))
        self.predicted_ms += float(timings.get("predicted_ms", 0.0))


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        job = json.load(f)
    tokens, engine = Tokens(), EngineTime()
    llm = ChatOpenAI(
        base_url=job["base_url"], api_key="unused", model="smollm2",
        max_tokens=job["max_tokens"], temperature=job["temperature"], callbacks=[tokens],
        http_client=httpx.Client(event_hooks={"response": [engine]}),
    )  # fmt: skip
    answer = LLMChain(llm=llm, prompt=PromptTemplate.from_template("{question}"))
    chain = ConstitutionalChain.from_llm(
        llm=llm, chain=answer,
        constitutional_principles=[
            ConstitutionalPrinciple(
                name=p["name"], critique_request=p["critique"], revision_request=p["revision"]
            )
            for p in job["principles"]
        ],
    )  # fmt: skip
    profile = cProfile.Profile() if "--profile" in sys.argv else None
    start, cpu = time.perf_counter(), time.process_time()
    if profile:
        profile.enable()
    for question in job["prompts"]:
        chain.invoke({"question": question})
    if profile:
        profile.disable()
        pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(15)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps({
        "seconds": seconds, "calls": tokens.calls, "prompt_tokens": tokens.prompt,
        "cached_tokens": tokens.cached, "completion_tokens": tokens.completion,
        "prompt_ms": engine.prompt_ms, "predicted_ms": engine.predicted_ms, "client_cpu_s": cpu,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
