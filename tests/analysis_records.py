"""run_data-style records and a sweep.json for the analysis and coherence tests (known answers)."""

from __future__ import annotations

from lorarank.analysis.model import Thresholds
from lorarank.analysis.sweep_info import baseline_of, setup_of
from lorarank.analysis.summary import summarize


def record(rank: int, seed: int, loss: float, lr: float = 1e-3, policy: str = "constant", time: float = 10.0,
           accuracy: float | None = None) -> dict:
    """A run_data record with the fields the analysis reads (P = 100 params per rank)."""
    acc = None if accuracy is None else {"overall": accuracy, "per_family": {"all": accuracy}, "n": 48, "samples": []}
    return {"status": "ok", "method": "lora", "rank": rank, "seed": seed, "learning_rate": lr, "alpha_policy": policy,
            "trial_id": f"id-{rank}-{seed}-{lr:g}", "name": f"rank_{rank}_s{seed}", "trainable_params": 100 * rank,
            "total_params": 10_000, "trainable_ratio": rank / 100, "effective_scale": 2.0, "lora_alpha": 2.0 * rank,
            "adapter_bytes": 400 * rank, "final_eval_loss": loss, "final_train_loss": loss - 0.1,
            "training_time_seconds": time + 0.01 * rank, "tokens_per_second": 100.0, "peak_memory_bytes": 2 ** 30,
            "accuracy": acc, "spectra": None, "steps": [1, 2, 3, 4], "train_losses": [loss + 1, loss + 0.5, loss, loss],
            "eval_steps": [2, 4], "eval_losses": [loss + 0.5, loss], "params_per_rank": 100,
            "matmul_params": {"body": 10_000, "head": 5_000}, "tokens_trained": 1000, "completion_tokens_trained": 500}


def sweep(losses: dict[int, list[float]], **kw) -> list[dict]:
    """losses: rank -> eval loss per seed (seeds 1, 2, ...)."""
    return [record(r, s + 1, x, **kw) for r, xs in losses.items() for s, x in enumerate(xs)]


def sweep_json(ranks: list[int], seeds: list[int], policy: str = "constant") -> dict:
    """The parts of sweep.json the analysis reads."""
    return {
        "config": {"model": {"name": "tiny", "dtype": "float32"}, "data": {"dataset": "toy"},
                   "lora": {"target_modules": ["q_proj", "v_proj"], "dropout": 0.0, "alpha": 16.0},
                   "train": {"lr_schedule": "cosine", "warmup_ratio": 0.1, "batch_size": 8, "grad_accum": 1,
                             "max_steps": 40, "epochs": 1.0, "max_grad_norm": 1.0},
                   "sweep": {"output_dir": "outputs/toy"}, "report": {"equivalence_margin": 0.05, "note": ""}},
        "data": {"n_train": 100, "n_eval": 48, "prompt_format": "plain"},
        "axes": {"ranks": ranks, "seeds": seeds, "learning_rates": [1e-3], "alpha_policies": [policy]},
        "environment": {"device": "cpu", "argv": ["run", "--ranks", *map(str, ranks), "--seeds", str(len(seeds))]},
        "invocations": [{}],
    }


def analyse(losses: dict[int, list[float]], base: float | None = 2.3, **kw):
    """The analysis of a constructed sweep, with its setup so that a README can be rendered."""
    runs = sweep(losses, **kw)
    n_seeds = max(len(v) for v in losses.values())
    baseline = baseline_of({"eval_loss": base}) if base is not None else None
    return summarize(runs, Thresholds(), baseline, setup_of(sweep_json(sorted(losses), list(range(1, n_seeds + 1)))))
