"""What a trained adapter learned: the spectrum of ΔW = γ·B·A per adapted module.

ΔW is d_out x d_in but has rank <= r, so we never form it. With thin QR factorisations
    B = Q_B R_B   (Q_B: d_out x r, R_B: r x r)        Aᵀ = Q_A R_A   (Q_A: d_in x r)
we get ΔW = γ · Q_B (R_B R_Aᵀ) Q_Aᵀ, and since Q_B, Q_A have orthonormal columns the singular values
of ΔW are γ times those of the r x r core R_B R_Aᵀ. Its SVD U_c Σ V_cᵀ also gives the singular vectors
of ΔW: U = Q_B U_c, V = Q_A V_c. Everything runs in float32 through `lora_factors`, one accessor.

Summaries of a spectrum σ_1 >= ... >= σ_r:
    effective rank (Roy & Vetterli 2007)  exp(−Σ p_k ln p_k),  p_k = σ_k / Σσ     (1 .. r)
    stable rank                           ‖ΔW‖_F² / ‖ΔW‖_2² = Σσ² / σ_1²           (1 .. r)
    energy rank                           smallest k with Σ_{i<=k} σ_i² >= 0.9 Σ σ_i²
    amplification (Hu et al. 2021 §7.3)   ‖ΔW‖_F / ‖Uᵀ W V‖_F: how strongly ΔW boosts directions
                                          that W itself barely uses (large = "new" features)
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

import torch

ENERGY = 0.9


def lora_factors(model) -> dict[str, tuple[torch.Tensor, torch.Tensor, float, torch.Tensor | None]]:
    """module name -> (B, A, γ, W) in float32 on CPU for every LoRA layer of a PEFT model.
    W (the frozen weight) is None when it is quantized (4-bit)."""
    out = {}
    for name, mod in model.named_modules():
        if not (hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {})):
            continue
        a = mod.lora_A["default"].weight.detach().float().cpu()  # (r, d_in)
        b = mod.lora_B["default"].weight.detach().float().cpu()  # (d_out, r)
        base = getattr(mod, "base_layer", None)
        w = base.weight if base is not None else None
        w = w.detach().float().cpu() if w is not None and w.dtype in (torch.float32, torch.bfloat16, torch.float16) else None
        out[_short(name)] = (b, a, float(mod.scaling["default"]), w)
    return out


def lora_a_weights(model) -> dict[str, torch.Tensor]:
    """A copy of every adapter's A (r x d_in, float32, CPU): only A, not the frozen weights, so a
    snapshot before training costs r·Σd_in numbers."""
    return {_short(name): mod.lora_A["default"].weight.detach().float().cpu().clone()
            for name, mod in model.named_modules() if "default" in getattr(mod, "lora_A", {})}


def relative_change(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict:
    """‖A − A₀‖_F / ‖A₀‖_F per module, averaged overall and per module type: how far training moved A
    from its random initialisation (B starts at zero and takes most early updates)."""
    ratios = {n: float(torch.linalg.matrix_norm(after[n] - a0) / torch.linalg.matrix_norm(a0)) for n, a0 in before.items()}
    by_type = defaultdict(list)
    for name, x in ratios.items():
        by_type[name.rsplit(".", 1)[-1]].append(x)
    return {"overall": _mean(list(ratios.values())), "by_type": {t: _mean(v) for t, v in sorted(by_type.items())}}


def _short(name: str) -> str:
    """'base_model.model.model.layers.3.self_attn.q_proj' -> 'layers.3.self_attn.q_proj'."""
    m = re.search(r"layers\.\d+\..*$", name)
    return m.group(0) if m else name


def svd_delta(b: torch.Tensor, a: torch.Tensor, gamma: float):
    """(U, σ, V) of ΔW = γ·B·A with U: d_out x r, σ: r (descending), V: d_in x r, via the r x r core."""
    q_b, r_b = torch.linalg.qr(b)  # (d_out, r), (r, r)
    q_a, r_a = torch.linalg.qr(a.T)  # (d_in, r), (r, r)
    u_c, s, vh_c = torch.linalg.svd(r_b @ r_a.T)
    return q_b @ u_c, gamma * s, q_a @ vh_c.T


def effective_rank(s: torch.Tensor) -> float:
    s = s[s > 0]
    if s.numel() == 0:
        return 0.0
    p = s / s.sum()
    return float(torch.exp(-(p * p.log()).sum()))


def stable_rank(s: torch.Tensor) -> float:
    return float((s ** 2).sum() / s[0] ** 2) if s.numel() and s[0] > 0 else 0.0


def energy_rank(s: torch.Tensor, fraction: float = ENERGY) -> int:
    energy = (s ** 2).cumsum(0)
    if energy.numel() == 0 or energy[-1] <= 0:
        return 0
    return int((energy < fraction * energy[-1]).sum()) + 1


def amplification(u: torch.Tensor, s: torch.Tensor, v: torch.Tensor, w: torch.Tensor) -> float:
    """‖ΔW‖_F / ‖Uᵀ W V‖_F with U, V the (top) singular vectors of ΔW and s its full spectrum
    (Hu et al. 2021, §7.3)."""
    projected = torch.linalg.matrix_norm(u.T @ w @ v)
    return float(torch.linalg.vector_norm(s) / projected) if projected > 0 else math.inf


def module_spectrum(b, a, gamma, w) -> dict:
    return module_spectrum_from_svd(*svd_delta(b, a, gamma), w)


def module_spectrum_from_svd(u, s, v, w) -> dict:
    """Statistics of one update from its SVD; U and V may be truncated (amplification then uses the
    top directions only, as Hu et al. do), σ must be the full spectrum."""
    return {
        "singular_values": [float(f"{x:.6g}") for x in s.tolist()],
        "effective_rank": effective_rank(s),
        "stable_rank": stable_rank(s),
        "energy_rank_90": energy_rank(s),
        "frobenius": float(torch.linalg.vector_norm(s)),
        "amplification": amplification(u, s, v, w) if w is not None else None,
    }


def _mean(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def summarize(per_module: dict[str, dict]) -> dict:
    """Means per module type (q_proj, ...) and per layer index."""
    by_type, by_layer = defaultdict(list), defaultdict(list)
    for name, spec in per_module.items():
        by_type[name.rsplit(".", 1)[-1]].append(spec)
        m = re.search(r"layers\.(\d+)\.", name)
        if m:
            by_layer[int(m.group(1))].append(spec)
    keys = ("effective_rank", "stable_rank", "energy_rank_90", "frobenius", "amplification")

    def agg(specs):
        row = {k: _mean([s[k] for s in specs]) for k in keys}
        # mean spectrum normalised by σ_1, so shapes compare across modules of different scale
        r = len(specs[0]["singular_values"])
        row["normalized_spectrum"] = [
            _mean([s["singular_values"][i] / s["singular_values"][0] for s in specs if s["singular_values"][0] > 0])
            for i in range(r)]
        return row

    return {"by_type": {t: agg(v) for t, v in sorted(by_type.items())},
            "by_layer": {str(i): {k: _mean([s[k] for s in v]) for k in keys} for i, v in sorted(by_layer.items())},
            "overall": {k: _mean([s[k] for s in per_module.values()]) for k in keys}}


def analyse_full(base, tuned, target_modules: list[str], keep: int = 64) -> dict:
    """Spectra of ΔW = W_tuned − W_base for full fine-tuning, on the modules LoRA would adapt.
    Here ΔW is formed (it has full rank in general); statistics use every singular value, and the
    top `keep` are stored so they plot beside the adapters'."""
    from lorarank.lora import adapted_modules

    tuned_mods = dict(tuned.named_modules())
    per_module = {}
    for name, mod in adapted_modules(base, target_modules).items():
        delta = tuned_mods[name].weight.detach().float().cpu() - mod.weight.detach().float().cpu()
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        k = min(keep, s.numel())
        spec = module_spectrum_from_svd(u[:, :k], s, vh[:k].T, mod.weight.detach().float().cpu())
        spec["singular_values"] = spec["singular_values"][:k]
        per_module[_short(name)] = spec
    return {"per_module": per_module, **summarize(per_module)}


def analyse(model) -> dict:
    """Per-module spectra of a trained PEFT model and their summaries (stored in run_data.json)."""
    per_module = {name: module_spectrum(*f) for name, f in lora_factors(model).items()}
    return {"per_module": per_module, **summarize(per_module)}
