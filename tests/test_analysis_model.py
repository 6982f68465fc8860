"""The analysis model decides; the renderers only render. Known answers on constructed records."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lorarank.analysis.model import Thresholds
from lorarank.analysis.summary import choose_lr, summarize

REPORT = Path(__file__).resolve().parents[1] / "src" / "lorarank" / "report"


def record(rank: int, seed: int, loss: float, lr: float = 1e-3, policy: str = "constant", time: float = 10.0) -> dict:
    """A run_data record with the fields the analysis reads (P = 100 params per rank)."""
    return {"status": "ok", "method": "lora", "rank": rank, "seed": seed, "learning_rate": lr, "alpha_policy": policy,
            "trial_id": f"id-{rank}-{seed}-{lr:g}", "name": f"rank_{rank}_s{seed}", "trainable_params": 100 * rank,
            "total_params": 10_000, "trainable_ratio": rank / 100, "effective_scale": 2.0, "lora_alpha": 2.0 * rank,
            "adapter_bytes": 400 * rank, "final_eval_loss": loss, "final_train_loss": loss - 0.1,
            "training_time_seconds": time + 0.01 * rank, "tokens_per_second": 100.0, "peak_memory_bytes": 2 ** 30,
            "accuracy": None, "spectra": None, "steps": [1, 2], "train_losses": [loss + 1, loss],
            "eval_steps": [2], "eval_losses": [loss], "params_per_rank": 100,
            "matmul_params": {"body": 10_000, "head": 5_000}, "tokens_trained": 1000, "completion_tokens_trained": 500}


def sweep(losses: dict[int, list[float]], **kw) -> list[dict]:
    """losses: rank -> eval loss per seed (seeds 1, 2, ...)."""
    return [record(r, s + 1, x, **kw) for r, xs in losses.items() for s, x in enumerate(xs)]


def verdicts(analysis, policy="constant") -> dict[int, str]:
    return {h.rank: h.verdict for h in analysis.policies[policy].hypotheses}


def test_hypotheses_confirmed_when_small_ranks_underfit_and_64_plateaus():
    # 8 clearly worse; 16 reaches 91% of the best improvement ((2.3 - 1.25) / (2.3 - 1.15)); 32 and 64 tied with 3 seeds
    runs = sweep({8: [2.0, 2.02, 1.98], 16: [1.24, 1.26, 1.25], 32: [1.15, 1.16, 1.14], 64: [1.151, 1.149, 1.15]})
    analysis = summarize(runs, Thresholds(tolerance=0.02), baseline={"eval_loss": 2.3})
    v = verdicts(analysis)
    assert v == {8: "CONFIRMED", 16: "CONFIRMED", 32: "CONFIRMED", 64: "CONFIRMED"}
    h16 = analysis.policies["constant"].hypotheses[1].evidence
    assert "91% of the best rank's eval-loss improvement" in h16 and "at least 90%" in h16


def test_hypotheses_refuted_when_rank_barely_matters_but_64_improves():
    # 8 within noise of the best (best = 8 itself); 16 and 32 measurably worse; 64 clearly better than 32
    runs = sweep({8: [1.00, 1.01, 0.99], 16: [1.50, 1.52, 1.48], 32: [1.40, 1.41, 1.39], 64: [1.05, 1.06, 1.04]})
    analysis = summarize(runs, Thresholds(tolerance=0.02), baseline={"eval_loss": 2.0})
    v = verdicts(analysis)
    assert v == {8: "REFUTED", 16: "REFUTED", 32: "REFUTED", 64: "REFUTED"}
    pol = analysis.policies["constant"]
    assert pol.knee.knee == 8 and pol.knee.where == "smallest"
    assert pol.low_rank_hypothesis == "SUPPORTED (the small rank is even better)"


def test_balance_threshold_is_a_field_of_the_model():
    runs = sweep({16: [1.25, 1.26, 1.24], 32: [1.15, 1.16, 1.14]})
    strict = summarize(runs, Thresholds(tolerance=0.02, balance_share=0.95), baseline={"eval_loss": 2.3})
    loose = summarize(runs, Thresholds(tolerance=0.02, balance_share=0.9), baseline={"eval_loss": 2.3})
    assert verdicts(strict)[16] == "REFUTED" and verdicts(loose)[16] == "CONFIRMED"  # 16 reaches 91%


def test_choose_lr_picks_the_lower_mean_loss_and_rows_keep_its_trials():
    runs = sweep({8: [1.5, 1.7]}, lr=1e-3) + sweep({8: [1.2, 1.4]}, lr=3e-3) + sweep({16: [1.1, 1.3]}, lr=1e-3) \
        + sweep({16: [1.6, 1.6]}, lr=3e-3)
    lr = choose_lr([r for r in runs if r["rank"] == 8])
    assert lr.chosen == 3e-3 and lr.candidates == {"0.001": pytest.approx(1.6), "0.003": pytest.approx(1.3)}
    pol = summarize(runs, Thresholds(tolerance=0.02)).policies["constant"]
    assert pol.rows[8].learning_rate.chosen == 3e-3 and pol.rows[16].learning_rate.chosen == 1e-3
    assert [t.trial_id for t in pol.rows[8].trials] == ["id-8-1-0.003", "id-8-2-0.003"]
    assert pol.rows[8].final_eval_loss.mean == pytest.approx(1.3)
    assert pol.per_seed_eval[8] == {1: 1.2, 2: 1.4}


def test_time_verdict_uses_the_threshold_and_the_cost_model():
    runs = sweep({8: [1.0], 64: [1.0]})  # time 10 + 0.01·r: 0.64 / 10 = 6.4% at r = 64
    lax = summarize(runs, Thresholds(tolerance=0.02, negligible_time_overhead=0.07)).policies["constant"].time
    strict = summarize(runs, Thresholds(tolerance=0.02)).policies["constant"].time
    assert lax.measured_overhead == pytest.approx(0.064) and lax.negligible and not strict.negligible
    # 6·64·100 / (4·10,000 + 4·5,000·0.5) = 38,400 / 50,000
    assert strict.predicted_overhead == pytest.approx(0.768)


def _report_trees():
    return {p.name: ast.parse(p.read_text()) for p in sorted(REPORT.glob("*.py"))}


def test_report_holds_no_thresholds_and_no_trial_filtering():
    for name, tree in _report_trees().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):  # a threshold is a comparison with a fractional literal
                consts = [c.value for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
                assert not any(isinstance(c, float) for c in consts), f"{name}: threshold in {ast.unparse(node)}"
            if isinstance(node, ast.Constant) and node.value in ("status", "learning_rate", "alpha_policy"):
                raise AssertionError(f"{name} reads the trial field {node.value!r}: filtering belongs to analysis/")


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
            # forgetting grows by 0.1 per doubling; intruders too, with seed jitter
            runs.append(_with_probes(record(r, s + 1, x), 3.0 + 0.1 * (r.bit_length() - 4) + 0.01 * s, r / 8 + s))
    pol = summarize(runs, Thresholds(tolerance=0.02), baseline={"eval_loss": 2.3, "general_loss": 3.0}).policies[
        "constant"]
    rec = pol.recommendation
    assert rec.tested and rec.best in (32, 64) and rec.recommended == 16
    assert rec.margin == pytest.approx(0.05 * 1.0)  # ε · (2.3 − 1.3)
    assert rec.tests[8].equivalent is False and rec.tests[16].equivalent is True
    assert pol.forgetting_trend.verdict == "grows" and pol.forgetting_trend.slope == pytest.approx(0.1)
    assert pol.intruder_trend.verdict == "grows"
    assert pol.intruders_vs_forgetting.verdict == "together" and pol.intruders_vs_forgetting.rho > 0.8
    assert pol.rows[16].forgetting.mean == pytest.approx(0.11)  # 0.1·(bit_length 5 − 4) + mean jitter 0.01
    assert pol.rows[8].params_per_token == pytest.approx(800 / 500)


def test_one_seed_gives_a_provisional_pick_and_the_command_that_settles_it():
    from lorarank.report.which_rank import recommendation_line, recommendation_text

    runs = sweep({8: [1.31], 16: [1.30], 32: [1.5]})
    analysis = summarize(runs, Thresholds(tolerance=0.02), baseline={"eval_loss": 2.3})
    rec = analysis.policies["constant"].recommendation
    assert not rec.tested and rec.recommended is None and rec.provisional == 8 and rec.best == 16
    sweep_json = {"environment": {"argv": ["run", "--ranks", "8", "16", "32", "--seeds", "1"]}}
    text = recommendation_text(rec, sweep_json)
    assert text.startswith("**No tested recommendation: one seed gives no equivalence test")
    assert "`lorarank run --ranks 8 16 32 --seeds 3`" in text
    assert recommendation_line(analysis) == ("[lorarank] which rank: rank 8, provisionally: untested with one "
                                             "seed; rerun with --seeds 3 to test it")


def test_no_intruders_anywhere_is_said_as_such():
    from lorarank.analysis.decision import trend
    from lorarank.report.which_rank import _trend_words

    tr = trend("intruders", [(8, 0.0), (16, 0.0), (32, 0.0), (8, 0.0)], 0.95)
    assert tr.verdict == "none" and _trend_words(tr, "yes", "no") == "none at any rank (0 in all 4 trials)"
    assert trend("intruders", [(8, 0.0), (16, 1.0), (32, 2.0), (64, 3.1)], 0.95).verdict == "grows"


def test_a_failed_trial_in_a_multi_seed_sweep_still_gives_an_analysis():
    """Rank 8's seed-1 trial failed: rank 8 shares one seed with rank 16 (the one-seed tolerance
    decides its divergence); rank 4 shares none (seed 3 only) and is left out, shown as n/a."""
    from lorarank.report.which_rank import capacity_section

    runs = [r for r in sweep({8: [1.5, 1.6], 16: [1.2, 1.21]}) if not (r["rank"] == 8 and r["seed"] == 1)]
    runs.append(record(4, 3, 1.9))
    pol = summarize(runs, Thresholds(tolerance=0.02), baseline={"eval_loss": 2.3}).policies["constant"]
    div = pol.divergence
    assert list(div) == [8] and div[8].n_seeds == 1 and "one seed" in div[8].rule
    assert div[8].step == 2  # 1.6 − 1.21 = 0.39 > tolerance 0.02 · 1.205
    lines = capacity_section(pol)
    assert "| 4 | 0.8 | n/a |" in "\n".join(lines) and "| 8 | 1.6 | step 2 |" in "\n".join(lines)


def test_no_difference_shown_is_not_called_equivalent():
    """Q2 with three seeds: a CI that contains 0 but reaches past δ is undecided, not equivalent."""
    # rank 8 − rank 64 = (+0.3, −0.2, +0.05): the 95% CI contains 0; δ = 5% of (2.3 − 1.2) = 0.055
    runs = sweep({8: [1.5, 1.0, 1.25], 64: [1.2, 1.2, 1.2]})
    pol = summarize(runs, Thresholds(tolerance=0.02), baseline={"eval_loss": 2.3}).policies["constant"]
    assert pol.small_vs_large.verdict == "inconclusive" and "TOST within δ = 0.055" in pol.small_vs_large.rule
    assert pol.low_rank_hypothesis.startswith("UNDECIDED")
    # tight seeds within δ: equivalent, and the hypothesis is supported
    close = summarize(sweep({8: [1.21, 1.2, 1.19], 64: [1.2, 1.2, 1.2]}), Thresholds(tolerance=0.02),
                      baseline={"eval_loss": 2.3}).policies["constant"]
    assert close.small_vs_large.verdict == "equivalent" and close.low_rank_hypothesis == "SUPPORTED"
