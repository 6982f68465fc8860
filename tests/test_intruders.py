"""Intruder dimensions on constructed matrices with a known number of intruders, and on a real PEFT model."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from scipy.linalg import hadamard

from lorarank.analysis import intruders


def _orthogonal(d: int, seed: int) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed)))[0]


def _base(d_out: int, d_in: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """W = U diag(σ) Vᵀ with random orthogonal U, V and well separated σ = 10·0.9^j; returns (W, U)."""
    m = min(d_out, d_in)
    u, v = _orthogonal(d_out, seed)[:, :m], _orthogonal(d_in, seed + 1)[:, :m]
    return u @ torch.diag(10 * 0.9 ** torch.arange(m, dtype=torch.float32)) @ v.T, u


@pytest.mark.parametrize("d_out,d_in", [(48, 48), (48, 80), (80, 48)])
def test_top_vectors_from_the_gram_matrix_match_the_svd(d_out, d_in):
    w, _ = _base(d_out, d_in)
    w = w + 0.01 * torch.randn(d_out, d_in, generator=torch.Generator().manual_seed(9))
    u = torch.linalg.svd(w, full_matrices=False)[0][:, :10]
    top = intruders.top_left_singular_vectors(w, 10)
    assert top.shape == (d_out, 10)
    torch.testing.assert_close((u.T @ top).abs().diagonal(), torch.ones(10), atol=1e-4, rtol=0)  # equal up to sign


@pytest.mark.parametrize("d_out,d_in", [(48, 48), (48, 80), (80, 48)])
def test_top_vectors_of_a_lora_update_match_the_direct_path(d_out, d_in):
    # W' = W + γ·B·A with an update strong enough to reorder the top of the spectrum: the low-rank
    # update of W's cached Gram matrix gives the same top-10 directions as W''s own Gram matrix
    w, _ = _base(d_out, d_in)
    g = torch.Generator().manual_seed(4)
    b, a, gamma = torch.randn(d_out, 4, generator=g), torch.randn(4, d_in, generator=g), 0.7
    u_base, gram = intruders.basis_and_gram(w)
    torch.testing.assert_close(gram, (w.T @ w if d_out > d_in else w @ w.T), rtol=1e-5, atol=1e-4)
    direct = intruders.top_left_singular_vectors(torch.addmm(w, b, a, alpha=gamma), 10)
    updated = intruders.top_left_singular_vectors_updated(gram, w, b, a, gamma, 10)
    assert updated.shape == (d_out, 10)
    torch.testing.assert_close((direct.T @ updated).abs().diagonal(), torch.ones(10), atol=1e-4, rtol=0)
    exact = torch.linalg.svd(torch.addmm(w.double(), b.double(), a.double(), alpha=gamma))[0][:, :10].float()
    torch.testing.assert_close((exact.T @ updated).abs().diagonal(), torch.ones(10), atol=1e-4, rtol=0)
    assert intruders.lora_module_intruders((u_base, gram), w, b, a, gamma)["max_cos"] == pytest.approx(
        intruders.module_intruders(u_base, torch.addmm(w, b, a, alpha=gamma))["max_cos"], abs=2e-4)


@pytest.mark.parametrize("d_out,d_in", [(64, 64), (64, 96), (96, 64)])
def test_spread_directions_are_intruders(d_out, d_in):
    # ΔW adds 3 strong directions, each spread evenly over W's 64 left-singular vectors by a Hadamard
    # row (entries ±1/8): |cos| with every one of them is 1/8 < ε, so exactly 3 intruders
    w, u = _base(d_out, d_in)
    spread = u @ (torch.tensor(hadamard(64), dtype=torch.float32)[:, :3] / 8)  # (d_out, 3), orthonormal
    right = torch.linalg.qr(torch.randn(d_in, 3, generator=torch.Generator().manual_seed(5)))[0]
    delta = spread @ torch.diag(torch.tensor([100.0, 80.0, 60.0])) @ right.T
    out = intruders.module_intruders(intruders.basis_and_gram(w)[0], w + delta)
    assert out["count"] == 3
    assert max(out["max_cos"][:3]) < 0.25 and min(out["max_cos"][3:]) > 0.5


def test_aligned_directions_are_not_intruders():
    # ΔW strengthens W's own directions u_0, u_5, u_9 (with arbitrary input directions): no intruder
    w, u = _base(64, 64)
    right = torch.randn(3, 64, generator=torch.Generator().manual_seed(7))
    delta = u[:, [0, 5, 9]] @ torch.diag(torch.tensor([30.0, 20.0, 15.0])) @ (right / right.norm(dim=1, keepdim=True))
    out = intruders.module_intruders(intruders.basis_and_gram(w)[0], w + delta)
    assert out["count"] == 0 and min(out["max_cos"]) > 0.9
    unchanged = intruders.module_intruders(intruders.basis_and_gram(w)[0], w.clone())
    assert unchanged["max_cos"] == pytest.approx([1.0] * 10, abs=1e-4)


def test_cache_computes_once_and_notices_a_different_w():
    w, _ = _base(32, 48)
    cache = intruders.BasisCache()
    first = cache.basis("layers.0.self_attn.q_proj", w)
    assert cache.basis("layers.0.self_attn.q_proj", w.clone()) is first and len(cache) == 1
    assert cache.basis("layers.0.self_attn.q_proj", w * 2) is not first
    other, _ = _base(32, 48, seed=5)  # another matrix of the same shape: recomputed, not read stale
    torch.testing.assert_close(cache.basis("layers.0.self_attn.q_proj", other), intruders.basis_and_gram(other)[0])


def _peft_model_with_updates():
    """A fresh tiny random Llama with a rank-4 LoRA adapter whose B is random: strong in q_proj and v_proj
    (their rank-4 updates dominate W's spectrum: 4 intruders each), negligible in down_proj (none)."""
    from lorarank import lora
    from lorarank.builtin_models import tiny_random_model, tiny_tokenizer

    model = lora.attach(tiny_random_model(len(tiny_tokenizer())), 4, lora.scaling_for(4, 8, "proportional"), 0.0,
                        ["q_proj", "v_proj", "down_proj"], 0)
    std = {"q_proj": 0.5, "v_proj": 0.05, "down_proj": 0.001}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # name: ...layers.0.self_attn.q_proj.lora_B.default.weight
                p.normal_(std=std[name.split(".")[-4]], generator=torch.Generator().manual_seed(len(name)))
    return model


def test_counts_match_peft_reduce_intruder_dimension():
    from peft.tuners.lora.intruders import reduce_intruder_dimension

    model = _peft_model_with_updates()
    cache = intruders.BasisCache()
    ours = intruders.analyse(model, cache=cache)
    assert len(ours["per_module"]) == 6 and len(cache) == 6  # 2 layers x 3 types
    assert ours["k"] == 10 and ours["epsilon"] == 0.5
    assert {t: v["total"] for t, v in ours["by_type"].items()} == {"down_proj": 0, "q_proj": 8, "v_proj": 8}
    assert ours["overall"] == {"total": 16, "mean": 16 / 6, "modules": 6, "modules_with_intruders": 4}
    # the low-rank update gives the cosines of W' formed whole
    from lorarank.analysis.spectra import lora_factors

    for name, (b, a, gamma, w) in lora_factors(model).items():
        whole = intruders.module_intruders(intruders.basis_and_gram(w)[0], torch.addmm(w, b, a, alpha=gamma))
        assert ours["per_module"][name]["max_cos"] == pytest.approx(whole["max_cos"], abs=2e-4)
    # PEFT's own detector, which logs "<layer>: Intruders: n" or "<layer>: No intruders" per layer
    lines = []
    reduce_intruder_dimension(model, logging_sink=lines.append)
    theirs = {}
    for line in lines:
        m = re.match(r".*(layers\.\d+\.\S+): (?:Intruders: (\d+)|No intruders)", line)
        if m:
            theirs[m.group(1)] = int(m.group(2) or 0)
    assert theirs == {name: m["count"] for name, m in ours["per_module"].items()}


def test_full_fine_tuning_pair(tiny_base):
    base, _ = tiny_base
    tuned = copy.deepcopy(base)
    with torch.no_grad():  # one strong random direction pair into layer 0's q_proj only
        q = tuned.model.layers[0].self_attn.q_proj.weight
        g = torch.Generator().manual_seed(3)
        q += 50 * torch.randn(q.shape[0], 1, generator=g) @ torch.randn(1, q.shape[1], generator=g) / q.shape[0]
    out = intruders.analyse_full(base, tuned, ["q_proj", "k_proj"])
    assert out["per_module"]["layers.0.self_attn.q_proj"]["count"] >= 1
    assert out["per_module"]["layers.1.self_attn.q_proj"]["count"] == 0
    assert out["by_type"]["k_proj"]["total"] == 0 and out["overall"]["modules"] == 4
