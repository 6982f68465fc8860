"""Intruder dimensions: new dominant directions that fine-tuning puts into a weight matrix.

Shuttleworth et al. 2024, "LoRA vs Full Fine-tuning: an Illusion of Equivalence": take the top-k
left-singular vectors u'_1..u'_k of the fine-tuned matrix W' = W + ΔW and the left-singular vectors
u_1..u_m of the pre-trained W (m = min(d_out, d_in)). u'_i is an intruder when it resembles none of
them:
    max_j |u'_iᵀ u_j| < ε          (k = 10, ε = 0.5, as PEFT's `reduce_intruder_dimension`)
LoRA creates intruders and full fine-tuning hardly does; they go with forgetting of the pre-training
distribution, and rsLoRA at higher rank has fewer.

Cost and memory: the thin SVD of the frozen W is the same for every trial of a sweep, so `BasisCache`
keeps U_W per module name, with W's Gram matrix on its smaller side, and a process computes them once.
Per module and trial only the top k of W' are computed, from the eigenvectors of W''s Gram matrix,
which a LoRA update changes by a low-rank term (wide or square W; tall W is the transpose):

    W'W'ᵀ = WWᵀ + γ(P Bᵀ + B Pᵀ) + γ² B (A Aᵀ) Bᵀ,      P = W Aᵀ  (d_out x r)

so W' is never formed and the layer-sized product WWᵀ (d_out·d_in·d_out multiply-adds) is replaced by
products of rank r. The top k then come from LAPACK's subset eigensolver. On SmolLM2-135M's 210
projections (rank-8 adapters, 2-core AVX2 EPYC, benchmarks/intruder_time.py) a trial's analysis took
11.6 s with W' and its Gram formed per module and 3.6 s this way (the update alone made it 7.4-8.0 s;
`analyse`'s two passes the rest); the first trial of a process, which also decomposes every W, 35.1 s
and 22.4 s. The cache holds
Σ d_out·min(d_out, d_in) + min(d_out, d_in)² floats (about 550 MB for SmolLM2-135M).
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager

import scipy.linalg
import torch

from lorarank.analysis.spectra import _short, lora_factors

TOP_K = 10  # top singular vectors of W' examined (PEFT's default)
EPSILON = 0.5  # below this largest |cosine| with W's singular vectors a direction is an intruder (PEFT's default)


def basis_and_gram(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(U of the thin SVD W = U Σ Vᵀ, W's Gram matrix on its smaller side: WWᵀ for a wide or square W,
    WᵀW for a tall one), both float32; U is (d_out, min(d_out, d_in)), columns by descending σ.

    U comes from the symmetric eigenproblem of that Gram matrix in float64, 2-3x faster than the SVD
    on a 2-core CPU for SmolLM2's projections: W Wᵀ = U Σ² Uᵀ (wide or square W), or WᵀW = V Σ² Vᵀ
    and U = W V Σ⁻¹ (tall W). Every column counts here (an intruder is a direction unlike *all* of
    W's), small σ included; squaring the condition number costs float64 ~1e-16·(σ₁/σ_j)² in u_j,
    far below the float32 the cosines are taken in for any σ_j above ~1e-4·σ₁. A tall W with smaller
    singular values (near rank-deficient) takes the SVD instead."""
    g = w.double()
    if w.shape[0] <= w.shape[1]:
        gram = g @ g.T
        return torch.linalg.eigh(gram)[1].flip(1).float(), gram.float()
    gram = g.T @ g
    lam, v = torch.linalg.eigh(gram)
    if lam[0] <= 1e-8 * lam[-1]:  # σ_min <= 1e-4·σ_max
        return torch.linalg.svd(w.float(), full_matrices=False)[0], gram.float()
    u = (g @ v.flip(1)) / lam.flip(0).sqrt()
    return u.float(), gram.float()


