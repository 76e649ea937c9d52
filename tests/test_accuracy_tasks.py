"""Accuracy tasks: the pinned text corpus, bits per byte, the fit/validation/test splits, sharding
by data rank, budgets that scale and their schedule, the trained reference and compressed
variants on the text task, time to accuracy, and the reports' warning on mixed corpora."""

from __future__ import annotations

import dataclasses
import itertools
import math
import socket
import time
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
from workloads import FAMILIES, SIZE_ORDER, accuracy, build_case
from workloads.accuracy import evaluate
from workloads.budget import BUDGET_LEVELS, accuracy_budget, set_lr
from workloads.compress.distill import SETTINGS
from workloads.compressed import RANK_CANDIDATES, calibration
from workloads.context import CaseContext
from workloads.data import load_task
from workloads.reference import CACHE_ENV, cache_path, reference_key
from workloads.registry import accuracy_flops, workload
from workloads.tasks import (
    SPLITS,
    VALIDATION_FRACTION,
    VALIDATION_WINDOWS,
    BitsPerByteScorer,
    task_for,
    validation_indices,
)
from workloads.text import HEADER, TEST_FILES, TRAIN_FILES, load_corpus
from workloads.transformer import Transformer
from workloads.tta import DEFAULT_TARGETS, TTAConfig, parse_targets, summarize
from workloads.variants import TorchTrainer

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
# splits, sharding, the trainer and its schedule


def test_digits_validation_is_a_fixed_seeded_part_of_the_training_split():
    task = task_for(workload("dense", "xs"))
    n_train = len(load_task(None).y_train)
    fit, validation = validation_indices(n_train)
    assert len(validation) == int(n_train * VALIDATION_FRACTION) and len(fit) + len(validation) == n_train
    assert not set(fit.tolist()) & set(validation.tolist())
    assert all(torch.equal(a, b) for a, b in zip(validation_indices(n_train), (fit, validation), strict=True))
    assert [len(task.splits[s][1]) for s in SPLITS] == [len(fit), len(validation), 360]
    x_val, _ = task.splits["validation"]
    assert torch.equal(x_val, workload("dense", "xs").encode_images(load_task(None).x_train[validation]))

    def rows(x: torch.Tensor) -> set[bytes]:
        return {row.numpy().tobytes() for row in x.flatten(1)}

    trained = rows(torch.cat([x for x, _ in itertools.islice(task.train_batches(64, seed=0), 40)]))  # > 2 epochs
    fit_rows = rows(task.splits["fit"][0])
    assert trained <= fit_rows and not trained & (rows(x_val) - fit_rows)  # training reads the fit split only


def test_text_validation_is_the_tail_of_each_training_file_and_training_reads_the_rest():
    task = task_for(workload("transformer", "xs"))
    files = load_corpus().train_files()
    assert len(files) == len(TRAIN_FILES) and sum(map(len, files)) == len(load_corpus().train)
    assert len(task.fit) + len(task.validation) == len(load_corpus().train)
    tails = [f[len(f) - int(len(f) * VALIDATION_FRACTION) :] for f in files]
    assert torch.equal(task.validation, torch.cat(tails))  # held out from training, not from the test files
    windows = task.windows("validation")
    assert windows.shape == (VALIDATION_WINDOWS, 129) and torch.equal(windows, task.windows("validation"))
    inputs, targets = next(task.train_batches(8, seed=0))
    assert inputs.shape == targets.shape == (8, 128) and torch.equal(inputs[:, 1:], targets[:, :-1])
    fit_bytes = bytes(task.fit.tolist())
    assert all(bytes(w.tolist()) in fit_bytes for w in torch.cat([inputs, targets[:, -1:]], 1))


