"""The training loop: plain, visible, the same for every rank.

    for step in 1..total_steps:
        lr <- warmup then decay            (schedule below)
        for micro-batch in step:           (gradient accumulation)
            loss = CE on completion tokens / completion tokens in the whole step
            loss.backward()
        clip grad norm; AdamW step; zero grads
        every log_every steps: record the mean train loss
        every eval_every steps and after the last step: eval loss

Dividing each micro-batch's summed loss by the token count of the *whole step* makes the
accumulated gradient exactly the gradient of the step's token-mean loss, whatever the padding or
micro-batch split (a mean of per-micro-batch means would weight short batches more).
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lorarank import fastpath
from lorarank.config import TrainConfig
from lorarank.data.format import Example
from lorarank.model import autocast, compute_dtype


@dataclass
class TrainResult:
    steps: list[int] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)
    training_time_seconds: float = 0.0  # optimisation only; periodic evals are timed separately
    eval_time_seconds: float = 0.0
    tokens_trained: int = 0  # real (non-padding) tokens through forward+backward
    completion_tokens_trained: int = 0
    total_steps: int = 0
    status: str = "ok"  # ok | diverged
    error: str | None = None


# ---------------------------------------------------------------------------------------------- data order


def total_steps(cfg: TrainConfig, n_train: int) -> int:
    if cfg.max_steps:
        return cfg.max_steps
    per_step = cfg.batch_size * cfg.grad_accum
    return max(1, math.ceil(cfg.epochs * n_train / per_step))


def step_plan(n_train: int, cfg: TrainConfig, seed: int, steps: int) -> list[list[int]]:
    """Example indices of every optimizer step. Each epoch is a fresh permutation seeded by
    (seed, epoch), concatenated into one stream, so every rank of a seed sees the same order."""
    per_step = cfg.batch_size * cfg.grad_accum
    stream: list[int] = []
    epoch = 0
    while len(stream) < steps * per_step:
        order = list(range(n_train))
        random.Random(f"{seed}:{epoch}").shuffle(order)
        stream += order
        epoch += 1
    return [stream[i * per_step:(i + 1) * per_step] for i in range(steps)]


def micro_batches(indices: list[int], examples: list[Example], batch_size: int) -> list[list[int]]:
    """Split one step's examples into micro-batches of similar length to cut padding. The step's
    gradient is unchanged: it is a sum over the same examples whatever the grouping."""
    by_len = sorted(indices, key=lambda i: len(examples[i].input_ids))
    return [by_len[i:i + batch_size] for i in range(0, len(by_len), batch_size)]


def collate_packed(batch: list[Example], device: torch.device) -> dict[str, torch.Tensor]:
    """All examples of a micro-batch in one row, no padding: (1, Σ len). Position ids restart at 0
    for each example. On CPU the fast path's attention takes `segments` (the example lengths) and
    runs one causal attention per example; elsewhere, with no attention mask, transformers turns the
    restarting position ids into a block-diagonal causal mask. Either way no token attends across
    examples: the same maths as a padded batch without the padding FLOPs (about a fifth of the work
    at batch 4 on the instruct-suite)."""
    ids, pos, pred = [], [], []
    for e in batch:
        n = len(e.input_ids)
        ids += e.input_ids
        pos += range(n)
        pred += e.loss_mask[1:] + [False]  # position t predicts token t+1: trained when that token is
    return {"input_ids": torch.tensor([ids], device=device), "position_ids": torch.tensor([pos], device=device),
            "pred": torch.tensor([pred[:-1]], device=device), "segments": tuple(len(e.input_ids) for e in batch)}


def collate(batch: list[Example], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example. `pred` marks positions whose next token is trained on:
    pred[b, t] = loss_mask_b[t + 1] for t < len_b - 1, False on padding."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    pred = torch.zeros((len(batch), width - 1), dtype=torch.bool)
    for b, e in enumerate(batch):
        n = len(e.input_ids)
        ids[b, :n] = torch.tensor(e.input_ids)
        attn[b, :n] = 1
        pred[b, :n - 1] = torch.tensor(e.loss_mask[1:], dtype=torch.bool)
    return {"input_ids": ids.to(device), "attention_mask": attn.to(device), "pred": pred.to(device)}


# ---------------------------------------------------------------------------------------------- loss


def completion_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over completion tokens, and their count.

    The LM head runs only on the positions that predict a completion token: with a 49k vocabulary
    the head is a large share of the FLOPs, and prompt positions would be thrown away anyway.
        hidden: (B, T, H) -> h: (N, H) -> loss = Σ CE(h Wᵀ, targets), N = completion tokens in the batch
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    emb = causal_lm.get_input_embeddings().weight  # never quantized: its dtype is the compute dtype
    pred = batch["pred"]
    targets = batch["input_ids"][:, 1:][pred]  # (N,)
    per_example = "segments" in batch and fastpath.per_example_attention(causal_lm)
    extra = {"segment_lengths": batch["segments"]} if per_example else {}
    head = causal_lm.get_output_embeddings()
    with autocast(emb.device, emb.dtype):
        hidden = causal_lm.get_decoder()(
            input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
            position_ids=batch.get("position_ids"), use_cache=False, **extra,
        ).last_hidden_state
        h = hidden[:, :-1][pred]  # (N, H)
        if type(head) is not nn.Linear or head.bias is not None:  # an adapted or biased head: the plain path
            return F.cross_entropy(head(h).float(), targets, reduction="sum"), int(targets.numel())  # fp32 softmax
    loss = LinearCrossEntropy.apply(h.to(emb.dtype), head.weight.to(emb.dtype), targets, torch.is_grad_enabled())
    return loss, int(targets.numel())


class LinearCrossEntropy(torch.autograd.Function):
    """Σₙ CE(hₙ Wᵀ, tₙ) without the (N x V) logits: rows in chunks of CHUNK_ROWS, each chunk's logits
    formed in h's dtype (as the head runs under autocast), its log-sum-exp taken in fp32, and its
    gradient computed at once and the logits freed (Liger's fused linear cross-entropy, Hsu et al. 2024):

        loss = Σₙ (lseₙ − zₙ,tₙ)     z = h Wᵀ (N x V),  lseₙ = log Σᵥ exp zₙ,ᵥ
        ∂loss/∂z = softmax(z) − onehot(t) =: P          ∂loss/∂h = P W,   ∂loss/∂W = Pᵀ h

    The loss is the last node of the graph, so its incoming gradient is a scalar g and the backward
    only scales the saved ∂loss/∂h (and ∂loss/∂W for a trainable head) by g. The full path holds the
    logits, their fp32 copy, the log-softmax and its gradient, each (N x V); this holds one chunk's.
    At 32 default-data examples per micro-batch (224 rows) the loss adds 135 MiB (fp32) and 141 MiB
    (bf16) to the peak that way, 73 and 83 MiB chunked (benchmarks/loss_memory.py). P is rounded to
    h's dtype before the products, as the full path's autocast rounds the logits' gradient."""

    @staticmethod
    def forward(ctx, h, weight, targets, with_grad: bool):
        needs = [with_grad and n for n in ctx.needs_input_grad[:2]]  # with_grad: grad mode at the call
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        g_h = torch.empty_like(h) if needs[0] else None
        g_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device) if needs[1] else None
        with torch.autocast(h.device.type, enabled=False):
            for start in range(0, len(h), CHUNK_ROWS):
                h_c, t_c = h[start:start + CHUNK_ROWS], targets[start:start + CHUNK_ROWS, None]
                z = h_c @ weight.t()  # (c, V): this chunk's logits, in h's dtype
                z_t = z.gather(1, t_c).float()
                m = z.amax(dim=-1, keepdim=True).float()
                # exp(z − m) in fp32, one pass each where logsumexp and then softmax made two of each
                # (1.7x the loss's time); z − m promotes bf16 logits to fp32 as it subtracts, so no
                # separate fp32 copy of the (c x V) logits is made
                e = (z.sub_(m) if z.dtype == torch.float32 else z - m).exp_()
                s = e.sum(dim=-1, keepdim=True)
                total += (m + s.log() - z_t).sum()  # lse = m + log Σ exp(z − m)
                if any(needs):
                    p = e.mul_(s.reciprocal())  # softmax = exp(z − m) / Σ exp(z − m)
                    p.scatter_add_(1, t_c, torch.full_like(t_c, -1.0, dtype=p.dtype))  # minus onehot(t)
                    p = p.to(h.dtype)
                    if g_h is not None:
                        torch.mm(p, weight, out=g_h[start:start + CHUNK_ROWS])
                    if g_w is not None:
                        g_w.addmm_(p.t().float(), h_c.float())
        ctx.weight_dtype = weight.dtype
        ctx.save_for_backward(g_h, g_w)
        return total

    @staticmethod
    def backward(ctx, g):
        g_h, g_w = ctx.saved_tensors  # g: fp32 0-dim, so g_h * g is computed in fp32 and rounded once
        return (None if g_h is None else g_h * g, None if g_w is None else (g_w * g).to(ctx.weight_dtype), None, None)


