"""The analysis model: every number, threshold, verdict and chosen trial behind a sweep's report.

Built once from the trials' run_data records (analysis/summary.py), saved as analysis.json, and
rendered by report/markdown.py and report/plots.py, which format and draw but never filter trials,
apply a threshold or reach a verdict. A decision added to the report is added here first.

Conventions: losses are mean cross-entropy per trained token (nats, lower is better); accuracies are
shares in [0, 1]; every `Estimate` is a mean with its 95% CI over seeds (None bounds with one seed).
Dict keys that are ranks or seeds are ints here and strings in analysis.json (JSON has no int keys).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lorarank.analysis.capacity import Divergence, RankScaling
from lorarank.analysis.recommend import Recommendation
from lorarank.analysis.stats import Estimate, LineFit


@dataclass(frozen=True)
class Thresholds:
    """Every cut-off a verdict in the report uses, with the reason it has this value."""

    tolerance: float
    """One seed gives no noise estimate: ranks whose eval loss differs by at most this share of the
    better one are called tied (`report.tolerance`). With several seeds the paired 95% CI decides."""
    balance_share: float = 0.9
    """The original's "rank 16 is a good balance" holds when rank 16 reaches at least this share of
    the best rank's eval-loss improvement over the base model (or is within noise of the best)."""
    negligible_time_overhead: float = 0.05
    """Rank "barely affects training time" when the fitted LoRA cost at the largest rank is below
    this share of the rank-independent time: smaller than the run-to-run drift of a CPU."""
    unused_capacity_share: float = 0.25
    """The largest rank's extra capacity is "largely unused" when 90% of ΔW's energy sits in fewer
    than this share of its r directions."""
    strong_phi: float = 0.5
    """Subspace similarity above this is strong overlap: Hu et al. 2021 §7.2 use 0.5 for the top
    directions of r = 8 and r = 64 adapters."""
    above_chance: float = 10.0
    """φ(1,1) at least this many times its random-subspace baseline counts as shared above chance."""
    equivalence_margin: float = 0.05
    """ε of the recommendation: a rank may lose at most this share of the best rank's improvement over
    the base model and still count as equivalent to it (`report.equivalence_margin`)."""
    trend_level: float = 0.95
    """A trend across ranks ("higher rank forgets more") is called when the CI of its slope at this
    level excludes zero."""


@dataclass(frozen=True)
class Curve:
    """A loss curve over seeds: the mean and the min..max band at each logged step every seed has."""

    steps: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]
    n: int  # seeds behind each point


@dataclass(frozen=True)
class TrialRef:
    """One recorded trial a row is built from."""

    trial_id: str
    name: str
    seed: int
    rank: int


@dataclass(frozen=True)
class LrChoice:
    """The learning rate a rank is judged at: the lowest mean final eval loss among those swept."""

    chosen: float
    candidates: dict[str, float]  # "%g" of each LR -> its mean final eval loss


@dataclass
class RankRow:
    """One rank (or the full fine-tuning reference) at its chosen learning rate, over seeds."""

    rank: int  # 0 for full fine-tuning
    trials: list[TrialRef]
    learning_rate: LrChoice
    trainable_params: int
    total_params: int
    trainable_ratio: float
    effective_scale: float | None
    lora_alpha: float | None
    adapter_bytes: int | None
    final_eval_loss: Estimate
    final_train_loss: Estimate | None
    training_time_seconds: Estimate | None
    tokens_per_second: Estimate | None
    peak_memory_bytes: Estimate | None
    accuracy: Estimate | None
    per_family: dict[str, float] | None
    spectra: dict | None  # means over seeds of spectra.summarize(): overall, by_type, by_layer, spectrum
    train_curve: Curve
    eval_curve: Curve
    state_bytes: int  # adapter + gradient + AdamW moments (cost.py)
    learning_gain: Estimate | None = None  # base eval loss − eval loss (what fine-tuning gained)
    general_loss: Estimate | None = None  # loss on held-out general text
    forgetting: Estimate | None = None  # general loss − the base model's (positive = forgot)
    intruders: dict | None = None  # mean over seeds: intruders per module, overall and by module type
    params_per_token: float | None = None  # trainable params ÷ completion tokens trained (capacity)
    a_relative_change: Estimate | None = None  # ‖A − A₀‖_F / ‖A₀‖_F, mean over modules

    @property
    def seeds(self) -> list[int]:
        return [t.seed for t in self.trials]


@dataclass(frozen=True)
class NoiseCheck:
    """Is one rank within noise of the best? difference = metric(rank) - metric(best)."""

    difference: Estimate | None  # None when the two share no seed
    within_noise: bool


@dataclass(frozen=True)
class Knee:
    """Diminishing returns: the smallest rank within noise of the best rank."""

    knee: int
    best: int
    rule: str
    checks: dict[int, NoiseCheck]
    where: str  # smallest | inside | largest: the knee at the smallest rank, inside the range, at the largest


@dataclass(frozen=True)
class Comparison:
    """Does the small rank do as well as the large one on one metric?"""

    verdict: str  # equivalent (TOST within δ) | inconclusive | tied (one seed) | worse | better (the small rank)
    difference: Estimate  # small - large
    relative: float | None  # difference / large
    rule: str


@dataclass(frozen=True)
class ParamsFit:
    fit: LineFit | None  # trainable params = intercept + slope·r (None with one rank)
    per_rank_formula: int | None  # Σ(d_in + d_out) over adapted modules
    exact: bool  # every trial has exactly r · per_rank_formula trainable parameters


@dataclass(frozen=True)
class TimeFit:
    """time = a + b·r over the chosen trials; b·r_max / a is the measured LoRA overhead at r_max."""

    fit: LineFit
    r_max: int
    measured_overhead: float | None
    predicted_overhead: float | None  # cost.lora_overhead at r_max with the trained head share
    negligible: bool  # measured overhead below Thresholds.negligible_time_overhead


@dataclass(frozen=True)
class Hypothesis:
    """One of the original experiment's expectations, judged from this sweep."""

    rank: int
    claim: str
    verdict: str  # CONFIRMED | REFUTED | INCONCLUSIVE
    evidence: str


@dataclass(frozen=True)
class CapacityUse:
    """How much of the largest rank's capacity its update uses."""

    rank: int
    effective_rank: float
    energy_rank_90: float
    largely_unused: bool  # energy rank below Thresholds.unused_capacity_share · r


@dataclass(frozen=True)
class SubspaceVerdict:
    """Mean φ(1,1) over module types against random directions, and what it means."""

    space: str  # A | delta_out
    top1: float
    random: float
    verdict: str  # strong | above_chance | chance


@dataclass
class SubspaceEntry:
    """φ between the adapters of two trials (subspace.compare_adapters), with its verdicts."""

    kind: str  # small_vs_large | seed_vs_seed
    trial_ids: list[str]
    names: list[str]
    ranks: list[int]
    seeds: list[int]
    spaces: dict[str, dict[str, dict]]  # space -> module type -> phi, top1, top1_random, full, ...
    verdicts: list[SubspaceVerdict] = field(default_factory=list)


@dataclass(frozen=True)
class Trend:
    """Does a per-trial quantity grow with rank? Least squares y = a + b·log2(r) over trials."""

    quantity: str  # forgetting | intruders
    slope: float  # change of y per doubling of the rank
    low: float | None  # CI of the slope at Thresholds.trend_level (None with two points)
    high: float | None
    n: int  # trials in the fit
    verdict: str  # grows | shrinks | no trend | none (zero everywhere) | untested
    level: float = 0.95  # confidence level of (low, high): Thresholds.trend_level


@dataclass(frozen=True)
class Association:
    """Do two per-trial quantities go together across ranks? Spearman's rank correlation."""

    x: str
    y: str
    rho: float | None
    p: float | None
    n: int
    verdict: str  # together | opposite | no association | untested


@dataclass
class PolicySummary:
    """Everything the report says about one alpha policy."""

    policy: str
    ranks: list[int]
    rows: dict[int, RankRow]
    n_seeds: int  # most seeds behind any rank
    per_seed_eval: dict[int, dict[int, float]]
    knee: Knee | None
    pair: tuple[int, int]  # the ranks of "does rank 8 do as well as rank 64?"
    small_vs_large: Comparison | None
    small_vs_large_accuracy: Comparison | None
    low_rank_hypothesis: str | None  # SUPPORTED | NOT SUPPORTED at this budget | SUPPORTED (...)
    params: ParamsFit
    time: TimeFit | None
    hypotheses: list[Hypothesis]
    capacity_use: CapacityUse | None
    subspace: dict[str, SubspaceEntry] = field(default_factory=dict)
    recommendation: Recommendation | None = None  # on eval loss
    recommendation_accuracy: Recommendation | None = None  # on task accuracy (verifiable data)
    forgetting_trend: Trend | None = None
    intruder_trend: Trend | None = None
    intruders_vs_forgetting: Association | None = None
    divergence: dict[int, Divergence] = field(default_factory=dict)  # each rank vs the highest
    rank_scaling: RankScaling | None = None  # stable rank ≈ c·r^β


@dataclass(frozen=True)
class NotOk:
    name: str
    status: str
    error: str | None


@dataclass
class Analysis:
    thresholds: Thresholds
    policies: dict[str, PolicySummary]
    full_finetune: RankRow | None
    not_ok: list[NotOk]

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)


def to_jsonable(obj: Any) -> Any:
    """Dataclasses -> dicts, tuples -> lists, int dict keys -> strings: what analysis.json holds."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj
