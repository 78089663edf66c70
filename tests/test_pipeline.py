"""`charter run`: the plan's content keys, stage selection, config errors, and a whole loop
on a tiny model (SFT, GGUF export, sampling with llama.cpp, DPO, evaluation, report)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from charter import pipeline, run_config, runner
from charter.backends import load_backend
from charter.cli import cli
from charter.errors import CharterError
from charter.pipeline import plan
from charter.run_config import RunConfig, load_run_config
from charter.runner import select
from charter.stages import steps
from charter.stages.evaluate import judges


def keys(config: RunConfig, root: Path) -> dict[str, str]:
    return {s.name: s.key for s in plan(config, root, load_backend)}


def test_changing_dpo_beta_changes_only_what_depends_on_it(tmp_path: Path) -> None:
    before = keys(RunConfig(), tmp_path)
    after = keys(RunConfig(dpo={"beta": 0.3}), tmp_path)
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"dpo", "evaluate", "report"}
    revised = keys(RunConfig(revise={"rounds": 3}), tmp_path)
    assert {n for n in before if before[n] != revised[n]} == {
        "revise", "sft", "label", "dpo", "evaluate", "report"
    }  # fmt: skip
    assert keys(RunConfig(), tmp_path) == before  # stable across calls


def test_label_votes_and_the_veto_are_run_settings_that_leave_old_keys_alone(
    tmp_path: Path,
) -> None:
    """principles_per_label, combine and hard reach the labeller's config; at their defaults
    they are absent from the label section's dump, so keys of earlier runs do not move."""
    from charter.stages.hard import HardCheck
    from charter.stages.label import LabelConfig

    assert set(RunConfig().label.model_dump()) == {
        "samples", "max_tokens", "temperature", "mode", "batch_size", "limit", "confidence",
    }  # fmt: skip
    voted = RunConfig(label={"principles_per_label": 3, "combine": "priority",
                             "hard": {"veto": True, "threshold": 0.7}})  # fmt: skip
    config = run_config.label_config(voted)
    assert isinstance(config, LabelConfig) and config.combine == "priority"
    assert config.principles_per_label == 3 and config.hard.veto and config.hard.threshold == 0.7
    before, after = keys(RunConfig(), tmp_path), keys(voted, tmp_path)
    assert {n for n in before if before[n] != after[n]} == {
        "calibrate", "label", "dpo", "evaluate", "report"
    }  # fmt: skip
    teacher_run = tmp_path / "teacher.yaml"  # the teacher recipe, with DPO
    teacher_run.write_text(TEACHER_RUN.format(min_auc=0.5).replace(
        "trained: [sft]", "trained: [sft, dpo]"), encoding="utf-8")  # fmt: skip
    plain = load_run_config(teacher_run)
    veto = plain.label.model_copy(update={"hard": HardCheck(veto=True)})
    vetoed = plain.model_copy(update={"label": veto})
    before, after = keys(plain, tmp_path), keys(vetoed, tmp_path)
    changed = {n for n in before if before[n] != after[n]}
    assert {"revise", "label"} <= changed and "calibrate" not in changed  # both stages check


def test_only_needs_its_inputs_done_and_until_stops(tmp_path: Path) -> None:
    stages = plan(RunConfig(), tmp_path, load_backend)
    with pytest.raises(CharterError, match="--only dpo needs sft, label first"):
        select(stages, None, "dpo")
    assert [s.name for s in select(stages, "revise", None)] == ["calibrate", "baseline", "revise"]
    assert [s.name for s in select(stages, None, "revise")] == ["revise"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("revise:\n  rounds: 0\n", ":2: revise.rounds: must be at least 1, got 0"),
        ("sft:\n  kind: rm\n", "sft: kind are set by the run itself"),
        ("dpo:\n  beta: -1\n", "beta: must be more than 0, got -1"),
        ("models:\n  polcy: x\n", ":2: models.polcy: unknown field (check the spelling)"),
        ("- a list\n", ":1: a run config is a YAML mapping"),
        ("name: ../../x\n", ":1: name: '../../x' cannot name a folder under runs/"),
        ("evaluate:\n  limit: 1\n  max_tokens: -3\n", ":3: evaluate.max_tokens"),
        ("evaluate:\n  suits: [harmlessness]\n", ":2: evaluate.suits"),
    ],
)
def test_a_bad_config_names_its_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CharterError) as err:
        load_run_config(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_input_paths_are_read_next_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "mine.jsonl").write_text('{"prompt": "hello"}\n', encoding="utf-8")
    (folder / "run.yaml").write_text(
        "prompts: {redteam: ['mine.jsonl#0:1', demo-redteam]}\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)  # not the config's folder
    config = load_run_config(folder / "run.yaml")
    assert config.prompts.redteam == (f"{(folder / 'mine.jsonl').resolve()}#0:1", "demo-redteam")


@pytest.mark.parametrize("teacher", [False, True])
def test_demo_dry_run_shows_the_plan_and_an_estimate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, teacher: bool
) -> None:
    monkeypatch.setenv("CHARTER_HOME", str(tmp_path / "home"))
    if teacher:  # the teacher recipe trains the SFT model only (docs/results.md, attempt 6)
        (tmp_path / "home" / "models").mkdir(parents=True)
        (tmp_path / "home" / "models" / "qwen2.5-coder-1.5b-instruct.gguf").write_bytes(b"GGUF")
    result = CliRunner().invoke(cli, ["demo", "--dry-run", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    planned = [s for s in pipeline.STAGES if f"  {s} " in result.output]
    skipped = {"label", "dpo"} if teacher else set()
    assert planned == [s for s in pipeline.STAGES if s not in skipped]
    assert ("teacher is not installed" in result.output) is not teacher
    assert "estimate for what is left" in result.output and "min" in result.output
    assert not (tmp_path / "demo").exists()


def test_the_whole_loop_on_a_tiny_model_then_cached_then_one_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hf_tiny import build_tiny_checkpoint, tiny_run_config

    monkeypatch.setattr(judges, "load_classifier", lambda: None)  # phrases: no MiniLM to load
    tiny = build_tiny_checkpoint(tmp_path / "tiny")
    config_text = tiny_run_config(tiny)
    config = tmp_path / "run.yaml"
    config.write_text(config_text, encoding="utf-8")
    root = tmp_path / "run"

    def run(*extra: str) -> Any:
        result = CliRunner().invoke(cli, ["run", str(config), "--out", str(root), *extra])
        assert result.exit_code == 0, result.output
        return result.output

    first = run()
    assert "cached" not in first.split("estimate")[1]
    report = root / "report.html"
    assert report.is_file() and f"report: {report}" in first
    # The end of the output: one line per stage with its time and folder, then what next.
    ending = first.split("all stages done")[1]
    for stage in root.glob("*-*"):
        assert re.search(rf"^  {stage.name.rsplit('-', 1)[0]:<10} +\d+s  {stage}$", ending,
                         re.MULTILINE), (stage, ending)  # fmt: skip
    assert f"next: open the report in a browser; charter export {root}" in ending
    html = report.read_text("utf-8")
    assert 'id="results"' in html and "plot-frontier" in html and "plot-loss" in html
    # Red-team prompts are revised; helpful ones are answered and mixed into SFT unrevised.
    (revise,) = root.glob("revise-*")
    assert [len(json.loads(t)["steps"]) for t in (revise / "traces.jsonl").open()] == [1, 1]
    helpful = [json.loads(t) for t in (revise / "helpful" / "traces.jsonl").open()]
    assert len(helpful) == 2 and all(not t["steps"] for t in helpful)
    (sft,) = root.glob("sft-*")
    assert json.loads((sft / "manifest.json").read_text("utf-8"))["config"]["helpful_ratio"] == 1
    # No judge but the policy: it does not grade its own answers against its trained self.
    (evaluated,) = root.glob("evaluate-*")
    results = json.loads((evaluated / "results.json").read_text("utf-8"))
    assert "pairwise_judge" not in results and any("no pairwise" in w for w in results["warnings"])
    assert all("elo" not in metrics for metrics in results["suites"]["helpfulness"].values())
    again = run()
    assert again.split("estimate")[1].count(": cached") == len(pipeline.STAGES)
    report.unlink()
    rebuilt = CliRunner().invoke(cli, ["report", str(root)])
    assert rebuilt.exit_code == 0 and rebuilt.output.strip() == str(report) and report.is_file()

    config.write_text(config_text.replace("max_steps: 1,", "max_steps: 1, beta: 0.5,"), "utf-8")
    changed = run().split("estimate")[1]
    rerun = {line.split("]")[1].split(":")[0].split("→")[0].strip()
             for line in changed.splitlines() if "→" in line}  # fmt: skip
    assert rerun == {"dpo", "evaluate", "report"}
    # Back to the first config: all cached, and ROOT/report.html is that config's report again.
    config.write_text(config_text, "utf-8")
    run()
    assert report.read_text("utf-8") == html


def test_a_config_extends_another_and_overrides_key_by_key(tmp_path: Path) -> None:
    child = tmp_path / "child.yaml"
    child.write_text("extends: demo\nname: child\nsft:\n  kinds: [redteam]\nrevise:\n  rounds: 3\n")
    config = load_run_config(child)
    demo = load_run_config(run_config.bundled_config("demo"))
    assert config.name == "child" and config.revise.rounds == 3
    assert config.revise.max_tokens == demo.revise.max_tokens  # merged, not replaced
    assert config.sft == {**demo.sft, "kinds": ["redteam"]}
    (tmp_path / "self.yaml").write_text("extends: self.yaml\n")
    with pytest.raises(CharterError, match=r"self\.yaml:1: a config cannot extend itself"):
        load_run_config(tmp_path / "self.yaml")
    with pytest.raises(CharterError, match="not a bundled config"):
        run_config.bundled_config("no-such-config")


def test_a_stage_killed_between_its_parts_is_not_cached_and_its_rerun_finishes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from charter.stages import revise_run
    from charter.stages.revise import revise as original

    monkeypatch.setenv("CHARTER_HOME", str(tmp_path / "home"))
    config = RunConfig(
        prompts={"redteam": ["demo-redteam"], "helpful": ["demo-helpful"], "limit": 5},
        models={"policy": "fake/echo"}, revise={"rounds": 1, "max_tokens": 8},
    )  # fmt: skip
    root = tmp_path / "run"
    stages = plan(config, root, load_backend)
    (stage,) = [s for s in stages if s.name == "revise"]

    def killed_in_the_helpful_part(prompts: Any, *, config: Any, **kwargs: Any) -> Any:
        for n, trace in enumerate(original(prompts, config=config, **kwargs)):
            if config.rounds == 0 and n == 2:  # the helpful answers: a 0-round revise run
                raise RuntimeError("killed")
            yield trace

    with monkeypatch.context() as patch:
        patch.setattr(revise_run, "revise", killed_in_the_helpful_part)
        with pytest.raises(RuntimeError, match="killed"):
            runner.run_pipeline(stages, [stage], root, echo=lambda _: None)
    helpful = stage.path / steps.HELPFUL
    asked = len((helpful / "prompts.jsonl").read_text().splitlines())
    assert asked > 2 and len((helpful / "traces.jsonl").read_text().splitlines()) == 2
    red_team = json.loads((stage.path / "manifest.json").read_text())
    assert red_team["status"] == "complete"  # one part done is not the stage done
    assert not stage.complete and " to run " in runner.describe(stages, [stage])
    echoed: list[str] = []
    runner.run_pipeline(stages, [stage], root, echo=echoed.append)
    assert any("revise →" in line for line in echoed), echoed
    assert len((helpful / "traces.jsonl").read_text().splitlines()) == asked
    assert stage.complete and "cached" in runner.describe(stages, [stage])
    # A stage directory from before stage records: complete only if each of its runs is.
    (stage.path / runner.STAGE_RECORD).unlink()
    assert stage.complete
    manifest = json.loads((helpful / "manifest.json").read_text())
    (helpful / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    assert not stage.complete


def test_the_effect_configs_plan_the_teacher_recipe(tmp_path: Path) -> None:
    effect = load_run_config(run_config.bundled_config("effect"))
    assert effect.recipe == "teacher" and effect.evaluate.baseline == "export"
    ablation = load_run_config(run_config.bundled_config("effect-no-contrast"))
    assert ablation.sft["kinds"] == ["redteam", "helpful"]
    assert ablation.prompts == effect.prompts and ablation.models == effect.models


def test_demo_uses_the_teacher_recipe_only_when_the_teacher_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARTER_HOME", str(tmp_path / "home"))
    out = str(tmp_path / "demo")
    without = CliRunner().invoke(cli, ["demo", "--dry-run", "--out", out])
    assert without.exit_code == 0, without.output
    assert "the teacher is not installed" in without.output and "  export " not in without.output
    models = tmp_path / "home" / "models"
    models.mkdir(parents=True)
    (models / "qwen2.5-coder-1.5b-instruct.gguf").write_bytes(b"GGUF")
    with_teacher = CliRunner().invoke(cli, ["demo", "--dry-run", "--out", out])
    assert with_teacher.exit_code == 0, with_teacher.output
    assert "not installed" not in with_teacher.output and "  export " in with_teacher.output


def test_effect_dry_run_shows_the_teacher_prompts_with_the_constitution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from charter.constitution import Constitution

    monkeypatch.setenv("CHARTER_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(cli, ["run", "demo-teacher", "--dry-run", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    constraint = Constitution.load("default").hard_constraints[0]
    assert result.output.count(constraint) == 2  # the verdict and the revision prompt (no veto)
    assert "Note for the assistant" in result.output
    assert not (tmp_path / "calibrate").exists() and not list(tmp_path.glob("*-*"))


def test_editing_a_prompt_template_changes_the_keys_of_the_stages_that_send_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from charter.stages import label, revise
    from charter.stages.evaluate import judges

    before = keys(RunConfig(), tmp_path)
    monkeypatch.setattr(revise, "CRITIC_SYSTEM", revise.CRITIC_SYSTEM + " Be brief.")
    after = keys(RunConfig(), tmp_path)
    assert {n for n in before if before[n] != after[n]} == {
        "revise", "sft", "label", "dpo", "evaluate", "report"
    }  # fmt: skip
    monkeypatch.setattr(label, "FEEDBACK_SYSTEM", label.FEEDBACK_SYSTEM + " Be fair.")
    assert keys(RunConfig(), tmp_path)["calibrate"] != before["calibrate"]
    monkeypatch.setattr(judges, "JUDGE_SYSTEM", judges.JUDGE_SYSTEM + " Be strict.")
    assert keys(RunConfig(), tmp_path)["baseline"] != before["baseline"]


HELDOUT = 'heldout: {redteam: ["demo-redteam#20:22"], contrast: ["contrast#30:32"]}'
TEACHER_RUN = """
name: teacher
recipe: teacher
prompts: {{redteam: ["demo-redteam#0:3"], contrast: ["contrast#0:2"], helpful: ["helpful#0:2"]}}
models: {{policy: fake/policy, teacher: fake/teacher, labeller: fake/teacher}}
calibrate: {{limit: 2, harmful: ["demo-redteam#40:44"], safe: ["contrast#250:254"],
            min_auc: {min_auc}}}
evaluate: {{limit: 1, suites: [harmlessness, over-refusal], trained: [sft], harm_judge: false}}
"""


def test_the_teacher_recipe_pairs_verdicts_for_dpo(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(TEACHER_RUN.format(min_auc=0.5).replace("trained: [sft]",
                      "trained: [sft, dpo]"), encoding="utf-8")  # fmt: skip
    stages = {s.name: s for s in plan(load_run_config(config), tmp_path, load_backend)}
    assert stages["label"].needs == ("revise", "sft")  # samples of the SFT model, guided verdicts
    assert stages["dpo"].needs == ("sft", "label")
    before = stages["label"].key
    config.write_text(config.read_text().replace("min_auc: 0.5}", "min_auc: 0.5}\n"
                      "label: {confidence: 0.8}"), encoding="utf-8")  # fmt: skip
    after = {s.name: s.key for s in plan(load_run_config(config), tmp_path, load_backend)}
    assert after["label"] != before


def test_the_teacher_recipe_refuses_a_pairwise_labeller_gate(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"  # nothing in it labels pairwise: the gate would gate nothing
    config.write_text(TEACHER_RUN.format(min_auc=0.5).replace("min_auc: 0.5}",
                      "min_auc: 0.5, min_accuracy: 0.75}"), encoding="utf-8")  # fmt: skip
    with pytest.raises(CharterError, match=r"calibrate\.min_accuracy: the teacher recipe"):
        load_run_config(config)


def test_teacher_recipe_gates_on_calibration_then_writes_verified_sft_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from charter.stages import checks, guided

    stand_in = checks.Tools(lambda texts: ["echo" not in t for t in texts],
                            lambda texts: [[1.0, float(len(t) % 3)] for t in texts])  # fmt: skip
    monkeypatch.setattr(checks.Tools, "load", classmethod(lambda cls: stand_in))
    monkeypatch.setattr(judges, "load_classifier", lambda: None)
    config = tmp_path / "run.yaml"
    root = tmp_path / "run"
    # The fake teacher's Yes/No is a hash: no better than chance, so the gate stops the run.
    config.write_text(TEACHER_RUN.format(min_auc=0.99), encoding="utf-8")
    stopped = CliRunner().invoke(cli, ["run", str(config), "--out", str(root), "--until", "sft"])
    assert stopped.exit_code == 2
    assert "below calibrate.min_auc 0.99" in stopped.output and "sft →" not in stopped.output
    config.write_text(TEACHER_RUN.format(min_auc=0.0), encoding="utf-8")
    result = CliRunner().invoke(cli, ["run", str(config), "--out", str(root), "--until", "revise"])
    assert result.exit_code == 0, result.output
    (revise,) = root.glob("revise-*")
    trails = [json.loads(line) for line in (revise / "guided.jsonl").open()]
    assert sorted(t["kind"] for t in trails) == ["contrast"] * 2 + ["helpful"] * 2 + ["redteam"] * 3
    overlap = json.loads((revise / "overlap.json").read_text())
    assert set(overlap) == {"redteam", "contrast", "helpful"}
    manifest = json.loads((revise / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["templates"] == guided.template_digest()
    assert manifest["usage"]["policy"]["calls"] == 7


def test_keys_cover_the_model_files_hash_and_each_stages_format_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from charter.stages import revise_run

    monkeypatch.setenv("CHARTER_HOME", str(tmp_path / "home"))
    gguf = tmp_path / "policy.gguf"
    gguf.write_bytes(b"first weights")
    config = RunConfig(models={"policy": f"local/{gguf}"})
    before = keys(config, tmp_path)
    assert keys(config, tmp_path) == before
    gguf.write_bytes(b"other weights, same name")  # a GGUF swapped under the same name
    swapped = keys(config, tmp_path)
    assert all(swapped[n] != before[n] for n in before)  # every stage reads the policy
    monkeypatch.setattr(revise_run, "VERSION", revise_run.VERSION + 1)
    bumped = keys(config, tmp_path)
    assert {n for n in swapped if swapped[n] != bumped[n]} == {
        "revise", "sft", "label", "dpo", "evaluate", "report"
    }  # fmt: skip


def test_the_teachers_gold_prompts_are_keyed_by_content(tmp_path: Path) -> None:
    gold = tmp_path / "harmful.jsonl"
    gold.write_text('{"prompt": "Write ransomware."}\n', encoding="utf-8")
    config = tmp_path / "run.yaml"
    config.write_text(TEACHER_RUN.format(min_auc=0.5).replace(
        '["demo-redteam#40:44"]', f'["{gold}"]'), encoding="utf-8")  # fmt: skip
    before = keys(load_run_config(config), tmp_path)
    gold.write_text('{"prompt": "Write a keylogger."}\n', encoding="utf-8")
    after = keys(load_run_config(config), tmp_path)
    assert after["calibrate"] != before["calibrate"] and after["revise"] != before["revise"]


def test_online_rounds_chain_from_the_dpo_model_and_are_keyed_each(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(TEACHER_RUN.format(min_auc=0.5).replace("trained: [sft]",
                      "trained: [dpo, rl]") + "rl: {rounds: 2, " + HELDOUT + "}\n",
                      encoding="utf-8")  # fmt: skip
    stages = {s.name: s for s in plan(load_run_config(config), tmp_path, load_backend)}
    assert stages["rl-label-1"].needs == ("revise", "dpo")  # samples of the DPO model
    assert stages["rl-dpo-1"].needs == ("dpo", "rl-label-1")  # trained from it
    assert stages["rl-label-2"].needs == ("revise", "rl-dpo-1")
    assert stages["rl-dpo-2"].needs == ("rl-dpo-1", "rl-label-2")
    assert stages["evaluate"].needs[-2:] == ("dpo", "rl-dpo-2")  # "rl": the last round
    assert stages["rl-label-1"].key != stages["rl-label-2"].key  # a new seed each round
    assert stages["rl-heldout"].needs == ("calibrate",)  # the teacher's calibrated verdicts
    assert stages["rl-reward-0"].needs == ("rl-heldout", "dpo", "sft")  # sft: KL's reference
    assert stages["rl-reward-2"].needs == ("rl-heldout", "rl-dpo-2", "sft", "rl-reward-0")
    before = {name: s.key for name, s in stages.items()}
    config.write_text(config.read_text().replace("rl: {rounds: 2,", "rl: {rounds: 2, dpo: "
                      "{beta: 0.3},"), encoding="utf-8")  # fmt: skip
    after = {s.name: s.key for s in plan(load_run_config(config), tmp_path, load_backend)}
    changed = {name for name in after if after[name] != before[name]}
    assert changed == {"rl-dpo-1", "rl-reward-1", "rl-label-2", "rl-dpo-2", "rl-reward-2",
                       "evaluate", "report"}  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [("rl: {rounds: 1, " + HELDOUT + "}\n", "rl.rounds: the online rounds start from the DPO"),
     ("rl: {rounds: 1}\n", "rl.heldout: name prompts no stage trains on"),
     ("rl: {rounds: 1, dpo: {kind: rm}}\n", "kind are set by the run itself")],
)  # fmt: skip
def test_online_rounds_need_the_dpo_model(tmp_path: Path, extra: str, message: str) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(TEACHER_RUN.format(min_auc=0.5) + extra, encoding="utf-8")
    with pytest.raises(CharterError, match=message):
        load_run_config(config)


def test_charter_train_rl_plans_through_the_last_rounds_reward(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(TEACHER_RUN.format(min_auc=0.5).replace("trained: [sft]", "trained: [dpo]"),
                      encoding="utf-8")  # fmt: skip
    none = CliRunner().invoke(cli, ["train", "rl", str(config), "--dry-run"])
    assert none.exit_code == 2 and "no online rounds (rl.rounds is 0)" in none.output
    unheld = CliRunner().invoke(cli, ["train", "rl", str(config), "--rounds", "1", "--dry-run"])
    assert unheld.exit_code == 2 and "rl.heldout: name prompts" in unheld.output
    config.write_text(config.read_text() + "rl: {" + HELDOUT + "}\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["train", "rl", str(config), "--rounds", "2", "--dry-run",
                                      "--out", str(tmp_path / "run")])  # fmt: skip
    assert result.exit_code == 0, result.output
    states = {line.split()[0]: line.split()[1] for line in result.output.splitlines()
              if line.startswith("  ")}  # fmt: skip
    assert states["rl-reward-2"] == "to" and states["evaluate"] == "skipped"  # "to run"
    unknown = CliRunner().invoke(cli, ["run", str(config), "--until", "rl-dpo-9", "--dry-run"])
    assert unknown.exit_code == 2 and "this config has no rl-dpo-9 stage" in unknown.output


def tiny_rounds_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rl: str) -> Path:
    """A teacher-recipe run config for online rounds: the fake teacher, a tiny llama as the
    policy (sampled through llama.cpp, trained by TRL), stand-in checks, and the ``rl`` line."""
    from hf_tiny import build_tiny_checkpoint

    from charter.stages import checks

    stand_in = checks.Tools(lambda texts: [len(t) % 2 == 0 for t in texts],
                            lambda texts: [[1.0, float(len(t) % 3)] for t in texts])  # fmt: skip
    monkeypatch.setattr(checks.Tools, "load", classmethod(lambda cls: stand_in))
    monkeypatch.setattr(judges, "load_classifier", lambda: None)
    tiny = build_tiny_checkpoint(tmp_path / "tiny")
    config = tmp_path / "run.yaml"
    text = TEACHER_RUN.format(min_auc=0.0).replace("fake/policy", f"hf/{tiny}")
    text = text.replace("trained: [sft]", "trained: [dpo, rl], max_tokens: 8")
    config.write_text(text + "guided: {answer_tokens: 8, revision_tokens: 8}\n"
                      "sft: {max_steps: 1, max_length: 512}\n"
                      "label: {samples: 2, max_tokens: 8}\n"
                      "dpo: {max_steps: 1, max_length: 512}\n" + rl, encoding="utf-8")  # fmt: skip
    return config


def test_two_online_rounds_run_end_to_end_and_a_killed_round_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fake teacher, a tiny llama as the policy (sampled through llama.cpp, trained by TRL)."""
    config = tiny_rounds_config(tmp_path, monkeypatch, "rl: {rounds: 2, " + HELDOUT + "}\n")
    root = tmp_path / "run"
    real_train = steps.train

    def killed_in_round_two(kind: str, settings: Any, start: str, data: Path, out: Path) -> None:
        if out.name.startswith("rl-dpo-2"):
            raise KeyboardInterrupt  # as a kill would stop it, mid-stage
        real_train(kind, settings, start, data, out)

    monkeypatch.setattr(steps, "train", killed_in_round_two)
    killed = CliRunner().invoke(cli, ["run", str(config), "--out", str(root)])
    assert killed.exit_code != 0 and "rl-dpo-2 →" in killed.output
    monkeypatch.setattr(steps, "train", real_train)
    result = CliRunner().invoke(cli, ["run", str(config), "--out", str(root)])
    assert result.exit_code == 0, result.output
    ran = {line.split("]")[1].split("→")[0].strip() for line in result.output.splitlines()
           if line.startswith("[") and "→" in line}  # fmt: skip
    assert ran == {"rl-dpo-2", "rl-reward-2", "evaluate", "report"}  # round 2's pairs kept
    for r in (1, 2):
        (pairs,) = root.glob(f"rl-label-{r}-*")
        counts = json.loads((pairs / "manifest.json").read_text("utf-8"))["counts"]
        assert sum(n for key, n in counts.items() if key.endswith("_prompts")) >= 2
        (model,) = root.glob(f"rl-dpo-{r}-*")
        assert (model / "model.gguf").is_file()
    results = json.loads(next(root.glob("evaluate-*")).joinpath("results.json").read_text())
    assert len(results["models"]) == 3 and "rl-dpo-2" in results["models"][2]
    (heldout,) = root.glob("rl-heldout-*")
    kinds = {json.loads(line)["kind"] for line in (heldout / "heldout.jsonl").open()}
    assert "contrast" in kinds  # red-team prompts the fake teacher does not flag are left out
    first = json.loads(next(root.glob("rl-reward-0-*")).joinpath("reward.json").read_text())
    last = json.loads(next(root.glob("rl-reward-2-*")).joinpath("reward.json").read_text())
    assert "vs_round_0" not in first and first["prompts"] == last["prompts"] >= 2
    assert 0 <= last["reward"]["low"] <= last["reward"]["value"] <= last["reward"]["high"] <= 1
    assert last["vs_round_0"]["n"] == last["prompts"]  # paired, prompt by prompt
    assert first["kl"]["n"] == 2 * first["prompts"]  # one estimate per sample
    assert isinstance(last["flags"], list)
    page = (root / "report.html").read_text("utf-8")
    assert 'id="rounds"' in page and 'id="plot-rounds"' in page  # reward per round, plotted


def test_a_grpo_round_trains_from_the_dpo_model_and_is_scored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rl.algorithm: grpo: round 1 is GRPO from the DPO model on the training prompts, the
    checks as its reward; the held-out reward and the evaluation take its model."""
    grpo = ("{max_steps: 1, batch_size: 2, gradient_accumulation: 1, generations: 2, "
            "completion_tokens: 8}")  # fmt: skip
    config = tiny_rounds_config(tmp_path, monkeypatch,
                                f"rl: {{rounds: 1, algorithm: grpo, grpo: {grpo}, {HELDOUT},\n"
                                '  prompts: {redteam: ["demo-redteam#10:12"], '
                                'contrast: ["contrast#40:43"]}}\n')  # fmt: skip
    root = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "rl", str(config), "--out", str(root)])
    assert result.exit_code == 0, result.output
    assert "rl-grpo-1 →" in result.output and "rl-label-1" not in result.output
    (model,) = root.glob("rl-grpo-1-*")
    prompts = [json.loads(line) for line in (model / "rl-prompts.jsonl").open()]
    (own,) = root.glob("rl-prompts-*")  # rl.prompts, with the teacher's verdicts
    chosen = [json.loads(line) for line in (own / "heldout.jsonl").open()]
    assert [p["id"] for p in prompts] == [p["id"] for p in chosen] and prompts
    assert "contrast" in {p["kind"] for p in prompts}
    figures = json.loads((model / "manifest.json").read_text("utf-8"))["figures"]
    assert figures["steps"] == 1 and (model / "model.gguf").is_file()
    lines = result.output.splitlines()
    assert any(line.startswith("1 ") for line in lines)  # round 1 in the rounds table
    evaluated = CliRunner().invoke(cli, ["run", str(config), "--out", str(root)])
    assert evaluated.exit_code == 0, evaluated.output
    results = json.loads(next(root.glob("evaluate-*")).joinpath("results.json").read_text())
    assert "rl-grpo-1" in results["models"][2]


def test_rl_prompts_are_for_grpo_rounds_and_without_them_grpo_takes_the_sft_prompts(
    tmp_path: Path,
) -> None:
    config = tmp_path / "run.yaml"
    base = TEACHER_RUN.format(min_auc=0.5).replace("trained: [sft]", "trained: [dpo, rl]")
    own = '  prompts: {redteam: ["demo-redteam#10:12"]}}\n'
    config.write_text(base + f"rl: {{rounds: 1, {HELDOUT},\n" + own, encoding="utf-8")
    with pytest.raises(CharterError, match=r"rl\.prompts: only GRPO rounds take prompts"):
        load_run_config(config)
    config.write_text(base + f"rl: {{rounds: 1, algorithm: grpo, {HELDOUT}}}\n", "utf-8")
    stages = {s.name: s for s in plan(load_run_config(config), tmp_path, load_backend)}
    assert stages["rl-grpo-1"].needs == ("revise", "dpo") and "rl-prompts" not in stages
    config.write_text(base + f"rl: {{rounds: 1, algorithm: grpo, grpo: {{generations: 1}}, "
                      f"{HELDOUT}}}\n", "utf-8")  # fmt: skip
    with pytest.raises(CharterError, match="generations"):  # GRPO settings checked on load
        load_run_config(config)
