"""Accuracy tasks: the pinned text corpus, bits per byte, budgets that scale, time to accuracy,
and the reports' warning on mixed corpora."""

from __future__ import annotations

import math
import socket
import warnings

import pytest
import torch
import torch.nn.functional as F

from bench.pipeline import finish_info
from bench.settings import TIERS, Settings
from reports.errors import ReportWarning
from reports.load import run_from_extra_info, warn_mixed_corpora
from reports.synthetic import make_extra_info
from reports.table import render_tables
from workloads import FAMILIES, SIZE_ORDER, build_case
from workloads.accuracy import evaluate
from workloads.budget import BUDGET_LEVELS, accuracy_budget
from workloads.registry import accuracy_flops, workload
from workloads.tasks import BitsPerByteScorer
from workloads.text import HEADER, TEST_FILES, load_corpus
from workloads.tta import DEFAULT_TARGETS, TTAConfig, parse_targets, summarize

CORPUS_SHA256 = "0b3ca29b26d5e0b0de5d14c81b519cf0f94ea62e00900dc89619039f7411835b"


# ------------------------------------------------------------------------------------------
# the corpus


def test_corpus_loads_offline_with_its_pinned_hash_and_fixed_split(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the corpus must load without the network")

    monkeypatch.setattr(socket, "socket", no_network)
    load_corpus.cache_clear()
    corpus = load_corpus()
    assert corpus.sha256 == CORPUS_SHA256
    assert (len(corpus.train), len(corpus.test)) == (906_294, 103_676)
    header = HEADER.format(name=TEST_FILES[0]).encode()
    assert bytes(corpus.test[: len(header)].tolist()) == header  # held-out test split: whole files
    assert header not in bytes(corpus.train.tolist())
    windows = corpus.eval_windows(128)
    assert windows.shape == (256, 129) and torch.equal(windows, load_corpus().eval_windows(128))


# ------------------------------------------------------------------------------------------
# bits per byte


def test_bits_per_byte_equals_a_hand_computation():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 256, generator=gen)  # (B, T, vocab)
    targets = torch.randint(0, 256, (2, 3), generator=gen)
    scorer = BitsPerByteScorer("tiny", "0" * 64)
    scorer.add(logits, targets)
    result = scorer.result()
    nats = []
    for b in range(2):
        for t in range(3):
            row = logits[b, t].tolist()
            log_sum = math.log(sum(math.exp(v) for v in row))
            nats.append(log_sum - row[targets[b, t]])
    assert result["bits_per_byte"] == pytest.approx(sum(nats) / 6 / math.log(2), rel=1e-6)
    expected_correct = (logits.argmax(-1) == targets).flatten()
    assert torch.equal(result["_correct"], expected_correct)
    assert result["accuracy"] == pytest.approx(float(expected_correct.float().mean()))


def test_evaluate_scores_a_tiny_model_on_the_held_out_text():
    """A model of one embedding (logits = a table row per input byte): the harness's bits per
    byte equals the cross-entropy computed directly on the held-out windows."""
    case = build_case("transformer", "xs", "fp32")
    torch.manual_seed(0)
    table = torch.nn.Embedding(256, 256)
    with torch.no_grad():
        result = evaluate(case.ctx, table)
        windows = load_corpus().eval_windows(128)
        direct = F.cross_entropy(table(windows[:, :-1]).flatten(0, 1), windows[:, 1:].flatten())
    assert result["bits_per_byte"] == pytest.approx(float(direct) / math.log(2), rel=1e-5)
    assert result["accuracy_metric"] == "next_byte_top1" and result["accuracy_corpus_sha256"] == CORPUS_SHA256
    assert len(result["_correct"]) == 256 * 128
    uniform = evaluate(case.ctx, lambda x: torch.zeros(*x.shape, 256))
    assert uniform["bits_per_byte"] == pytest.approx(8.0)


# ------------------------------------------------------------------------------------------
# budgets


@pytest.mark.parametrize("family", list(FAMILIES))
def test_budget_grows_with_size_and_respects_the_tier_cap(family):
    W = FAMILIES[family]
    for level in BUDGET_LEVELS:
        budgets = [accuracy_budget(workload(family, size), size, level) for size in SIZE_ORDER]
        samples = [b.train_samples for b in budgets]
        assert samples == sorted(samples), (level, samples)  # a larger model trains on at least as much
        assert all(W.accuracy_min_steps <= b.steps <= W.accuracy_max_steps[level] for b in budgets)
        lrs = [b.lr for b in budgets]
        assert lrs == sorted(lrs, reverse=True)  # and takes smaller steps
    for size in SIZE_ORDER:
        steps = [accuracy_budget(workload(family, size), size, level).steps for level in BUDGET_LEVELS]
        assert steps == sorted(steps)  # smoke <= standard <= full
    assert [TIERS[t].accuracy_budget for t in ("smoke", "standard", "full")] == list(BUDGET_LEVELS)


def test_budget_schedule_warms_up_and_decays_to_a_tenth():
    budget = accuracy_budget(workload("dense", "xs"), "xs", "standard")
    rates = [budget.lr_at(step) for step in range(budget.steps)]
    assert rates[0] < rates[budget.warmup_steps - 1] == pytest.approx(budget.lr)
    assert rates[-1] == pytest.approx(0.1 * budget.lr)


def test_accuracy_flops_count_the_budget_and_time_to_accuracy():
    plain = accuracy_flops("transformer", "s", "train", "smoke")
    budget = accuracy_budget(workload("transformer", "s"), "s", "smoke")
    assert plain > workload("transformer", "s").train_flops_per_sample() * budget.batch_size * budget.steps
    assert accuracy_flops("transformer", "s", "train", "standard") > plain
    with_tta = accuracy_flops("transformer", "s", "train", "smoke", tta_runs=3)
    assert with_tta > 4 * plain  # three runs at their worst, on top of the accuracy task
    settings = Settings(tier="smoke", time_to_accuracy=True)
    assert settings.tta.runs == 3 and settings.accuracy_flops("transformer", "s", "train") == with_tta


