"""How a metric's differences and a comparison's outcome are written: nats for a loss, percentage
points for an accuracy. The model's sentences (the recommendation's lead, the hypotheses' evidence)
and the report use these, so one outcome reads the same everywhere."""

from __future__ import annotations

from dataclasses import dataclass

from lorarank.analysis.stats import Comparison, Outcome


@dataclass(frozen=True)
class Units:
    higher_is_better: bool

    @property
    def metric(self) -> str:
        return "task accuracy" if self.higher_is_better else "eval loss"

    @property
    def name(self) -> str:
        return "points" if self.higher_is_better else "nats"

    def diff(self, x: float) -> str:
        return f"{100 * x:+.1f}" if self.higher_is_better else f"{x:+.4f}"

    def size(self, x: float) -> str:
        return f"{100 * abs(x):.1f}" if self.higher_is_better else f"{abs(x):.4g}"

    def interval(self, c: Comparison, unit: bool = False) -> str:
        """'+0.0519 (90% CI +0.0006 .. +0.1032)' ('+0.0519 nats (...)' with the unit), the point
        estimate alone without a CI."""
        if c.mean is None:
            return "n/a"
        ci = f" ({c.level:.0%} CI {self.diff(c.low)} .. {self.diff(c.high)})" if c.low is not None else ""
        return f"{self.diff(c.mean)}{' ' + self.name if unit else ''}{ci}"

    def outcome(self, c: Comparison) -> str:
        """The outcome in words, e.g. 'equivalent within δ, and measurably worse by 0.05 nats'."""
        delta = f"δ = {self.size(c.margin)} {self.name}" if c.margin is not None else "no δ (no base model)"
        by = f"{self.size(c.mean)} {self.name}" if c.mean is not None else ""
        if c.outcome is Outcome.UNTESTED:
            if c.provisional_within_margin is None:
                return f"untested ({c.reason})"
            where = "within" if c.provisional_within_margin else "beyond"
            return f"untested with one seed: the point estimate lies {where} {delta} (provisional)"
        return {
            Outcome.EQUIVALENT: f"equivalent within {delta}",
            Outcome.EQUIVALENT_AND_WORSE: f"equivalent within δ, and measurably worse by {by}",
            Outcome.EQUIVALENT_AND_BETTER: f"equivalent within δ, and measurably better by {by}",
            Outcome.WORSE: f"worse by {by}, not within {delta}",
            Outcome.BETTER: f"better by {by}, not within {delta}",
            Outcome.INCONCLUSIVE: f"inconclusive: neither shown different nor within {delta}",
        }[c.outcome]
