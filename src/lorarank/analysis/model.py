"""The analysis model: every number, threshold, verdict and chosen trial behind a sweep's report.

Built once, in one pass, from the trials' run_data records (analysis/summary.py), frozen, saved as
analysis.json, and rendered by report/markdown.py and the report's figures, which format and draw but
never filter trials, apply a threshold or reach a verdict. A decision added to the report is added
here first.

One decision framework: every "is rank r as good as rank s?" in the report is an `stats.Comparison`
(paired over shared seeds, 90% CI against ±δ, one `stats.Outcome`), and every verdict below (the
recommendation, the answers, the hypotheses) is a function of such outcomes.

Conventions: losses are mean cross-entropy per trained token (nats, lower is better); accuracies are
shares in [0, 1]; every `Estimate` of a row is a mean with its 95% CI over seeds (None bounds with one
seed). Dict keys that are ranks or seeds are ints here and strings in analysis.json.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from lorarank.analysis.capacity import GapTrajectory, RankScaling
from lorarank.analysis.recommend import Recommendation
from lorarank.analysis.sweep_info import Baseline, Setup
from lorarank.analysis.stats import Comparison, Estimate, LineFit, McNemar, SeedSlopes


class Verdict(str, Enum):
    """A claim judged from the comparison outcomes, on this data and budget."""

    CONFIRMED = "CONFIRMED"
    REFUTED = "REFUTED"
    INCONCLUSIVE = "INCONCLUSIVE"


class Returns(str, Enum):
    """Answer 1, from the recommendation (analysis/answers.py: diminishing_returns)."""

    DIMINISH = "diminish"  # the recommended rank lies below the largest rank
    NONE_SHOWN = "none_shown"  # the best rank is the largest and the next rank down is worse
    INCONCLUSIVE = "inconclusive"  # neither
    UNTESTED = "untested"  # one seed: only a provisional pick
    SINGLE_RANK = "single_rank"


class TrendVerdict(str, Enum):
    GROWS = "grows"  # the CI of the mean per-seed slope lies above 0
    SHRINKS = "shrinks"  # ... below 0
    NOT_SHOWN = "not_shown"  # the CI holds 0
    NONE = "none"  # the quantity is 0 in every trial: nothing to trend
    UNTESTED = "untested"  # one seed: a slope but no interval


class AssociationVerdict(str, Enum):
    TOGETHER = "together"
    OPPOSITE = "opposite"
    NO_ASSOCIATION = "no_association"
    UNTESTED = "untested"


class SubspaceLevel(str, Enum):
    STRONG = "strong"
    ABOVE_CHANCE = "above_chance"
    CHANCE = "chance"


@dataclass(frozen=True)
class Thresholds:
    """Every cut-off a verdict in the report uses, with the reason it has this value. The level of
    every test is stats.ALPHA (5%)."""

    equivalence_margin: float = 0.05
    """ε: a rank may lose at most this share of the best rank's improvement over the base model and
    still count as equivalent to it (`report.equivalence_margin`). δ = ε·(M_base − M_best)."""
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
    train_tail_share: float = 0.25
    """The train loss of a trial is the mean over its last logged windows (this share of them, at
    least one): one logged window is a handful of batches, too noisy to compare ranks by."""


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


@dataclass(frozen=True)
class Intruders:
    """Intruder dimensions of one rank, means over seeds (Shuttleworth et al. 2024)."""

    k: int
    epsilon: float
    per_module: float
    by_type: dict[str, float]


@dataclass(frozen=True)
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
    train_loss: Estimate | None  # mean over the last logged windows (Thresholds.train_tail_share)
    train_loss_range: tuple[float, float] | None  # min..max of that over seeds
    eval_loss_range: tuple[float, float]  # min..max of the final eval loss over seeds
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
    intruders: Intruders | None = None
    params_per_token: float | None = None  # trainable params ÷ completion tokens trained (capacity)
    a_relative_change: Estimate | None = None  # ‖A − A₀‖_F / ‖A₀‖_F, mean over modules

    @property
    def seeds(self) -> list[int]:
        return [t.seed for t in self.trials]


@dataclass(frozen=True)
class DiminishingReturns:
    """Answer 1. The verdict follows from the recommendation's outcomes; the step-by-step changes
    (each rank against the next smaller one, paired, 90% CI) are reported, not judged."""

    verdict: Returns
    rank: int | None  # DIMINISH: the recommended rank; UNTESTED: the provisional pick
    basis: Comparison | None  # NONE_SHOWN: the next rank down against the best
    steps: list[Comparison]  # rank b against rank a for each pair of neighbouring ranks a < b


@dataclass(frozen=True)
class ItemTest:
    """Accuracy of two ranks on one seed: no seed noise, but the eval items are a sample too. McNemar's
    test when both records hold every item's correctness; otherwise the two-proportion interval,
    which ignores the pairing of the items (conservative when both ranks get the same items right)."""

    mcnemar: McNemar | None
    unpaired: Estimate | None  # 90% CI of the accuracy difference over the items
    items_recorded: int  # items whose correctness both records hold
    n_items: int


@dataclass(frozen=True)
class PairAnswer:
    """Answer 2, "does rank small do as well as rank large?": the same comparison with the same δ."""

    small: int
    large: int
    loss: Comparison
    accuracy: Comparison | None
    accuracy_items: ItemTest | None  # one seed only
    low_rank_hypothesis: Verdict  # "if the small rank works as well, the adaptation is low-dimensional"


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
    """One of the original experiment's expectations, judged from the comparison outcomes."""

    rank: int
    claim: str
    verdict: Verdict
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
    verdict: SubspaceLevel


