"""Intruder dimensions: new dominant directions that fine-tuning puts into a weight matrix.

Shuttleworth et al. 2024, "LoRA vs Full Fine-tuning: an Illusion of Equivalence": take the top-k
left-singular vectors u'_1..u'_k of the fine-tuned matrix W' = W + ΔW and the left-singular vectors
u_1..u_m of the pre-trained W (m = min(d_out, d_in)). u'_i is an intruder when it resembles none of
them:
    max_j |u'_iᵀ u_j| < ε          (k = 10, ε = 0.5, as PEFT's `reduce_intruder_dimension`)
LoRA creates intruders and full fine-tuning hardly does; they go with forgetting of the pre-training
distribution, and rsLoRA at higher rank has fewer.

Cost and memory: W' = W + γ·B·A is layer-sized (d_out x d_in) and is the largest thing formed; the
cosines are a k x m product. The thin SVD of the frozen W is the same for every trial of a sweep, so
`BasisCache` keeps U_W per module name and a process computes it once; per module and trial only the top
k of W' are computed, from the eigenvectors of its min(d_out, d_in)² Gram matrix. The cache holds
Σ d_out·min(d_out, d_in) floats (about 340 MB for SmolLM2-135M's 210 projections).
"""

from __future__ import annotations

from collections import defaultdict

import scipy.linalg
import torch

from lorarank.analysis.spectra import _short, lora_factors

TOP_K = 10  # top singular vectors of W' examined (PEFT's default)
EPSILON = 0.5  # below this largest |cosine| with W's singular vectors a direction is an intruder (PEFT's default)


def left_singular_vectors(w: torch.Tensor) -> torch.Tensor:
    """U of the thin SVD W = U Σ Vᵀ: (d_out, min(d_out, d_in)), float32, columns by descending σ.

    From the symmetric eigenproblem of the smaller Gram matrix in float64, 2-3x faster than the SVD
    on a 2-core CPU for SmolLM2's projections: W Wᵀ = U Σ² Uᵀ (wide or square W), or WᵀW = V Σ² Vᵀ
    and U = W V Σ⁻¹ (tall W). Every column counts here (an intruder is a direction unlike *all* of
    W's), small σ included; squaring the condition number costs float64 ~1e-16·(σ₁/σ_j)² in u_j,
    far below the float32 the cosines are taken in for any σ_j above ~1e-4·σ₁. A tall W with smaller
    singular values (near rank-deficient) takes the SVD instead."""
    g = w.double()
    if w.shape[0] <= w.shape[1]:
        return torch.linalg.eigh(g @ g.T)[1].flip(1).float()
    lam, v = torch.linalg.eigh(g.T @ g)
    if lam[0] <= 1e-8 * lam[-1]:  # σ_min <= 1e-4·σ_max
        return torch.linalg.svd(w.float(), full_matrices=False)[0]
    u = (g @ v.flip(1)) / lam.flip(0).sqrt()
    return u.float()


class BasisCache:
    """module name -> U of the frozen W, computed on first use. An entry is reused only while W's
    shape and checksum (Σw and ‖W‖_F, accumulated in float64) match, so a different base model under the same module
    names recomputes instead of reading stale vectors."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tuple, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def basis(self, name: str, w: torch.Tensor) -> torch.Tensor:
        key = (tuple(w.shape), float(w.sum(dtype=torch.float64)),
               float(torch.linalg.vector_norm(w, dtype=torch.float64)))
        entry = self._entries.get(name)
        if entry is None or entry[0] != key:
            entry = self._entries[name] = (key, left_singular_vectors(w))
        return entry[1]


def top_left_singular_vectors(w: torch.Tensor, k: int) -> torch.Tensor:
    """The top-k left-singular vectors of W (d_out, k), from the eigenvectors of the smaller Gram matrix
    (min(d_out, d_in)², no larger than W): W Wᵀ = U Σ² Uᵀ gives U directly; for a tall W, WᵀW = V Σ² Vᵀ
    and U_k = W V_k / σ_k. About 3x cheaper than a full SVD, and exact for the top of the spectrum, where
    the Gram's squared condition number costs no accuracy (errors scale with σ_1² / gap)."""
    k = min(k, *w.shape)
    if w.shape[0] <= w.shape[1]:
        return _top_eigenvectors(w @ w.T, k)
    u = w @ _top_eigenvectors(w.T @ w, k)  # U_k Σ_k
    return u / torch.linalg.vector_norm(u, dim=0, keepdim=True)


