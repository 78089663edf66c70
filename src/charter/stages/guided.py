"""Teacher-guided SL-CAI: the supervised stage when the policy cannot critique itself.

The paper's recipe has the policy critique and revise its own answers. A 135M model cannot
(its critiques copy the few-shot demonstrations), and the local teachers answer a free-form
critique request with boilerplate (DESIGN.md §2b). What they *can* do, measured: judge a
request yes/no from log-probabilities with the constitution in the system prompt, and write a
short reply when told what the constitution asks of it. So this stage splits the critique into
one-token checks and lets the teacher write only the revision:

1. the policy answers every prompt (red-team, contrast, helpful);
2. **verdict** (red-team prompts): the teacher reads the constitution (spec, priority order,
   hard constraints) and answers "should the assistant decline this request?"; its p(Yes)
   against the threshold calibrated on gold prompts decides whether the answer needs a
   revision at all;
3. **principle**: the critique principle closest to the prompt in sentence-embedding space
   (not a uniform draw: a sexual-content principle on a phishing request critiques nothing);
4. **revision**: the teacher, given the constitution, the verdict and the harm at stake (that
   principle's name: its revision request, phrased as an edit, was parroted back), writes
   the reply: decline the harmful part plainly and offer a safe alternative;
5. **verification** before a row enters SFT: the revision must read as a refusal to the refusal
   classifier, must not copy a few-shot demonstration (8-gram overlap), must not parrot the
   note's instructions (a shared run of 5 words) or talk about the constitution, and must be
   a real reply. A rejected revision is sampled again (``retries`` times, new seed);
   rejections are counted by reason;
6. contrast prompts (only sound dangerous) and helpful prompts keep the policy's own answer
   when it is not a refusal and passes the checkable instructions the prompt carries (IFEval
   ids such as "exactly 3 bullet points", checked by :mod:`charter.stages.evaluate.ifeval`); a
   failing answer is sampled again (``retries`` times, new seed). So SFT teaches "decline
   this" without teaching "decline everything", and what it learns from ordinary answers is
   the policy's own style with its instructions followed, never an answer that ignores them;
7. **hard constraints** (:mod:`charter.stages.hard`, when turned on and the constitution has
   any; off by default, the 1.5B teacher cannot answer it): every
   reply about to be kept is checked by the teacher (one yes/no scoring pass); one that
   crosses a hard constraint is not kept, whatever the other checks said.

``--dry-run`` (:func:`dry_run`) prints every teacher prompt. The prompts are the constants
below; their text is part of the stage's cache key (:func:`template_digest`).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from charter.backends import Backend, GenerationConfig
from charter.constitution import Constitution, Principle
from charter.records import Instruction, Message, Prompt, Record, Usage
from charter.stages.checks import Tools, Verifier, answer_problem, nearest_principles
from charter.stages.hard import YES_NO, HardCheck, crossing, hard_conversation, p_yes

JUDGE_SYSTEM = "You judge requests sent to an AI assistant against this constitution.\n\n{brief}"
JUDGE_QUESTION = (
    "Request: {request}\n\nUnder the constitution, should the assistant decline this request? "
    "Answer Yes or No."
)
REVISER_SYSTEM = "You are an AI assistant that follows this constitution.\n\n{brief}"
REVISER_NOTE = (
    "{request}\n\n[Note for the assistant, not from the user: helping with this request would "
    "cause harm ({harm}). Reply to the user directly in two to four sentences: say plainly that "
    "you won't help with it, without a lecture, then suggest one safe and genuinely useful "
    "thing you can help with instead.]"
)
VERSION = 2  # in the stage's key: bump when what the stage keeps changes (2: checked answers)


def judge_conversation(constitution: Constitution, request: str) -> list[Message]:
    return [
        Message(role="system", content=JUDGE_SYSTEM.format(brief=constitution.brief)),
        Message(role="user", content=JUDGE_QUESTION.format(request=request)),
    ]


def reviser_conversation(
    constitution: Constitution, request: str, principle: Principle
) -> list[Message]:
    return [
        Message(role="system", content=REVISER_SYSTEM.format(brief=constitution.brief)),
        Message(role="user", content=REVISER_NOTE.format(request=request, harm=_harm(principle))),
    ]


def _harm(principle: Principle) -> str:
    return principle.id.replace("-", " ")


def instructions(principle: Principle) -> str:
    """The note's own words (without the request): what a revision must not parrot."""
    return REVISER_NOTE.format(request="", harm=_harm(principle))


def template_digest() -> str:
    """A hash of every prompt template here: editing one invalidates cached outputs."""
    text = "\x00".join((JUDGE_SYSTEM, JUDGE_QUESTION, REVISER_SYSTEM, REVISER_NOTE, *YES_NO))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# --- records -----------------------------------------------------------------------------------


class GuidedConfig(BaseModel):
    """Settings of one guided-revise run (all recorded in its manifest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(default=0.5, ge=0.0, le=1.0, description="p(decline) cut-off")
    answer: GenerationConfig = GenerationConfig(temperature=0.7, max_tokens=128)
    revision: GenerationConfig = GenerationConfig(temperature=0.7, max_tokens=100)
    seed: int = 0
    retries: int = Field(default=2, ge=0, description="new samples for a rejected revision")
    hard: HardCheck = HardCheck()
    batch_size: int = Field(default=16, ge=1, description="prompts in flight; not in outputs")


class GuidedRow(Record):
    """One prompt's trail through the guided stage; ``kept`` rows become SFT rows."""

    id: str
    kind: str  # redteam | contrast | helpful
    source: str
    messages: tuple[Message, ...]
    answer: str
    p_decline: float | None = None
    principle_id: str | None = None
    revision: str | None = None
    rejected: str | None = None
    attempts: int = 0  # revisions written (1 + retries used)
    answer_attempts: int = 1  # policy answers sampled (contrast/helpful: 1 + retries used)
    instructions: tuple[Instruction, ...] = ()  # checks the kept answer passed
    kept: str | None = None  # the assistant turn SFT learns; None when rejected
    p_crosses: float | None = None  # the teacher's p(the kept reply crosses a hard constraint)
    policy_usage: Usage = Usage()
    teacher_usage: Usage = Usage()  # revision tokens; scoring passes count as calls


def usage_totals(rows: Sequence[GuidedRow]) -> dict[str, dict[str, int]]:
    """Tokens and calls of each model over ``rows`` (the manifest's ``usage``)."""
    policy, teacher = Usage(), Usage()
    for row in rows:
        policy, teacher = policy + row.policy_usage, teacher + row.teacher_usage
    return {"policy": policy.model_dump(), "teacher": teacher.model_dump()}


def outcome_counts(rows: Sequence[GuidedRow]) -> dict[str, int]:
    """Counts for the manifest: per kind kept and rejected, and rejections by reason."""
    counts: Counter[str] = Counter()
    for row in rows:
        counts[f"{row.kind}_prompts"] += 1
        counts[f"{row.kind}_kept"] += row.kept is not None
        if row.revision is not None:
            counts["revisions"] += 1
            counts["revision attempts"] += row.attempts
        if row.rejected:
            counts[f"rejected: {row.rejected}"] += 1
        if row.instructions:
            counts[f"{row.kind}_with_instructions"] += 1
        counts["answer resamples"] += row.answer_attempts - 1
    return dict(sorted(counts.items()))


# --- the stage ---------------------------------------------------------------------------------

TRAILS, SFT = "guided.jsonl", "sft.jsonl"


def vetoed(
    rows: list[GuidedRow], constitution: Constitution, teacher: Backend, hard: HardCheck
) -> list[GuidedRow]:
    """Step 7: a kept reply that crosses a hard constraint is not kept (when turned on)."""
    if not hard.active(constitution):
        return rows
    kept = [i for i, row in enumerate(rows) if row.kept is not None]
    p = crossing(teacher, constitution, [(rows[i].messages, str(rows[i].kept)) for i in kept])
    for i, p_cross in zip(kept, p, strict=True):
        spent = rows[i].teacher_usage + Usage(calls=1)
        update: dict[str, object] = {"p_crosses": round(p_cross, 4), "teacher_usage": spent}
        if hard.crosses(p_cross):
            update |= {"kept": None, "rejected": "crosses a hard constraint"}
        rows[i] = rows[i].model_copy(update=update)
    return rows


def guide(
    prompts: Sequence[Prompt],
    kind: str,
    *,
    constitution: Constitution,
    policy: Backend,
    teacher: Backend,
    config: GuidedConfig,
    tools: Tools,
) -> list[GuidedRow]:
    """One batch of prompts of one kind through steps 1–6 (:func:`vetoed` is step 7)."""
    from concurrent.futures import ThreadPoolExecutor

    conversations = [list(p.messages) for p in prompts]
    answer_config = config.answer.model_copy(update={"seed": config.seed})
    completions = policy.generate(conversations, answer_config)
    answers = [c.text.strip() for c in completions]
    rows = []
    for p, answer, c in zip(prompts, answers, completions, strict=True):
        rows.append(GuidedRow(id=p.id, kind=kind, source=p.source or "", messages=p.messages,
                              answer=answer, policy_usage=c.usage(),
                              instructions=p.instructions))  # fmt: skip
    if kind != "redteam":
        return _checked_answers(rows, policy, config, tools)
    requests = [p.messages[-1].content for p in prompts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        verdicts = list(pool.map(
            lambda r: p_yes(teacher, judge_conversation(constitution, r)), requests
        ))  # fmt: skip
    critique = [p for p in constitution.principles if p.critique]
    principles = nearest_principles(requests, critique, tools.embed)
    flagged = [i for i, p in enumerate(verdicts) if p >= config.threshold]
    verifier = Verifier.for_constitution(constitution, tools.refuses)
    revisions: dict[int, str] = {}
    reasons: dict[int, str | None] = {}
    spent: dict[int, Usage] = {}
    attempts: Counter[int] = Counter()
    pending = flagged
    for attempt in range(1 + config.retries):  # a rejected revision is sampled again
        if not pending:
            break
        settings = config.revision.model_copy(update={"seed": config.seed + attempt})
        written = teacher.generate(
            [reviser_conversation(constitution, requests[i], principles[i]) for i in pending],
            settings,
        )
        texts = [c.text.strip() for c in written]
        verdict = verifier.reject(texts, [instructions(principles[i]) for i in pending])
        for i, text, c, reason in zip(pending, texts, written, verdict, strict=True):
            revisions[i], reasons[i] = text, reason
            spent[i] = spent.get(i, Usage()) + c.usage()
            attempts[i] += 1
        pending = [i for i in pending if reasons[i] is not None]
    out = []
    for i, row in enumerate(rows):
        scoring = Usage(calls=1)  # the verdict: one scoring pass
        update: dict[str, object] = {"p_decline": round(verdicts[i], 4),
                                     "principle_id": principles[i].id,
                                     "teacher_usage": scoring + spent.get(i, Usage())}  # fmt: skip
        if i not in revisions:
            update["rejected"] = "teacher: no conflict"
        else:
            update["revision"] = revisions[i]
            update["attempts"] = attempts[i]
            update["rejected"] = reasons[i]
            update["kept"] = None if reasons[i] else revisions[i]
        out.append(row.model_copy(update=update))
    return out


def _checked_answers(
    rows: list[GuidedRow], policy: Backend, config: GuidedConfig, tools: Tools
) -> list[GuidedRow]:
    """Step 6: keep each answer that neither refuses nor fails its instructions; resample."""
    refused = tools.refuses([row.answer for row in rows])
    problems = [answer_problem(row.answer, no, row.instructions)
                for row, no in zip(rows, refused, strict=True)]  # fmt: skip
    pending = [i for i, problem in enumerate(problems) if problem]
    for attempt in range(1, config.retries + 1):
        if not pending:
            break
        settings = config.answer.model_copy(update={"seed": config.seed + attempt})
        again = policy.generate([list(rows[i].messages) for i in pending], settings)
        texts = [c.text.strip() for c in again]
        for i, text, c, no in zip(pending, texts, again, tools.refuses(texts), strict=True):
            rows[i] = rows[i].model_copy(update={
                "answer": text, "answer_attempts": rows[i].answer_attempts + 1,
                "policy_usage": rows[i].policy_usage + c.usage(),
            })  # fmt: skip
            problems[i] = answer_problem(text, no, rows[i].instructions)
        pending = [i for i in pending if problems[i]]
    return [row.model_copy(update={"rejected": problem, "kept": None if problem else row.answer})
            for row, problem in zip(rows, problems, strict=True)]  # fmt: skip


def sft_rows(
    rows: Sequence[GuidedRow], constitution_sha256: str, model: str
) -> list[dict[str, object]]:
    """The kept rows in TRL's conversational format, with their provenance."""
    out: list[dict[str, object]] = []
    for row in rows:
        if row.kept is None:
            continue
        messages = [m.model_dump() for m in row.messages]
        out.append({
            "messages": [*messages, {"role": "assistant", "content": row.kept}],
            "prompt_id": row.id, "kind": row.kind, "source": row.source,
            "revised": row.revision is not None,
            "principle_ids": [row.principle_id] if row.principle_id else [],
            "model": model, "constitution_sha256": constitution_sha256,
        })  # fmt: skip
    return out


def dry_run(constitution: Constitution, request: str, hard: HardCheck | None = None) -> str:
    """Every teacher prompt this stage sends for ``request``, rendered."""
    principle = next(p for p in constitution.principles if p.critique)
    blocks = []
    asks = [
        ("verdict (scored: Yes / No)", judge_conversation(constitution, request)),
        (f"revision (principle {principle.id})",
         reviser_conversation(constitution, request, principle)),
    ]  # fmt: skip
    if hard is not None and hard.active(constitution):
        prompt = [Message(role="user", content=request)]
        asks.append(("hard-constraint check of the reply to keep (scored: Yes / No)",
                     hard_conversation(constitution, prompt, "<the reply to keep>")))  # fmt: skip
    for title, conversation in asks:
        blocks.append(f"=== {title} ===")
        blocks += [f"[{m.role}]\n{m.content}" for m in conversation]
    return "\n\n".join(blocks)


def run_guided(
    prompts: dict[str, list[Prompt]],
    *,
    out: Path,
    constitution: Constitution,
    policy: Backend,
    teacher: Backend,
    config: GuidedConfig,
    fingerprint: dict[str, Any],
    tools: Tools | None = None,
) -> dict[str, int]:
    """Every prompt (by kind) through :func:`guide` into ``out``; resumes by prompt id.

    ``out/guided.jsonl`` holds each prompt's trail (appended as batches finish: what a
    killed run resumes from); ``out/sft.jsonl`` the kept rows, written whole at the end.
    """
    from charter.iterate import batched
    from charter.progress import progress_bar
    from charter.runs import JsonlAppender, Run, read_stored, write_atomic

    run = Run.open(out, "guided-revise", fingerprint)
    trails = out / TRAILS
    done = {row.id: row for row in read_stored(trails, GuidedRow)}
    tools = tools or Tools.load()
    total = sum(len(p) for p in prompts.values())
    try:
        with JsonlAppender(trails) as sink, progress_bar(total=total, desc="guided revise",
                                                         unit="prompt") as bar:  # fmt: skip
            bar.update(sum(1 for ps in prompts.values() for p in ps if p.id in done))
            for kind, chosen in prompts.items():
                todo = [p for p in chosen if p.id not in done]
                for batch in batched(todo, config.batch_size):
                    rows = guide(batch, kind, constitution=constitution, policy=policy,
                                 teacher=teacher, config=config, tools=tools)  # fmt: skip
                    for row in vetoed(rows, constitution, teacher, config.hard):
                        sink.write(row)
                        done[row.id] = row
                    bar.update(len(batch))
    except BaseException:
        rows = list(done.values())
        run.update(counts=outcome_counts(rows), usage=usage_totals(rows), status="interrupted")
        raise
    wanted = [p.id for ps in prompts.values() for p in ps]
    rows = [done[i] for i in dict.fromkeys(wanted)]
    sft = sft_rows(rows, constitution.sha256, teacher.name)
    write_atomic(out / SFT, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sft))
    counts = outcome_counts(rows)
    run.update(counts={**counts, "sft_rows": len(sft)}, usage=usage_totals(rows), status="complete")
    return counts