@dataclass(frozen=True)
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
    """Does a per-trial quantity grow with rank? y = a + b·log2(r) fitted per seed, b's mean and
    95% t interval over the seeds (stats.slopes_over_seeds)."""

    quantity: str  # forgetting | intruders
    slopes: SeedSlopes | None  # None when every trial is 0 (verdict NONE)
    n_trials: int
    verdict: TrendVerdict


@dataclass(frozen=True)
class Association:
    """Do two per-trial quantities go together across ranks? Spearman's rank correlation."""

    x: str
    y: str
    rho: float | None
    p: float | None
    n: int
    verdict: AssociationVerdict


@dataclass(frozen=True)
class PolicySummary:
    """Everything the report says about one alpha policy."""

    policy: str
    ranks: list[int]
    rows: dict[int, RankRow]
    n_seeds: int  # most seeds behind any rank
    per_seed_eval: dict[int, dict[int, float]]
    recommendation: Recommendation | None  # on eval loss; None without a base model
    recommendation_accuracy: Recommendation | None  # on task accuracy (verifiable data)
    returns: DiminishingReturns
    pair: PairAnswer | None
    params: ParamsFit
    time: TimeFit | None
    hypotheses: list[Hypothesis]
    capacity_use: CapacityUse | None
    forgetting_trend: Trend | None
    intruder_trend: Trend | None
    intruders_vs_forgetting: Association | None
    gaps: dict[int, GapTrajectory]  # each rank's eval curve against the highest rank's
    rank_scaling: RankScaling | None  # stable rank ≈ c·r^β
    subspace: dict[str, SubspaceEntry] = field(default_factory=dict)


@dataclass(frozen=True)
class NotOk:
    name: str
    status: str
    error: str | None


@dataclass(frozen=True)
class Analysis:
    thresholds: Thresholds
    setup: Setup | None  # what sweep.json says about the run (None: records analysed without one)
    baseline: Baseline | None  # the base model's numbers
    policies: dict[str, PolicySummary]
    full_finetune: RankRow | None
    not_ok: list[NotOk]

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)


def to_jsonable(obj: Any) -> Any:
    """Dataclasses -> dicts, enums -> their values, tuples -> lists, int dict keys -> strings: what
    analysis.json holds."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj
