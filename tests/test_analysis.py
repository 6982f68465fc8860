"""Adapter analyses against constructed matrices with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from lorarank.analysis import spectra, subspace


def _orthonormal(d: int, k: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=torch.Generator().manual_seed(seed)))
    return q  # (d, k) with orthonormal columns


def _factors_with_spectrum(sigmas, d_out=40, d_in=30, seed=0):
    """B (d_out x r), A (r x d_in) with B·A = U diag(σ) Vᵀ exactly."""
    r = len(sigmas)
    u, v = _orthonormal(d_out, r, seed), _orthonormal(d_in, r, seed + 1)
    s = torch.tensor(sigmas)
    # split diag(σ) unevenly between the factors: the product is what matters
    return u * s.sqrt() * 2.0, (v * s.sqrt() / 2.0).T


def test_singular_values_of_constructed_update():
    sigmas = [5.0, 3.0, 1.0, 0.5]
    b, a = _factors_with_spectrum(sigmas)
    u, s, v = spectra.svd_delta(b, a, gamma=2.0)
    assert s.tolist() == pytest.approx([2 * x for x in sigmas], rel=1e-5)
    dense = torch.linalg.svdvals(2.0 * b @ a)[:4]  # the slow way agrees
    assert s.tolist() == pytest.approx(dense.tolist(), rel=1e-5)
    torch.testing.assert_close(u @ torch.diag(s) @ v.T, 2.0 * b @ a, atol=1e-5, rtol=1e-5)


def test_effective_stable_energy_rank_known_values():
    flat = torch.ones(8)
    spike = torch.tensor([3.0, 0, 0, 0])
    assert spectra.effective_rank(flat) == pytest.approx(8.0)
    assert spectra.effective_rank(spike) == pytest.approx(1.0)
    assert spectra.stable_rank(flat) == pytest.approx(8.0)
    assert spectra.stable_rank(spike) == pytest.approx(1.0)
    assert spectra.energy_rank(flat) == 8  # 7 of 8 equal parts hold only 87.5% < 90%
    assert spectra.energy_rank(spike) == 1
    # σ = (3, 1, 0.1): the first holds 9 / 10.01 = 89.9% of the energy, just under 90%
    assert spectra.energy_rank(torch.tensor([3.0, 1.0, 0.1])) == 2
    assert spectra.energy_rank(torch.tensor([3.0, 1.0, 0.1]), 0.899) == 1


def test_amplification_of_an_update_orthogonal_to_w():
    # W lives in the top-left block; ΔW in the bottom-right block: W barely uses ΔW's directions
    w = torch.zeros(6, 6)
    w[:3, :3] = torch.eye(3) * 10
    w[3:, 3:] = torch.eye(3) * 0.01
    b = torch.zeros(6, 1)
    b[5, 0] = 1.0
    a = torch.zeros(1, 6)
    a[0, 5] = 2.0
    u, s, v = spectra.svd_delta(b, a, 1.0)
    assert spectra.amplification(u, s, v, w) == pytest.approx(2.0 / 0.01, rel=1e-4)


def test_analyse_a_real_peft_model(tiny_base):
    from lorarank import lora

    model, _ = tiny_base
    peft_model = lora.attach(model, 4, lora.scaling_for(4, 8, "constant"), 0.0, ["q_proj", "v_proj"], 0)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(generator=torch.Generator().manual_seed(0))
    result = spectra.analyse(peft_model)
    lora.detach(peft_model)
    assert sorted(result["by_type"]) == ["q_proj", "v_proj"]
    assert len(result["per_module"]) == 4  # 2 layers x 2 types
    spec = result["per_module"]["layers.0.self_attn.q_proj"]
    assert len(spec["singular_values"]) == 4
    assert 1.0 <= spec["effective_rank"] <= 4.0 and 1 <= spec["energy_rank_90"] <= 4
    assert spec["amplification"] > 0
    assert set(result["by_layer"]) == {"0", "1"}


def test_phi_identical_orthogonal_and_random():
    d = 256
    basis = _orthonormal(d, 16, 3).T  # 16 orthonormal rows
    a = torch.diag(torch.arange(8, 0, -1).float()) @ basis[:8]  # distinct singular values
    same = subspace.phi_matrix(a, a)
    assert torch.allclose(torch.diagonal(same), torch.ones(8), atol=1e-5)
    ortho = subspace.phi_matrix(a, basis[8:])
    assert ortho.abs().max() < 1e-6
    # random subspaces: φ(i, j) ≈ max(i, j) / d
    g = torch.Generator().manual_seed(0)
    phis = torch.stack([subspace.phi_matrix(torch.randn(8, d, generator=g), torch.randn(64, d, generator=g))
                        for _ in range(20)]).mean(0)
    base = subspace.random_baseline(8, 64, d)
    assert phis[-1, -1] == pytest.approx(base[-1, -1].item(), rel=0.1)  # 64/256 = 0.25
    assert phis[0, 0] == pytest.approx(base[0, 0].item(), abs=0.01)
    # a larger adapter containing the smaller one's space: φ(8, 64) = 1
    big = torch.cat([a, torch.randn(56, d, generator=g) * 0.01])
    assert subspace.phi_matrix(a, big)[-1, -1] == pytest.approx(1.0, abs=1e-4)
    assert 0.0 <= float(phis.min()) and float(phis.max()) <= 1.0 + 1e-6
    assert not math.isnan(float(phis.sum()))
