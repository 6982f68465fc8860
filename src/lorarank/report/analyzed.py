"""Setup and caveats of a report on adapters trained elsewhere (`lorarank analyze`): rendered from
the model's Setup.analyzed in place of a sweep's training settings, which lorarank did not choose."""

from __future__ import annotations

from lorarank.analysis.model import PolicySummary
from lorarank.analysis.sweep_info import Setup, Trainer


def _trainer(t: Trainer) -> str:
    name = f"{t.name} {t.version}" if t.version else t.name
    peft = f", PEFT {t.peft}" if t.peft else ""
    return f"{name}{peft} ({t.adapters} adapter{'s' if t.adapters != 1 else ''})"


def setup_table(setup: Setup) -> list[str]:
    s, info = setup, setup.analyzed
    lrs = [float(f"{x:g}") for x in s.learning_rates] or "not logged"
    eval_row = (f"`{s.dataset}`: {s.n_eval} examples ({s.eval_source}), loss on {s.trained_on}" if s.n_eval else
                "none given: eval losses are the trainers' own (trainer_state.json)")
    rows = [
        ("Adapters", f"{info.adapters} LoRA adapter{'s' if info.adapters != 1 else ''} trained "
                     "elsewhere, analysed by `lorarank analyze`"),
        ("Trained by", "; ".join(_trainer(t) for t in info.trainers)),
        ("Base model", f"`{s.model}`, loaded in {s.compute_dtype} on {s.device or 'n/a'} for the "
                       "analysis (a base trained in 4-bit for QLoRA is analysed unquantized)"),
        ("Eval set", eval_row),
        ("Ranks / seed labels / peak LRs", f"{s.ranks} / {s.seeds} / {lrs}"),
        ("Measured by lorarank", ", ".join(info.measured)),
        ("Read from the trainer", ", ".join(info.from_trainer) + " (trainer_state.json)"),
    ]
    if info.modules_to_save:
        rows.append(("modules_to_save", f"{', '.join(info.modules_to_save)}: evaluated with the adapter, "
                                        "but spectra and intruders cover the LoRA layers only"))
    return ["## Setup", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows] + [""]


def caveats(setup: Setup, pol: PolicySummary) -> list[str]:
    """The seed and learning-rate caveats of an analysis: the pairing and the runs are the user's."""
    out = []
    if pol.n_seeds == 1:
        out.append("- **One adapter per rank:** there is no noise estimate; train each rank with 3 seeds "
                   "(docs/concepts/analyzing-your-adapters.md) to test the recommendation.")
    else:
        how = ("the seed labels read from the adapters' paths (--seed-pattern)"
               if setup.analyzed.seed_labels == "seed pattern" else "their seed labels")
        out.append(f"- **{pol.n_seeds} seeds per rank, paired by {how}:** the pairing is the user's. lorarank "
                   "did not train these adapters, so it cannot check that a seed label means the same data order "
                   "and initialisation at every rank.")
    out.append("- **Training settings are the trainers':** learning rate, schedule, steps and data are whatever each "
               "run used; the ranks are compared as trained. Training curves and times come from trainer_state.json.")
    return out
