"""The analysis model decides; the renderers only render. Known answers on constructed records."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest
from analysis_records import analyse, record, sweep

from lorarank.analysis.model import Thresholds, TrendVerdict, Verdict
from lorarank.analysis.sweep_info import baseline_of
from lorarank.analysis.stats import Outcome
from lorarank.analysis.summary import choose_lr, summarize

REPORT = Path(__file__).resolve().parents[1] / "src" / "lorarank" / "report"
ORCHESTRATOR = "__init__.py"  # reads the files and builds the model; every other report module renders it


def base(eval_loss: float = 2.3, general_loss: float | None = None):
    return baseline_of({"eval_loss": eval_loss, "general_loss": general_loss})


def test_choose_lr_picks_the_lower_mean_loss_and_rows_keep_its_trials():
    runs = sweep({8: [1.5, 1.7]}, lr=1e-3) + sweep({8: [1.2, 1.4]}, lr=3e-3) + sweep({16: [1.1, 1.3]}, lr=1e-3) \
        + sweep({16: [1.6, 1.6]}, lr=3e-3)
    lr = choose_lr([r for r in runs if r["rank"] == 8])
    assert lr.chosen == 3e-3 and lr.candidates == {"0.001": pytest.approx(1.6), "0.003": pytest.approx(1.3)}
    pol = summarize(runs, Thresholds()).policies["constant"]
    assert pol.rows[8].learning_rate.chosen == 3e-3 and pol.rows[16].learning_rate.chosen == 1e-3
    assert [t.trial_id for t in pol.rows[8].trials] == ["id-8-1-0.003", "id-8-2-0.003"]
    assert pol.rows[8].final_eval_loss.mean == pytest.approx(1.3)
    assert pol.per_seed_eval[8] == {1: 1.2, 2: 1.4}


def test_train_loss_is_the_mean_of_the_last_logged_windows():
    # 8 logged windows, the last quarter (2) averaged: a noisy last window does not decide
    rec = record(8, 1, 1.0)
    rec["train_losses"], rec["steps"] = [3.0, 2.0, 1.5, 1.2, 1.1, 1.0, 0.4, 1.6], list(range(1, 9))
    row = summarize([rec], Thresholds()).policies["constant"].rows[8]
    assert row.train_loss.mean == pytest.approx(1.0) and row.train_loss_range == (1.0, 1.0)


def test_time_verdict_uses_the_threshold_and_the_cost_model():
    runs = sweep({8: [1.0], 64: [1.0]})  # time 10 + 0.01·r: 0.64 / 10 = 6.4% at r = 64
    lax = summarize(runs, Thresholds(negligible_time_overhead=0.07)).policies["constant"].time
    strict = summarize(runs, Thresholds()).policies["constant"].time
    assert lax.measured_overhead == pytest.approx(0.064) and lax.negligible and not strict.negligible
    # 6·64·100 / (4·10,000 + 4·5,000·0.5) = 38,400 / 50,000
    assert strict.predicted_overhead == pytest.approx(0.768)


def test_the_model_is_frozen_and_serialises_its_enums():
    analysis = analyse({8: [1.5, 1.52, 1.48], 64: [1.2, 1.21, 1.19]})
    pol = analysis.policies["constant"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        pol.recommendation = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        pol.rows[8].final_eval_loss.mean = 0.0
    data = json.loads(json.dumps(analysis.to_dict()))["policies"]["constant"]
    assert data["pair"]["loss"]["outcome"] == "worse" and data["pair"]["low_rank_hypothesis"] == "REFUTED"
    assert data["recommendation"]["comparisons"]["8"]["level"] == pytest.approx(0.9)


def _report_trees():
    return {p.name: ast.parse(p.read_text()) for p in sorted(REPORT.glob("*.py"))}


RAW_KEYS = {"config", "axes", "environment", "data", "invocations", "eval_loss", "final_eval_loss", "accuracy",
            "general_loss", "seed", "status", "learning_rate", "alpha_policy", "argv", "train_losses"}


def test_report_holds_no_thresholds_and_no_trial_filtering():
    for name, tree in _report_trees().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):  # a threshold is a comparison with a fractional literal
                consts = [c.value for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
                assert not any(isinstance(c, float) for c in consts), f"{name}: threshold in {ast.unparse(node)}"
            if isinstance(node, ast.Constant) and node.value in ("status", "learning_rate", "alpha_policy"):
                raise AssertionError(f"{name} reads the trial field {node.value!r}: filtering belongs to analysis/")


def test_renderers_read_only_the_model():
    """No renderer takes or reads sweep.json, baseline.json or run_data records: no parameter typed as
    a raw dict, no name for those files, no lookup of their keys, no file reading. Only the
    orchestrator (report/__init__.py) loads the files and builds the model."""
    for name, tree in _report_trees().items():
        if name == ORCHESTRATOR:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.arg) and node.annotation is not None:
                ann = ast.unparse(node.annotation)
                assert ann not in ("dict", "dict | None", "list[dict]"), f"{name}: raw JSON parameter {node.arg}: {ann}"
            if isinstance(node, ast.Name):
                assert node.id not in ("sweep", "runs", "records", "run_data"), f"{name} reads `{node.id}`"
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                assert node.slice.value not in RAW_KEYS, f"{name} looks up a raw key: {ast.unparse(node)}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in ("read_json", "load_sweep"), f"{name} reads a file: {ast.unparse(node)}"
                key = node.args[0] if node.func.attr == "get" and node.args else None
                assert not (isinstance(key, ast.Constant) and key.value in RAW_KEYS), \
                    f"{name} looks up a raw key: {ast.unparse(node)}"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(m in ("json", "lorarank.store") or m.endswith(".store") for m in mods), \
                    f"{name} imports a file reader"


def test_markdown_and_plots_do_not_import_each_other():
    for name, other in (("markdown.py", "plots"), ("plots.py", "markdown")):
        tree = _report_trees()[name]
        imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names] + \
                   [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not any(m.endswith(other) for m in imported), f"{name} imports {other}"


def _with_probes(rec: dict, general: float, intruders: float) -> dict:
    rec["general_loss"] = general
    rec["intruders"] = {"k": 10, "epsilon": 0.5, "overall": {"mean": intruders},
                        "by_type": {"q_proj": {"mean": intruders}}}
    return rec


def test_recommendation_forgetting_and_intruder_trends_on_known_records():
    # eval loss: 8 worse, 16 within 0.002 of 64 (margin 5% of 1.0 = 0.05), 32 and 64 best; three seeds
    evals = {8: [1.5, 1.52, 1.48], 16: [1.302, 1.301, 1.303], 32: [1.3, 1.301, 1.299], 64: [1.3, 1.3, 1.3]}
    runs = []
    for r, xs in evals.items():
        for s, x in enumerate(xs):
            # forgetting grows by 0.1 per doubling, plus a per-seed wobble that changes each seed's slope
            wobble = 0.01 * s * (r.bit_length() - 4)
            runs.append(_with_probes(record(r, s + 1, x), 3.0 + 0.1 * (r.bit_length() - 4) + wobble, r / 8 + s))
    pol = summarize(runs, Thresholds(), base(2.3, 3.0)).policies["constant"]
    rec = pol.recommendation
    assert rec.tested and rec.best in (32, 64) and rec.recommended == 16
    assert rec.margin == pytest.approx(0.05 * 1.0)  # ε · (2.3 − 1.3)
    assert rec.comparisons[8].outcome is Outcome.WORSE and rec.comparisons[16].outcome.equivalent
    # per seed slopes 0.10, 0.11, 0.12: mean 0.11, and the CI over three seeds excludes 0
    tr = pol.forgetting_trend
    assert tr.slopes.per_seed == pytest.approx({1: 0.10, 2: 0.11, 3: 0.12}) and tr.verdict is TrendVerdict.GROWS
    assert pol.intruder_trend.verdict is TrendVerdict.GROWS
    assert pol.intruders_vs_forgetting.verdict.value == "together" and pol.intruders_vs_forgetting.rho > 0.8
    assert pol.rows[8].params_per_token == pytest.approx(800 / 500)


def test_one_seed_gives_a_provisional_pick_and_the_command_that_settles_it():
    from lorarank.report.which_rank import recommendation_line

    analysis = analyse({8: [1.31], 16: [1.30], 32: [1.5]})
    rec = analysis.policies["constant"].recommendation
    assert not rec.tested and rec.recommended is None and rec.provisional == 8 and rec.best == 16
    assert rec.lead.startswith("**No tested recommendation: one seed gives no equivalence test")
    assert "`lorarank run --ranks 8 16 32 --seeds 3`" in rec.lead
    assert recommendation_line(analysis) == ("[lorarank] which rank: rank 8, provisionally: untested with one "
                                             "seed; rerun with --seeds 3 to test it")


def test_no_intruders_anywhere_is_said_as_such():
    from lorarank.analysis.decision import trend
    from lorarank.report.which_rank import trend_words

    tr = trend("intruders", [(8, 1, 0.0), (16, 1, 0.0), (32, 1, 0.0), (8, 2, 0.0)])
    assert tr.verdict is TrendVerdict.NONE and trend_words(tr, "yes", "no") == "none at any rank (0 in all 4 trials)"
    one_seed = trend("intruders", [(8, 1, 0.0), (16, 1, 1.0), (32, 1, 2.0), (64, 1, 3.1)])
    assert one_seed.verdict is TrendVerdict.UNTESTED and one_seed.slopes.mean == pytest.approx(1.03)


def test_a_failed_trial_in_a_multi_seed_sweep_still_gives_an_analysis():
    """Rank 8's seed-1 trial failed: rank 8 shares one seed with rank 16 (its gaps are untested);
    rank 4 shares none (seed 3 only) and is left out, shown as n/a."""
    from lorarank.report.which_rank import capacity_section

    runs = [r for r in sweep({8: [1.5, 1.6], 16: [1.2, 1.21]}) if not (r["rank"] == 8 and r["seed"] == 1)]
    runs.append(record(4, 3, 1.9))
    pol = summarize(runs, Thresholds(), base()).policies["constant"]
    assert list(pol.gaps) == [8] and pol.gaps[8].n_seeds == 1 and not pol.gaps[8].tested
    text = "\n".join(capacity_section(pol))
    assert "| 4 | 0.8 | n/a |" in text and "| 8 | 1.6 | untested (one seed) |" in text


def test_hypotheses_follow_the_outcomes():
    # 8 clearly worse; 16 inconclusive (seeds scatter past δ); 32 equivalent to 64; δ = 0.05·(2.3 − 1.15)
    analysis = analyse({8: [2.0, 2.02, 1.98], 16: [1.4, 1.0, 1.2], 32: [1.15, 1.16, 1.14], 64: [1.148, 1.146, 1.147]})
    pol = analysis.policies["constant"]
    v = {h.rank: h.verdict for h in pol.hypotheses}
    assert v == {8: Verdict.CONFIRMED, 16: Verdict.INCONCLUSIVE, 32: Verdict.CONFIRMED, 64: Verdict.CONFIRMED}
    assert pol.recommendation.recommended == 32 and pol.recommendation.stopped_at == 16
    # rank barely matters, but 64 clearly beats 32: 8 is the best, 64 better than 32 beyond δ
    flat = analyse({8: [1.00, 1.01, 0.99], 16: [1.50, 1.52, 1.48], 32: [1.40, 1.43, 1.39], 64: [1.05, 1.07, 1.04]},
                   base=2.0)
    v = {h.rank: h.verdict for h in flat.policies["constant"].hypotheses}
    assert v == {8: Verdict.REFUTED, 16: Verdict.REFUTED, 32: Verdict.REFUTED, 64: Verdict.REFUTED}
    assert flat.policies["constant"].pair.low_rank_hypothesis is Verdict.CONFIRMED  # 8 better than 64


def test_no_difference_shown_is_not_called_equivalent():
    """Q2 with three seeds: a CI that holds 0 but reaches past δ is inconclusive, not equivalent."""
    # rank 8 − rank 64 = (+0.3, −0.2, +0.05): the CI holds 0; δ = 5% of (2.3 − 1.2) = 0.055
    pol = analyse({8: [1.5, 1.0, 1.25], 64: [1.2, 1.2, 1.2]}).policies["constant"]
    assert pol.pair.loss.outcome is Outcome.INCONCLUSIVE and pol.pair.loss.margin == pytest.approx(0.055)
    assert pol.pair.low_rank_hypothesis is Verdict.INCONCLUSIVE
    close = analyse({8: [1.21, 1.2, 1.19], 64: [1.2, 1.2, 1.2]}).policies["constant"]
    assert close.pair.loss.outcome is Outcome.EQUIVALENT and close.pair.low_rank_hypothesis is Verdict.CONFIRMED