@pytest.mark.parametrize("family", ["dense", "transformer"])
def test_evaluate_scores_the_validation_split_apart_from_test(family):
    ctx = build_case(family, "xs", "fp32").ctx
    model = ctx.workload.build_model().eval()
    with torch.no_grad():
        val, test = evaluate(ctx, model, on="validation"), evaluate(ctx, model)
    per_window = 128 if family == "transformer" else 1
    assert len(val["_correct"]) == (VALIDATION_WINDOWS * per_window if per_window > 1 else 215)
    assert len(test["_correct"]) == (256 * 128 if per_window > 1 else 360)
    assert (val["bits_per_byte"] is None) == (family == "dense")
    with pytest.raises(ValueError, match="split: unknown 'train'; allowed: fit, validation, test"):
        evaluate(ctx, model, on="train")


@pytest.mark.parametrize(("data_parallel", "same"), [(True, False), (False, True)])
@pytest.mark.parametrize("family", ["dense", "transformer"])
def test_batches_shard_over_data_ranks_and_shared_batches_stay_whole(monkeypatch, family, data_parallel, same):
    """Data-parallel ranks read the halves of one global batch; a pipeline's or tensor
    parallel's ranks (``data_parallel=False``) read the same whole batch."""
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    w = workload(family, "xs")
    one = CaseContext(family, "xs", "fp32", "train", w, torch.device("cpu"))
    whole = next(accuracy.batches(one, seed=3, batch_size=8))
    got = []
    for rank in (0, 1):
        monkeypatch.setattr(torch.distributed, "get_rank", lambda rank=rank: rank)
        ctx = CaseContext(family, "xs", "fp32", "train", w, torch.device("cpu"), 2, data_parallel=data_parallel)
        got.append(next(accuracy.batches(ctx, seed=3, batch_size=8 if not data_parallel else 4)))
    assert torch.equal(got[0][0], got[1][0]) is same
    if data_parallel:  # the two shards are the global batch of 8 that one rank would read
        assert torch.equal(torch.cat([got[0][0], got[1][0]]), whole[0])
    else:
        assert torch.equal(got[0][0], whole[0]) and torch.equal(got[0][1], whole[1])


def test_make_trainer_gets_the_task_loss_and_the_budget_schedule():
    """``make_trainer(model, loss_fn, lr)``: the task's loss, the budget's peak rate, and every
    step at the rate of the budget's schedule."""
    ctx = build_case("transformer", "xs", "fp32", accuracy_steps=4).ctx
    budget = accuracy.case_budget(ctx)
    seen: dict = {"rates": []}

    class Recording(TorchTrainer):
        def train_step(self, inputs, targets):
            seen["rates"].append(self.optimizer.param_groups[0]["lr"])
            seen["shape"] = tuple(inputs.shape)
            return super().train_step(inputs, targets)

    def make_trainer(model, loss_fn, lr):
        seen["lr"], seen["loss"] = lr, loss_fn
        return Recording(model, loss_fn, lr, ctx.device)

    result = accuracy.train_and_evaluate(ctx, make_trainer)
    assert seen["lr"] == budget.lr == Transformer.accuracy_lr and seen["shape"] == (budget.batch_size, 128)
    logits, targets = torch.randn(2, 5, 256), torch.randint(0, 256, (2, 5))
    assert seen["loss"](logits, targets) == pytest.approx(
        float(F.cross_entropy(logits.flatten(0, 1), targets.flatten()))
    )
    assert seen["rates"] == pytest.approx([budget.lr_at(step) for step in range(4)])
    assert result["accuracy_steps"] == 4 and result["bits_per_byte"] > 0


def test_training_stops_before_the_deadline_it_cannot_meet():
    """Within ``accuracy.deadline``, 40 steps of 50 ms with 0.5 s left stop early with the pace
    in the reason (the pipeline then reports accuracy absent, not a timeout); with room, all run."""
    ctx = build_case("dense", "xs", "fp32", accuracy_steps=40).ctx
    budget = accuracy.case_budget(ctx)

    class Slow:
        steps = 0

        def train_step(self, inputs, targets):
            Slow.steps += 1
            time.sleep(0.05)

    with accuracy.deadline(time.monotonic() + 0.5), pytest.raises(accuracy.OutOfTime, match=r"of its 40 steps done"):
        accuracy.train(ctx, Slow(), budget, 0)
    assert 2 <= Slow.steps < 10  # it stops once a step after the first has set the pace
    Slow.steps = 0
    with accuracy.deadline(time.monotonic() + 60):
        accuracy.train(ctx, Slow(), budget, 0)
    assert Slow.steps == 40
    Slow.steps = 0
    accuracy.train(ctx, Slow(), dataclasses.replace(budget, steps=5), 0)  # outside it: never checked
    assert Slow.steps == 5


