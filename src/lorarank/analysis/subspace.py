"""Do two adapters learn the same directions? Normalized subspace similarity (Hu et al. 2021, §7.2).

For adapters A₁ (r₁ x d) and A₂ (r₂ x d) of the same module, let U₁, U₂ hold the right-singular
vectors of A₁, A₂ (orthonormal bases of their row spaces, strongest direction first). Then

    φ(A₁, A₂, i, j) = ‖U₁^{(i)ᵀ} U₂^{(j)}‖_F² / min(i, j)   ∈ [0, 1]        (Hu et al., eq. 4)

where U^{(i)} keeps the top-i vectors: 1 when one top subspace contains the other, 0 when they are
orthogonal. For random subspaces of a d-dimensional space E‖U^{(i)ᵀ}U^{(j)}‖_F² = i·j/d, so the
random baseline is max(i, j) / d. Hu et al. found the top direction of r = 8 and r = 64 adapters
overlapping strongly (φ > 0.5) while the rest look nearly random: the useful update is low-rank.

Hu et al. compare the A matrices. After a short run A is still close to its random
initialisation (B starts at zero and does most of the early learning), so we also compare the
output directions of the whole update: the left-singular vectors of ΔW = γ·B·A, strongest first.

Inputs come from the saved adapters (`adapter_model.safetensors`), so this runs after training.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import torch

from lorarank.analysis.model import RankRow, SubspaceEntry, SubspaceLevel, SubspaceVerdict, Thresholds, TrialRef


def right_singular_vectors(a: torch.Tensor) -> torch.Tensor:
    """(r, d) -> (r, d): rows are the right-singular vectors of A, strongest first."""
    _, _, vh = torch.linalg.svd(a.float(), full_matrices=False)
    return vh


def phi_matrix(a1: torch.Tensor, a2: torch.Tensor) -> torch.Tensor:
    """φ(A₁, A₂, i, j) for all 1 <= i <= r₁, 1 <= j <= r₂ as an (r₁, r₂) tensor."""
    return phi_from_bases(right_singular_vectors(a1), right_singular_vectors(a2))


def phi_from_bases(u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    """φ(i, j) for two ordered orthonormal bases given as rows, (r₁, d) and (r₂, d).

    With M = U₁ U₂ᵀ (r₁ x r₂, entries are cosines between singular directions),
    ‖U₁^{(i)ᵀ}U₂^{(j)}‖_F² is the sum of M² over the top-left i x j block: a 2-D cumulative sum."""
    m2 = (u1 @ u2.T) ** 2
    block = m2.cumsum(0).cumsum(1)
    i = torch.arange(1, m2.shape[0] + 1).unsqueeze(1)
    j = torch.arange(1, m2.shape[1] + 1).unsqueeze(0)
    return block / torch.minimum(i, j)


def random_baseline(r1: int, r2: int, d: int) -> torch.Tensor:
    """Expected φ for random subspaces: max(i, j) / d."""
    i = torch.arange(1, r1 + 1).unsqueeze(1)
    j = torch.arange(1, r2 + 1).unsqueeze(0)
    return torch.maximum(i, j).float() / d


def load_factors(adapter_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    """module name ('layers.3.self_attn.q_proj') -> {"A": (r x d_in), "B": (d_out x r)} in float32."""
    from safetensors.torch import load_file

    out: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    for key, value in load_file(str(adapter_dir / "adapter_model.safetensors")).items():
        m = re.search(r"(layers\.\d+\..*)\.lora_([AB])(?:\.default)?\.weight$", key)
        if m:
            out[m.group(1)][m.group(2)] = value.float()
    return dict(out)


def output_directions(f: dict[str, torch.Tensor]) -> torch.Tensor:
    """Left-singular vectors of ΔW ∝ B·A as rows (r, d_out), strongest first (γ does not change them)."""
    from lorarank.analysis.spectra import svd_delta

    u, _, _ = svd_delta(f["B"], f["A"], 1.0)
    return u.T


def compare_adapters(dir1: Path, dir2: Path) -> dict:
    """φ averaged over layers for each module type, for the A matrices (Hu et al.) and for the
    output directions of ΔW, with the random baseline and headline numbers."""
    f1, f2 = load_factors(dir1), load_factors(dir2)
    common = sorted(set(f1) & set(f2))
    return {
        "A": _by_type(common, lambda n: phi_matrix(f1[n]["A"], f2[n]["A"]), lambda n: f1[n]["A"].shape[1]),
        "delta_out": _by_type(common, lambda n: phi_from_bases(output_directions(f1[n]), output_directions(f2[n])),
                              lambda n: f1[n]["B"].shape[0]),
    }


def _by_type(names, phi_of, dim_of) -> dict:
    by_type: dict[str, list[torch.Tensor]] = defaultdict(list)
    dims: dict[str, int] = {}
    for name in names:
        kind = name.rsplit(".", 1)[-1]
        by_type[kind].append(phi_of(name))
        dims[kind] = dim_of(name)
    out = {}
    for kind, mats in by_type.items():
        mean = torch.stack(mats).mean(0)
        r1, r2 = mean.shape
        base = random_baseline(r1, r2, dims[kind])
        out[kind] = {
            "phi": [[round(float(x), 4) for x in row] for row in mean.tolist()],
            "dim": dims[kind],
            "top1": float(mean[0, 0]),  # do the strongest directions agree?
            "top1_random": float(base[0, 0]),
            "full": float(mean[-1, -1]),  # φ(r₁, r₂): overlap of the whole smaller subspace
            "full_random": float(base[-1, -1]),
            "n_modules": len(mats),
        }
    return out


def pairs(rows: dict[int, RankRow]) -> dict[str, tuple[TrialRef, TrialRef]]:
    """The adapter pairs worth comparing, from the trials behind the rows (each rank at its chosen
    LR): smallest vs largest rank on the first seed they share, and two seeds of the largest rank."""
    small, large = min(rows), max(rows)
    out = {}
    by_seed = {t.seed: t for t in rows[large].trials}
    common = [t for t in rows[small].trials if t.seed in by_seed]
    if small != large and common:
        out["small_vs_large"] = (common[0], by_seed[common[0].seed])
    if len(rows[large].trials) > 1:
        out["seed_vs_seed"] = tuple(rows[large].trials[:2])
    return out


def similarity(out_dir: Path, rows: dict[int, RankRow], previous: dict | None) -> dict[str, dict]:
    """φ for every pair of `pairs`, as stored in subspace.json: kind -> {trial_ids, names, ranks,
    seeds, spaces}. A pair already in `previous` (the last subspace.json of this policy) is reused,
    so a report rebuilt from JSON alone (adapters deleted) keeps it."""
    result: dict[str, dict] = {}
    for kind, (t1, t2) in pairs(rows).items():
        ids = [t1.trial_id, t2.trial_id]
        old = (previous or {}).get(kind)
        if old and old.get("trial_ids") == ids:
            result[kind] = old
            continue
        d1, d2 = out_dir / t1.name / "adapter", out_dir / t2.name / "adapter"
        if not ((d1 / "adapter_model.safetensors").is_file() and (d2 / "adapter_model.safetensors").is_file()):
            continue
        result[kind] = {"trial_ids": ids, "names": [t1.name, t2.name], "ranks": [t1.rank, t2.rank],
                        "seeds": [t1.seed, t2.seed], "spaces": compare_adapters(d1, d2)}
    return result


def verdicts(spaces: dict[str, dict[str, dict]], thresholds: Thresholds) -> list[SubspaceVerdict]:
    """Per space, the mean φ(1,1) over module types against random directions: strong (above
    Hu et al.'s 0.5), shared above chance, or not beyond chance."""
    out = []
    for space in ("A", "delta_out"):
        vals = spaces[space].values()
        top1 = sum(d["top1"] for d in vals) / len(vals)
        rand = sum(d["top1_random"] for d in vals) / len(vals)
        verdict = (SubspaceLevel.STRONG if top1 > thresholds.strong_phi else
                   SubspaceLevel.ABOVE_CHANCE if top1 > thresholds.above_chance * rand else SubspaceLevel.CHANCE)
        out.append(SubspaceVerdict(space, top1, rand, verdict))
    return out


def entries(stored: dict[str, dict], thresholds: Thresholds) -> dict[str, SubspaceEntry]:
    return {kind: SubspaceEntry(kind=kind, **e, verdicts=verdicts(e["spaces"], thresholds))
            for kind, e in stored.items()}