class BasisCache:
    """module name -> (U of the frozen W, W's Gram matrix on its smaller side), computed on first use.
    An entry is reused only while W's shape and checksum match, so a different base model under the
    same module names recomputes instead of reading stale vectors. The checksum (Σw and ‖w‖, in
    float64) is taken over at most CHECKSUM_SAMPLE evenly strided entries: two different weight
    matrices agree on all of them only if built to, and summing every entry of every projection
    took 1.3 s a trial."""

    CHECKSUM_SAMPLE = 4096

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tuple, tuple[torch.Tensor, torch.Tensor]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _key(self, w: torch.Tensor) -> tuple:
        flat = w.reshape(-1)
        sample = flat[::max(1, flat.numel() // self.CHECKSUM_SAMPLE)].double()
        return tuple(w.shape), float(sample.sum()), float(torch.linalg.vector_norm(sample))

    def entry(self, name: str, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, Gram) of `basis_and_gram` for the module `name` whose frozen weight is `w`."""
        key = self._key(w)
        entry = self._entries.get(name)
        if entry is None or entry[0] != key:
            entry = self._entries[name] = (key, basis_and_gram(w))
        return entry[1]

    def basis(self, name: str, w: torch.Tensor) -> torch.Tensor:
        """U of the frozen W of module `name`."""
        return self.entry(name, w)[0]


def top_left_singular_vectors(w: torch.Tensor, k: int) -> torch.Tensor:
    """The top-k left-singular vectors of W (d_out, k), from the eigenvectors of the smaller Gram matrix
    (min(d_out, d_in)², no larger than W): W Wᵀ = U Σ² Uᵀ gives U directly; for a tall W, WᵀW = V Σ² Vᵀ
    and U_k = W V_k / σ_k. About 3x cheaper than a full SVD, and exact for the top of the spectrum, where
    the Gram's squared condition number costs no accuracy (errors scale with σ_1² / gap)."""
    k = min(k, *w.shape)
    if w.shape[0] <= w.shape[1]:
        return _top_eigenvectors(w @ w.T, k)
    return _normalized(w @ _top_eigenvectors(w.T @ w, k))  # U_k Σ_k, then unit columns


def top_left_singular_vectors_updated(gram: torch.Tensor, w: torch.Tensor, b: torch.Tensor, a: torch.Tensor,
                                      gamma: float, k: int) -> torch.Tensor:
    """`top_left_singular_vectors` of W' = W + γ·B·A without forming W' or its Gram product: `gram` is
    W's Gram matrix on its smaller side (`basis_and_gram`), and W''s differs from it by terms of rank
    at most 2r (module docstring; for a tall W, W'ᵀW' = WᵀW + γ(Q A + Aᵀ Qᵀ) + γ² Aᵀ (BᵀB) A with
    Q = WᵀB). Equal to the direct path to float32 rounding."""
    k = min(k, *w.shape)
    if w.shape[0] <= w.shape[1]:
        p = w @ a.T  # (d_out, r)
        cross = p @ b.T
        square = b @ (a @ a.T) @ b.T
        return _top_eigenvectors(gram + gamma * (cross + cross.T) + gamma * gamma * square, k)
    q = w.T @ b  # (d_in, r)
    cross = q @ a
    square = a.T @ (b.T @ b) @ a
    v = _top_eigenvectors(gram + gamma * (cross + cross.T) + gamma * gamma * square, k)
    return _normalized(w @ v + gamma * (b @ (a @ v)))  # W' V_k = U_k Σ_k


def _normalized(u: torch.Tensor) -> torch.Tensor:
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
    return _max_cosines(u_base, top_left_singular_vectors(w_tuned.float(), k))


def _max_cosines(u_base: torch.Tensor, u_top: torch.Tensor) -> torch.Tensor:
    return (u_top.T @ u_base).abs().amax(dim=1)


def module_intruders(u_base: torch.Tensor, w_tuned: torch.Tensor, k: int = TOP_K, epsilon: float = EPSILON) -> dict:
    """Intruder count of one module and the max-|cos| of each of its top-k directions."""
    return _counted(max_cosines(u_base, w_tuned, k), epsilon)


def lora_module_intruders(basis: tuple[torch.Tensor, torch.Tensor], w: torch.Tensor, b: torch.Tensor,
                          a: torch.Tensor, gamma: float, k: int = TOP_K, epsilon: float = EPSILON) -> dict:
    """`module_intruders` of W' = W + γ·B·A from the cached (U, Gram) of W, by the low-rank update."""
    u_base, gram = basis
    return _counted(_max_cosines(u_base, top_left_singular_vectors_updated(gram, w, b, a, gamma, k)), epsilon)


def _counted(cos: torch.Tensor, epsilon: float) -> dict:
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
    Modules whose frozen W is quantized (4-bit) are skipped and listed.

    Two passes, so that torch and scipy never take turns module by module: first every W's (U, Gram)
    (torch on all its threads; computed on the first trial, cached after), then every module's top k
    (torch on one thread, scipy's eigensolver on its own; `_torch_threads`). Alternating the two
    per module made each side wait on the other's spinning threads: a trial's analysis of
    SmolLM2-135M with the update took 7.4-8.0 s that way and 3.6-3.7 s in two passes, and the first
    trial's 36.8 s and 18.0 s (2-core AVX2 EPYC)."""
    cache = cache if cache is not None else BasisCache()
    every = lora_factors(model)
    factors = {name: f for name, f in every.items() if f[3] is not None}
    skipped = [name for name in every if name not in factors]
    bases = {name: cache.entry(name, w) for name, (_, _, _, w) in factors.items()}
    with _torch_threads(1):
        per_module = {name: lora_module_intruders(bases[name], w, b, a, gamma, k, epsilon)
                      for name, (b, a, gamma, w) in factors.items()}
    return _result(per_module, k, epsilon, skipped)


@contextmanager
def _torch_threads(n: int):
    """torch on `n` threads inside. The per-module work alternates small torch products with scipy's
    eigensolver, which runs on its BLAS's own threads; torch's OpenMP workers spin-wait after each of
    their parallel regions and took the cores from it: one module's update and top-k took 38.6 ms
    with torch on 2 threads and 18.5 ms with torch on 1 (576² Gram, 2-core AVX2 EPYC)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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