def test_set_lr_reaches_a_trainer_whose_optimizer_comes_later():
    class Lazy:  # a pipeline stage's trainer: its optimizer is made at the first step
        def set_lr(self, lr):
            self.lr = lr

    lazy = Lazy()
    assert set_lr(lazy, 0.5) and lazy.lr == 0.5
    assert set_lr(object(), 0.5) is False


# ------------------------------------------------------------------------------------------
# the trained reference and the compressed variants on the text task


def test_reference_key_holds_the_task_data_and_the_budget():
    def context(family: str, level: str) -> CaseContext:  # the context alone: no reference is trained
        return CaseContext(
            family, "xs", "fp32", "infer", workload(family, "xs"), torch.device("cpu"), budget_level=level
        )

    text = context("transformer", "smoke")
    key = reference_key(text)
    assert key["data"]["corpus_sha256"] == CORPUS_SHA256 and key["data"]["validation"][0] == VALIDATION_FRACTION
    assert (key["budget"], key["steps"]) == ("smoke", accuracy.case_budget(text).steps)  # the fp32 case's budget
    standard = dataclasses.replace(text, budget_level="standard")
    assert reference_key(standard)["steps"] != key["steps"] and cache_path(standard) != cache_path(text)
    digits = reference_key(context("dense", "standard"))
    assert len(digits["data"]["sha256"]) == 64 and digits["data"]["task"] == "digits"


@pytest.fixture
def reference_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    return tmp_path


def test_int8_calibrates_on_byte_windows_of_the_fit_split():
    w = workload("transformer", "xs")
    ctx = CaseContext("transformer", "xs", "int8", "infer", w, torch.device("cpu"), batch_size=4)
    batches = calibration(ctx)
    assert len(batches) == 8 and all(b.shape == (4, 128) and b.dtype == torch.int64 for b in batches)
    fit_bytes = bytes(task_for(ctx.workload).fit.tolist())
    assert bytes(batches[0][0].tolist()) in fit_bytes


@pytest.mark.parametrize("variant", ["distill", "lowrank"])
def test_compressed_transformer_is_judged_per_predicted_byte(reference_cache, variant):
    """The reference trains on text (tiny budget), the variant compresses it (distillation on
    per-token logits; the rank chosen on the validation windows), and its accuracy fields carry
    bits per byte, McNemar over the predicted bytes and MLPerf's targets."""
    case = build_case("transformer", "xs", variant, phase="infer", batch_size=4, accuracy_steps=2)
    info, result = case.runnable.extra_info(), case.runnable.accuracy()
    case.close()
    assert result["accuracy_metric"] == "next_byte_top1" and result["bits_per_byte"] > 0
    assert result["accuracy_corpus_sha256"] == CORPUS_SHA256
    assert 0 <= result["errors_added"] + result["errors_fixed"] <= 256 * 128 and 0 <= result["mcnemar_p"] <= 1
    assert isinstance(result["meets_99"], bool) and result["accuracy_reference"] > 0
    assert info["reference_cached"] is False and list(reference_cache.glob("references/transformer-xs-*.pt"))
    if variant == "distill":
        assert info["distill_steps"] == 2 and info["student_params"] < info["teacher_params"]
        assert (info["distill_temperature"], info["distill_alpha"]) == SETTINGS["text"] == (1.0, 0.5)
        assert 0 <= info["accuracy_no_teacher"] <= 1
    else:
        assert set(info["rank_scores"]) <= {f"{k:.4g}" for k in RANK_CANDIDATES} and info["rank_target"] > 0


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