# ------------------------------------------------------------------------------------------
# time to accuracy


def run(time_s: float | None, steps: int | None = 10) -> dict:
    return {"reached": time_s is not None, "time_s": time_s, "steps": steps if time_s is not None else None}


def test_trimmed_mean_drops_the_fastest_and_the_slowest():
    summary, why = summarize([run(5.0, 50), run(1.0, 10), run(3.0, 30), run(100.0, 999), run(4.0, 40)])
    assert why is None
    assert summary == {"time_to_accuracy_s": pytest.approx(4.0), "steps_to_accuracy": pytest.approx(40.0)}


def test_a_run_that_misses_the_target_counts_as_slowest_and_never_as_a_time():
    summary, why = summarize([run(2.0), run(None), run(3.0), run(4.0), run(5.0)])
    assert why is None and summary["time_to_accuracy_s"] == pytest.approx(4.0)  # (3 + 4 + 5) / 3
    summary, why = summarize([run(2.0), run(None), run(3.0), run(None), run(5.0)])
    assert summary == {"time_to_accuracy_s": None, "steps_to_accuracy": None}
    assert why == "3 of 5 runs reached the target; the trimmed mean needs 4"


def test_tta_runs_report_missed_targets_and_early_hits():
    case = build_case("dense", "xs", "fp32", accuracy_steps=10)
    missed = case.runnable.time_to_accuracy(TTAConfig(runs=3, targets=(("dense", 1.0),)))
    assert missed["time_to_accuracy_s"] is None and missed["steps_to_accuracy"] is None
    assert "0 of 3 runs reached" in missed["_reasons"]["time_to_accuracy_s"]
    assert all(r["reached"] is False and r["time_s"] is None and r["spent_s"] > 0 for r in missed["tta_runs"])
    assert [r["seed"] for r in missed["tta_runs"]] == [0, 1, 2]
    hit = case.runnable.time_to_accuracy(TTAConfig(runs=3, targets=(("dense-xs", 0.01),)))
    assert hit["steps_to_accuracy"] == FAMILIES["dense"].accuracy_eval_every  # met at the first evaluation
    assert hit["time_to_accuracy_s"] > 0 and hit["tta_target"] == 0.01 and hit["tta_metric"] == "accuracy"
    case.close()


def test_tta_targets_parse_and_the_most_specific_wins():
    config = TTAConfig(targets=parse_targets("dense=0.9, transformer=2.5,transformer-s=2.3"))
    assert config.target("dense", "m") == 0.9
    assert (config.target("transformer", "s"), config.target("transformer", "xs")) == (2.3, 2.5)
    assert config.target("cnn", "xs") == DEFAULT_TARGETS["cnn"]["xs"]
    for bad, match in [
        ("dense", "FAMILY"),
        ("dense=x", "FAMILY"),
        ("rnn=0.5", "allowed: dense, cnn, transformer"),
        ("dense=1.5", "accuracy in"),
        ("transformer-xxl=2", "allowed: xs"),
    ]:
        with pytest.raises(ValueError, match=match):
            TTAConfig(targets=parse_targets(bad))
    with pytest.raises(ValueError, match="--tta-runs"):
        Settings(time_to_accuracy=True, tta_runs=0)


# ------------------------------------------------------------------------------------------
# results and reports


def test_private_fields_do_not_reach_the_result():
    info = {"family": "dense", "phase": "infer", "variant": "int8", "accuracy": 0.5, "_correct": [True], "_reasons": {}}
    info = finish_info(info)
    assert "_correct" not in info and "_reasons" not in info


def text_result(variant: str, sha256: str) -> dict:
    return make_extra_info("transformer", "xs", variant, accuracy_corpus_sha256=sha256)


def test_reports_warn_once_on_results_from_different_corpora():
    same = run_from_extra_info([text_result("fp32", CORPUS_SHA256), text_result("amp-bf16", CORPUS_SHA256)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_mixed_corpora([same])
    other = run_from_extra_info([text_result("fp32", "f" * 64)], source="other.json")
    with pytest.warns(ReportWarning, match=r"2 different text corpora .*ffffffffffff \(other.json\)") as caught:
        warn_mixed_corpora([same, other])
    assert len(caught) == 1


def test_tables_show_bits_per_byte_and_time_to_accuracy_against_fp32():
    results = [
        text_result("fp32", CORPUS_SHA256) | {"time_to_accuracy_s": 10.0, "steps_to_accuracy": 50, "tta_target": 3.8},
        text_result("amp-bf16", CORPUS_SHA256) | {"time_to_accuracy_s": 25.0, "steps_to_accuracy": 50},
    ]
    results[1]["tta_target"] = 3.8
    text = render_tables(results, label="test machine")
    assert "| bits/byte" in text and "2.500 (1.00x)" in text
    assert "## Time to accuracy" in text and "25 s (2.50x)" in text
    assert "## Time to accuracy" not in render_tables([text_result("fp32", CORPUS_SHA256)], label="m")


def test_plots_draw_bits_per_byte_for_text_and_accuracy_otherwise():
    from reports.plot import PANELS, panels

    text = run_from_extra_info([text_result("fp32", CORPUS_SHA256)]).results
    digits = run_from_extra_info([make_extra_info("dense", "xs", "fp32")]).results
    assert panels(text) == (*PANELS, "bits_per_byte") and panels(digits) == (*PANELS, "accuracy")