CHUNK_ROWS = 128  # 25 MB of fp32 logits at SmolLM2's 49k vocabulary; 64 rows was 9% slower (repacking W per chunk)


def eval_batch_size(cfg: TrainConfig) -> int:
    """Evaluation keeps no activations for a backward pass: twice the training micro-batch fits."""
    return cfg.batch_size * 2


def make_batch(examples: list[Example], pad_id: int, device: torch.device, packed: bool) -> dict[str, torch.Tensor]:
    return collate_packed(examples, device) if packed else collate(examples, pad_id, device)


@torch.no_grad()
def packing_matches(model, examples: list[Example], pad_id: int, device: torch.device) -> bool:
    """Does this model keep packed examples apart? (transformers' own models do; remote code may
    not.) Two checks on the first examples, both needed:
    - apart: the loss of an example packed after another must not change when that other example's
      tokens change (reversed, same length). Rows are computed independently in every precision, so
      a model that keeps examples apart gives the same bits, and one that mixes them moves the loss
      by far more than 1e-4: a test that rounding cannot blur, in bf16 as in fp32;
    - same maths: the packed and the padded loss agree, to 1e-4 in fp32 and 1e-2 in half precision
      (whose kernels round differently for different row layouts)."""
    apart = len(examples) < 2 or _unchanged_by_its_neighbour(model, examples[0], examples[1], device)
    packed, _ = completion_loss(model, collate_packed(examples, device))
    padded, _ = completion_loss(model, collate(examples, pad_id, device))
    tol = 1e-4 if compute_dtype(model) == torch.float32 else 1e-2
    return apart and bool(torch.isclose(packed, padded, rtol=tol, atol=tol))


