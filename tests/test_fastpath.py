"""The CPU fast path's switch, its geometric-gap dropout, and the package's import graph."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import torch
from peft.tuners.lora import Linear as LoraLinear
from torch import nn

from lorarank import fastpath, lora
from lorarank.config import ALL_PROJECTIONS, DataConfig, ModelConfig, TrainConfig
from lorarank.data.format import prepare
from lorarank.fastpath import FastDropout
from lorarank.model import load_base
from lorarank.train import train

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lorarank"
CPU = torch.device("cpu")


# ---------------------------------------------------------------------------------------------- imports


def module_names() -> dict[str, Path]:
    """lorarank.a.b -> src/lorarank/a/b.py (a package by its __init__.py)."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("lorarank", *path.relative_to(PACKAGE).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The lorarank modules one file imports, at the top or inside functions. `from a import b`
    counts as importing a.b when that is a module, else a."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: climb from this file's package
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return (found & modules) - {name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path a -> ... -> a, or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_sees_a_cycle_through_a_lazy_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_package_import_graph_is_acyclic():
    modules = module_names()
    graph = {name: imports_of(name, path, set(modules)) for name, path in modules.items()}
    assert "lorarank.fastpath" in graph["lorarank.trial"] and "lorarank.fastpath.dropout" in graph["lorarank.fastpath.fused"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


# ---------------------------------------------------------------------------------------------- the switch


def test_levers_refuse_unknown_and_impossible_settings():
    with pytest.raises(ValueError, match=r"attention='flash' \(choose from split, sliced, masked\)"):
        fastpath.Levers(attention="flash")
    with pytest.raises(ValueError, match=r"fused=True with dropout='plain'"):
        fastpath.Levers(dropout="plain")
    assert fastpath.STOCK == fastpath.Levers(fused=False, dropout="plain", attention="masked", norm=False,
                                             contiguous_head=False)


def test_enable_and_disable_switch_every_lever_both_ways(tiny_base):
    model, _ = tiny_base
    fastpath.enable(model)  # a model without adapters: the attention and norm levers alone
    assert fastpath.per_example_attention(model) and fastpath.fused_layers(model) == 0
    assert fastpath.fused_norms(model) == 2 * 2 + 1 and fastpath.contiguous_head(model)  # two norms a layer, one final
    peft_model = lora.attach(model, 4, lora.scaling_for(4, 8, "constant"), 0.05, ALL_PROJECTIONS, 0)
    peft_model.eval()

    def dropouts(kind):
        return sum(isinstance(m, kind) for m in peft_model.modules())

    try:
        assert fastpath.fused_layers(peft_model) == dropouts(FastDropout) == 0  # attach leaves PEFT's modules
        fastpath.enable(peft_model)
        assert fastpath.fused_layers(peft_model) == dropouts(FastDropout) == 2 * 7
        assert dropouts(fastpath.FusedLinear) == 2 * 7 and dropouts(LoraLinear) == 2 * 7  # PEFT's class, subclassed
        fastpath.disable(peft_model)
        assert fastpath.fused_layers(peft_model) == dropouts(FastDropout) == dropouts(fastpath.FusedLinear) == 0
        assert dropouts(nn.Dropout) == 2 * 7 and not fastpath.per_example_attention(peft_model)
        assert fastpath.fused_norms(peft_model) == 0 and not fastpath.contiguous_head(peft_model)
        assert all(not m.training for m in peft_model.modules() if isinstance(m, nn.Dropout))  # mode kept
        fastpath.enable(peft_model, dataclasses.replace(fastpath.FAST, attention="sliced"))
        assert fastpath.fused_layers(peft_model) == dropouts(FastDropout) == 2 * 7
        assert fastpath.per_example_attention(peft_model) and fastpath.fused_norms(peft_model) == 5
        fastpath.enable(peft_model)
        assert len(model.get_output_embeddings()._forward_pre_hooks) == 1  # idempotent: one hook, not two
    finally:
        fastpath.enable(peft_model)
        lora.detach(peft_model)


@pytest.fixture
def one_thread():
    """Tiny models train fastest on one thread (and suffer most from contention on more)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_fast_path_follows_peft_loss_trajectory(one_thread):
    """40 steps at lr 1e-3 with dropout 0.05: every step's loss with the fast path equals the loss
    through PEFT's own modules and transformers' masked attention (same dropout masks) to 1e-5."""
    base, tok = load_base(ModelConfig(name="tiny-random", dtype="float32"), CPU)  # 1e-5 holds in fp32 only
    data = prepare(DataConfig(suite_size=96), tok)
    cfg = TrainConfig(max_steps=40, batch_size=4, grad_accum=1, log_every=1, eval_every=40)
    curves = []
    for levers in (fastpath.FAST, dataclasses.replace(fastpath.STOCK, dropout="fast")):
        model = lora.attach(base, 8, lora.scaling_for(8, 16, "proportional"), 0.05, ALL_PROJECTIONS, 42)
        fastpath.enable(model, levers)
        curves.append(train(model, data.train, data.eval, cfg, 1e-3, 42, tok.pad_token_id, CPU).train_losses)
        fastpath.enable(model)
        base = lora.detach(model)
    assert len(curves[0]) == 40 and curves[0][-1] < curves[0][0] - 0.3  # it learns
    assert max(abs(a - b) for a, b in zip(*curves)) < 1e-5


# ---------------------------------------------------------------------------------------------- dropout


def test_fast_dropout_matches_the_dropout_distribution():
    drop = FastDropout(0.05)
    x = torch.ones(400, 1000)
    torch.manual_seed(0)
    y = drop.train()(x)
    dropped = (y == 0).float()
    assert dropped.mean().item() == pytest.approx(0.05, abs=0.0012)  # 400k draws: 3 sigma ~ 0.001
    assert y.mean().item() == pytest.approx(1.0, abs=0.005)  # inverted dropout keeps the expectation
    values = torch.unique(y).tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / 0.95)
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # seeded: same masks
    assert torch.equal(drop.eval()(x), x)
    # i.i.d.: neighbours are independent, and rows (which the gaps run across) look alike
    flat = dropped.view(-1)
    both = (flat[:-1] * flat[1:]).mean().item()
    assert both == pytest.approx(0.05 ** 2, abs=0.0006)
    assert dropped[:, 0].mean().item() == pytest.approx(0.05, abs=0.035)
    assert dropped[:, -1].mean().item() == pytest.approx(0.05, abs=0.035)
    # gradients flow only through kept elements, scaled like the values
    g = torch.ones(50, 40, requires_grad=True)
    out = drop.train()(g)
    out.sum().backward()
    assert torch.equal(g.grad, (out != 0).float() / 0.95)
    # tiny tensors and high rates still work
    assert FastDropout(0.9).train()(torch.ones(3)).shape == (3,)


class ShortDraws(FastDropout):
    """Draws 7 gaps at a time: the positions reach the end only after many draws."""

    def gaps_per_draw(self, n: int) -> int:
        return 7


@pytest.mark.parametrize("p", [0.05, 0.5])
def test_drop_positions_across_many_draws(p):
    n = 200_000
    torch.manual_seed(0)
    positions = ShortDraws(p).drop_positions(n, CPU)
    assert len(positions) > 1000 * 7  # one draw gives at most 7: the loop drew over a thousand times
    assert positions.dtype == torch.long and positions.min() >= 0 and positions.max() < n
    assert torch.all(positions[1:] > positions[:-1])  # sorted and unique
    assert len(positions) / n == pytest.approx(p, abs=4 * (p * (1 - p) / n) ** 0.5)
    gaps = torch.diff(positions).double()  # Geometric(p): mean 1/p, standard deviation √(1 − p)/p
    assert gaps.mean().item() == pytest.approx(1 / p, abs=4 * (1 - p) ** 0.5 / p / len(gaps) ** 0.5)
    # where one draw ends and the next begins (every 7th gap), the gaps are no different from the rest
    seams = gaps[6::7]
    assert seams.mean().item() == pytest.approx(1 / p, abs=4 * (1 - p) ** 0.5 / p / len(seams) ** 0.5)