def _top_eigenvectors(gram: torch.Tensor, k: int) -> torch.Tensor:
    """The eigenvectors of the k largest eigenvalues of a symmetric matrix, largest first. LAPACK's
    subset driver (syevr) computes only those k: about 3x faster than torch's full eigh at 576²."""
    n = gram.shape[0]
    vecs = scipy.linalg.eigh(gram.numpy(), subset_by_index=[n - k, n - 1], driver="evr")[1]
    return torch.from_numpy(vecs[:, ::-1].copy())  # ascending -> descending


def max_cosines(u_base: torch.Tensor, w_tuned: torch.Tensor, k: int = TOP_K) -> torch.Tensor:
    """For each of the top-k left-singular vectors of W': its largest |cosine| with a column of U_W.
    Both are unit vectors, so the cosines are the entries of U'_kᵀ U_W (k x m)."""
    return (top_left_singular_vectors(w_tuned.float(), k).T @ u_base).abs().amax(dim=1)


def module_intruders(u_base: torch.Tensor, w_tuned: torch.Tensor, k: int = TOP_K, epsilon: float = EPSILON) -> dict:
    """Intruder count of one module and the max-|cos| of each of its top-k directions."""
    cos = max_cosines(u_base, w_tuned, k)
    return {"count": int((cos < epsilon).sum()), "max_cos": [round(float(c), 4) for c in cos]}


def summarize(per_module: dict[str, dict]) -> dict:
    """Totals per module type (q_proj, ...) and overall: intruders in all, mean per module, and how
    many modules have at least one."""
    by_type = defaultdict(list)
    for name, m in per_module.items():
        by_type[name.rsplit(".", 1)[-1]].append(m["count"])

    def agg(counts: list[int]) -> dict:
        return {"total": sum(counts), "mean": sum(counts) / len(counts) if counts else None,
                "modules": len(counts), "modules_with_intruders": sum(c > 0 for c in counts)}

    return {"by_type": {t: agg(c) for t, c in sorted(by_type.items())},
            "overall": agg([m["count"] for m in per_module.values()])}


def analyse(model, k: int = TOP_K, epsilon: float = EPSILON, cache: BasisCache | None = None) -> dict:
    """Intruder dimensions of every LoRA module of a PEFT model: W' = W + γ·B·A per module.
    Modules whose frozen W is quantized (4-bit) are skipped and listed."""
    cache = cache if cache is not None else BasisCache()
    per_module, skipped = {}, []
    for name, (b, a, gamma, w) in lora_factors(model).items():
        if w is None:
            skipped.append(name)
            continue
        w_tuned = torch.addmm(w, b, a, alpha=gamma)  # W + γ·B·A: (d_out, d_in), the layer's size
        per_module[name] = module_intruders(cache.basis(name, w), w_tuned, k, epsilon)
    return _result(per_module, k, epsilon, skipped)


def analyse_full(base, tuned, target_modules: list[str], k: int = TOP_K, epsilon: float = EPSILON,
                 cache: BasisCache | None = None) -> dict:
    """Intruder dimensions of full fine-tuning (W' = the tuned weight) on the modules LoRA would adapt."""
    from lorarank.lora import adapted_modules

    cache = cache if cache is not None else BasisCache()
    tuned_mods = dict(tuned.named_modules())
    per_module = {}
    for name, mod in adapted_modules(base, target_modules).items():
        w = mod.weight.detach().float().cpu()
        per_module[_short(name)] = module_intruders(cache.basis(_short(name), w),
                                                    tuned_mods[name].weight.detach().float().cpu(), k, epsilon)
    return _result(per_module, k, epsilon, [])


def _result(per_module: dict[str, dict], k: int, epsilon: float, skipped: list[str]) -> dict:
    return {"k": k, "epsilon": epsilon, "per_module": per_module, **summarize(per_module),
            "skipped_quantized": skipped}