def _unchanged_by_its_neighbour(model, first: Example, probe: Example, device: torch.device) -> bool:
    """Is `probe`'s loss, packed after `first`, the same when `first`'s tokens are reversed? `first`
    carries no loss (an empty trained span), so each packed row's loss is the probe's alone."""
    lead = dataclasses.replace(first, trained=((1, 1),))
    other = dataclasses.replace(lead, input_ids=lead.input_ids[::-1])
    loss, _ = completion_loss(model, collate_packed([lead, probe], device))
    moved, _ = completion_loss(model, collate_packed([other, probe], device))
    return bool(torch.isclose(loss, moved, rtol=1e-4, atol=1e-4))


def real_tokens(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()


@torch.no_grad()
def eval_loss(model, examples: list[Example], batch_size: int, pad_id: int, device: torch.device,
              packed: bool = True) -> float:
    """Token-weighted mean completion loss over `examples` (every completion token counts once)."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    total, count = 0.0, 0
    for i in range(0, len(order), batch_size):
        batch = make_batch([examples[j] for j in order[i:i + batch_size]], pad_id, device, packed)
        loss, n = completion_loss(model, batch)
        total, count = total + loss.item(), count + n
    model.train(was_training)
    return total / count


# ---------------------------------------------------------------------------------------------- schedule


def lr_at(step: int, steps: int, peak: float, cfg: TrainConfig) -> float:
    """LR for optimizer step `step` (0-based): linear warmup, then decay to min_lr_ratio * peak."""
    warmup = int(cfg.warmup_ratio * steps)
    if step < warmup:  # 1) warmup from ~0: the first Adam steps are the largest relative moves
        return peak * (step + 1) / (warmup + 1)
    if cfg.lr_schedule == "constant":  # 2) flat
        return peak
    progress = (step - warmup) / max(1, steps - warmup)  # 0 -> 1 over the decay phase
    floor = cfg.min_lr_ratio * peak
    if cfg.lr_schedule == "linear":  # 3a) straight line down
        return floor + (peak - floor) * (1.0 - progress)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))  # 3b) cosine


# ---------------------------------------------------------------------------------------------- checkpoints


@dataclass
class Checkpointer:
    """Mid-trial state (adapter weights, AdamW moments, RNG, curves so far) every `every` steps, so
    a killed trial continues from its last checkpoint. The data order is a pure function of
    (seed, step), so a resumed trial sees exactly the batches it would have seen."""

    path: Path | None
    key: str  # the trial id: a checkpoint of another config is ignored
    every: int = 0

    def due(self, step: int, steps: int) -> bool:
        return bool(self.path and self.every and step % self.every == 0 and step < steps)

    def save(self, step: int, model, opt, res: TrainResult, window: list[float], elapsed: float) -> None:
        state = {"key": self.key, "step": step, "elapsed": elapsed, "window": window,
                 "result": dataclasses.asdict(res), "optimizer": opt.state_dict(),
                 "adapter": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
                 "rng": torch.random.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)  # atomic: the previous checkpoint stays valid until this one is whole

    def restore(self, model, opt) -> tuple[int, TrainResult, list[float], float]:
        """(last completed step, result so far, loss window, elapsed seconds); step 0 when there is none."""
        if not (self.path and self.every and self.path.is_file()):
            return 0, TrainResult(), [], 0.0
        state = torch.load(self.path, weights_only=True)  # tensors and plain containers only
        if state.get("key") != self.key:
            return 0, TrainResult(), [], 0.0
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in state["adapter"].items():
                params[name].copy_(value)
        opt.load_state_dict(state["optimizer"])
        torch.random.set_rng_state(state["rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return state["step"], TrainResult(**state["result"]), list(state["window"]), state["elapsed"]

    def remove(self) -> None:
        if self.path and self.path.exists():
            self.path.unlink()


# ---------------------------------------------------------------------------------------------- loop


def train(
    model,
    train_set: list[Example],
    eval_set: list[Example],
    cfg: TrainConfig,
    lr: float,
    seed: int,
    pad_id: int,
    device: torch.device,
    on_step: Callable[[int, float], None] | None = None,
    checkpoint: Checkpointer | None = None,
) -> TrainResult:
    steps = total_steps(cfg, len(train_set))
    plan = step_plan(len(train_set), cfg, seed, steps)
    params = [p for p in model.parameters() if p.requires_grad]
    # fused: one kernel for all adapter tensors instead of a Python loop over them (a SmolLM2 rank-8
    # step on CPU takes 1.02x as long without it: benchmarks/levers.py)
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999), eps=1e-8,
                            fused=fused or None)
    eval_bs = eval_batch_size(cfg)
    torch.manual_seed(seed)  # LoRA dropout masks: same stream for every rank of this seed
    checkpoint = checkpoint or Checkpointer(None, "")
    done, res, window, elapsed = checkpoint.restore(model, opt)  # (0, empty, [], 0) on a fresh start
    res.total_steps = steps
    model.train()
    start = time.perf_counter() - elapsed
    for step in range(done + 1, steps + 1):
        for group in opt.param_groups:
            group["lr"] = lr_at(step - 1, steps, lr, cfg)
        micro = micro_batches(plan[step - 1], train_set, cfg.batch_size)
        n_step = sum(train_set[i].n_completion for i in plan[step - 1])
        step_loss = 0.0
        for idx in micro:
            batch = make_batch([train_set[i] for i in idx], pad_id, device, cfg.packing)
            loss_sum, _ = completion_loss(model, batch)
            (loss_sum / n_step).backward()
            step_loss += loss_sum.item()
            res.tokens_trained += real_tokens(batch)
        res.completion_tokens_trained += n_step
        step_loss /= n_step
        if not math.isfinite(step_loss):
            res.status, res.error = "diverged", f"non-finite train loss ({step_loss}) at step {step}"
            res.steps.append(step)
            res.train_losses.append(step_loss)
            break
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        window.append(step_loss)
        if step % cfg.log_every == 0 or step == steps:
            res.steps.append(step)
            res.train_losses.append(sum(window) / len(window))  # mean over the logging window
            window = []
        if step % cfg.eval_every == 0 or step == steps:
            t0 = time.perf_counter()
            res.eval_steps.append(step)
            res.eval_losses.append(eval_loss(model, eval_set, eval_bs, pad_id, device, cfg.packing))
            res.eval_time_seconds += time.perf_counter() - t0
        if checkpoint.due(step, steps):
            checkpoint.save(step, model, opt, res, window, time.perf_counter() - start)
        if on_step is not None:
            on_step(step, step_loss)
    res.training_time_seconds = time.perf_counter() - start - res.eval_time_seconds
    checkpoint.remove()
    model.eval()
    return res
