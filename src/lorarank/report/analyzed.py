"""Setup and caveats of a report on adapters trained elsewhere (`lorarank analyze`): renders the
`analyzed` section of sweep.json in place of a sweep's training settings, which lorarank did not choose."""

from __future__ import annotations

from lorarank.analysis.model import PolicySummary


def _trainer(t: dict) -> str:
    name = f"{t['name']} {t['version']}" if t.get("version") else t["name"]
    peft = f", PEFT {t['peft']}" if t.get("peft") else ""
    return f"{name}{peft} ({t['adapters']} adapter{'s' if t['adapters'] != 1 else ''})"


def setup_table(sweep: dict) -> list[str]:
    cfg, info, data = sweep["config"], sweep["analyzed"], sweep.get("data")
    environment = sweep.get("environment", {})
    lrs = [float(f"{x:g}") for x in sweep["axes"]["learning_rates"]] or "not logged"
    used = environment.get("compute_dtype", cfg["model"]["dtype"])
    eval_row = (f"`{cfg['data']['dataset']}`: {data['n_eval']} examples ({data['eval_source']}), loss on "
                f"{data['trained_on']}" if data else
                "none given: eval losses are the trainers' own (trainer_state.json)")
    rows = [
        ("Adapters", f"{len(info['adapters'])} LoRA adapter{'s' if len(info['adapters']) != 1 else ''} trained "
                     "elsewhere, analysed by `lorarank analyze`"),
        ("Trained by", "; ".join(_trainer(t) for t in info["trainers"])),
        ("Base model", f"`{cfg['model']['name']}`, loaded in {used} on {environment.get('device', 'n/a')} for the "
                       "analysis (a base trained in 4-bit for QLoRA is analysed unquantized)"),
        ("Eval set", eval_row),
        ("Ranks / seed labels / peak LRs", f"{sweep['axes']['ranks']} / {sweep['axes']['seeds']} / {lrs}"),
        ("Measured by lorarank", ", ".join(info["measured"])),
        ("Read from the trainer", ", ".join(info["from_trainer"]) + " (trainer_state.json)"),
    ]
    if info["modules_to_save"]:
        rows.append(("modules_to_save", f"{', '.join(info['modules_to_save'])}: evaluated with the adapter, "
                                        "but spectra and intruders cover the LoRA layers only"))
    return ["## Setup", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows] + [""]


def caveats(sweep: dict, pol: PolicySummary) -> list[str]:
    """The seed and learning-rate caveats of an analysis: the pairing and the runs are the user's."""
    labels = sweep["analyzed"]["seed_labels"]
    out = []
    if pol.n_seeds == 1:
        out.append("- **One adapter per rank:** there is no noise estimate; train each rank with 3 seeds "
                   "(docs/concepts/analyzing-your-adapters.md) to test the recommendation.")
    else:
        how = ("the seed labels read from the adapters' paths (--seed-pattern)" if labels == "seed pattern" else
               "their seed labels")
        out.append(f"- **{pol.n_seeds} seeds per rank, paired by {how}:** the pairing is the user's. lorarank "
                   "did not train these adapters, so it cannot check that a seed label means the same data order "
                   "and initialisation at every rank; ± values are 95% confidence half-widths.")
    out.append("- **Training settings are the trainers':** learning rate, schedule, steps and data are whatever each "
               "run used; the ranks are compared as trained. Training curves and times come from trainer_state.json.")
    return out
