"""Calibration of a labeller against gold pairs: the statistics, the verdict, the store."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from charter.errors import CharterError
from charter.records import Label, Message, Vote
from charter.stages.calibrate import (
    CalibrationReport,
    calibration_dir,
    calibration_report,
    expected_calibration_error,
    format_report,
    load_calibration,
    save_calibration,
    verdict,
    wilson_interval,
)

GOLD = "gold.jsonl"


def make_label(
    p_first: float, votes: list[Vote] | None = None, index: int = 0, mode: str = "soft"
) -> Label:
    if votes is None:
        votes = [Vote(principle_ids=("harm",), p_shown_first=p_first, p_shown_second=p_first)]
    return Label.model_validate({
        "id": f"pair{index}",
        "prompt": (Message(role="user", content=f"question {index}"),),
        "responses": ("good reply", "bad reply"),
        "p_first": p_first,
        "votes": tuple(votes),
        "labeller": "fake/x",
        "mode": mode,
        "seed": 0,
        "constitution_sha256": "x",
    })  # fmt: skip


def report_of(labels: list[Label], labeller: str = "fake/x") -> CalibrationReport:
    return calibration_report(labels, labeller=labeller, gold=GOLD)


def test_perfect_labeller() -> None:
    report = report_of([make_label(0.9, index=i) for i in range(50)])
    assert report.pairs == 50
    assert report.accuracy == 1.0
    assert not report.at_chance
    assert report.accuracy_ci[0] > 0.9
    assert report.ece == pytest.approx(0.1)
    assert report.mean_margin == pytest.approx(0.4)
    assert report.prefers_a == pytest.approx(0.5)  # 0.9 as (A), 1 - 0.9 as (B)
    assert report.flip_rate == 0.0
    assert not report.position_biased
    assert verdict(report) == []


def test_position_biased_labeller_always_says_b() -> None:
    vote = Vote(principle_ids=("harm",), p_shown_first=0.1, p_shown_second=0.9)
    report = report_of([make_label(0.5, [vote], index=i) for i in range(40)])
    assert report.accuracy == 0.5  # every label is an exact tie: half credit
    assert report.at_chance
    assert report.prefers_a == pytest.approx(0.1)
    assert report.flip_rate == 1.0
    assert report.position_biased
    assert report.ece == pytest.approx(0.0)
    lines = verdict(report)
    assert len(lines) == 2
    assert "at chance" in lines[0] and GOLD in lines[0] and "0.50" in lines[0]
    assert "position-biased" in lines[1]
    assert "100% of comparisons" in lines[1] and "p=0.10" in lines[1]


def test_skew_to_a_without_swap_is_position_bias() -> None:
    vote = Vote(principle_ids=("harm",), p_shown_first=0.9)
    report = report_of([make_label(0.9, [vote], index=i) for i in range(30)])
    assert report.flip_rate is None
    assert report.prefers_a == pytest.approx(0.9)
    assert report.position_biased
    assert verdict(report) == [
        "labeller fake/x is position-biased: it was scored in one order only (swap off) and "
        "gives option (A) p=0.90 on average"
    ]


def test_wilson_interval_known_values() -> None:
    low, high = wilson_interval(60, 100)
    assert low == pytest.approx(0.5020, abs=5e-4)
    assert high == pytest.approx(0.6906, abs=5e-4)
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_accuracy_ci_in_report() -> None:
    labels = [make_label(0.7 if i < 60 else 0.3, index=i) for i in range(100)]
    report = report_of(labels)
    assert report.accuracy == pytest.approx(0.6)
    assert report.accuracy_ci == pytest.approx((0.5020, 0.6906), abs=5e-4)
    assert not report.at_chance


def test_below_chance_labeller_is_reported() -> None:
    report = report_of([make_label(0.2, index=i) for i in range(50)])
    assert report.accuracy == 0.0 and not report.at_chance
    (line,) = verdict(report)
    assert "prefers the rejected reply" in line


def test_per_principle_split() -> None:
    labels = []
    for i in range(6):
        # "harm" votes agree with gold, "honesty" votes pick the rejected reply.
        votes = [
            Vote(principle_ids=("harm",), p_shown_first=0.8, p_shown_second=0.8),
            Vote(principle_ids=("honesty",), p_shown_first=0.4, p_shown_second=0.2),
        ]
        labels.append(make_label(0.55, votes, index=i))
    labels.append(make_label(0.9, index=99))  # one more "harm" vote
    scores = report_of(labels).per_principle
    assert set(scores) == {"harm", "honesty"}
    assert scores["harm"].n == 7 and scores["harm"].accuracy == 1.0
    assert scores["harm"].mean_margin == pytest.approx((6 * 0.3 + 0.4) / 7)
    assert scores["honesty"].n == 6 and scores["honesty"].accuracy == 0.0
    assert scores["honesty"].mean_margin == pytest.approx(0.2)


def test_ece_hand_example() -> None:
    # Bin [0.9, 0.95): confidences 0.92, 0.94, 0.94 (the last from p=0.06, a wrong pick):
    # accuracy 2/3, confidence 0.9333 -> gap 0.2667, weight 3/4 -> 0.2.
    # Bin around 0.6: one right pick at confidence 0.6 -> gap 0.4, weight 1/4 -> 0.1.
    assert expected_calibration_error([0.92, 0.94, 0.06, 0.6]) == pytest.approx(0.3)
    assert expected_calibration_error([1.0, 0.0]) == pytest.approx(0.5)  # top bin holds 1.0
    report = report_of([make_label(p, index=i) for i, p in enumerate([0.92, 0.94, 0.06, 0.6])])
    assert report.ece == pytest.approx(0.3)


def test_no_labels_is_an_error() -> None:
    with pytest.raises(CharterError, match="no labels"):
        report_of([])


def test_format_report_lists_principles_by_count() -> None:
    votes = [
        Vote(principle_ids=("b",), p_shown_first=0.8, p_shown_second=0.8),
        Vote(principle_ids=("a",), p_shown_first=0.8, p_shown_second=0.8),
    ]
    labels = [make_label(0.8, votes, index=i) for i in range(3)]
    labels.append(make_label(0.8, index=9))  # "harm" has 1 vote, "a" and "b" 3 each
    text = format_report(report_of(labels))
    assert "accuracy     1.00  (95% CI" in text
    assert "flip rate    0%" in text
    rows = [line.split()[0] for line in text.splitlines()[-3:]]
    assert rows == ["a", "b", "harm"]


def test_store_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARTER_HOME", str(tmp_path))
    assert calibration_dir() == tmp_path / "calibration"
    names = ["openai/gpt-4o:2024-08", "local//models/x.gguf", "openai/gpt-4o_2024-08"]
    paths = set()
    for name in names:
        assert load_calibration(name) is None
        report = report_of([make_label(0.9)], labeller=name)
        path = save_calibration(report)
        assert path.parent == tmp_path / "calibration"
        assert "/" not in path.name and ":" not in path.name
        assert load_calibration(name) == report
        paths.add(path)
    assert len(paths) == len(names)  # names that sanitise alike still get their own files


def test_corrupt_store_file_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CHARTER_HOME", str(tmp_path))
    path = save_calibration(report_of([make_label(0.9)], labeller="openai/m"))
    path.write_text("{not json", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="charter.stages.calibrate"):
        assert load_calibration("openai/m") is None
    assert "unreadable calibration file" in caplog.text


def test_a_report_is_only_trusted_for_the_weights_it_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from charter.models import model_identity

    monkeypatch.setenv("CHARTER_HOME", str(tmp_path))
    gguf = tmp_path / "judge.gguf"
    gguf.write_bytes(b"weights measured")
    name = f"local/{gguf}"
    measured = model_identity(name)
    assert measured.startswith(f"{name}@sha256:")
    report = calibration_report([make_label(0.9)], labeller=name, gold=GOLD, model=measured,
                                gold_sha256="ab" * 32)  # fmt: skip
    save_calibration(report)
    assert load_calibration(name, model_identity(name)) == report
    gguf.write_bytes(b"other weights, same file name")
    with caplog.at_level(logging.WARNING, logger="charter.stages.calibrate"):
        assert load_calibration(name, model_identity(name)) is None
    assert "measured other weights" in caplog.text
