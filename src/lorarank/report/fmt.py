"""Number formatting shared by the README and the figures (formatting only, no decisions)."""

from __future__ import annotations

from lorarank.analysis.stats import Estimate


def fmt_est(est: Estimate | None, digits: int = 4, pct: bool = False) -> str:
    """'1.2345 ± 0.0123' (mean ± 95% CI half-width), the mean alone with one seed, 'n/a' without data."""
    if not est:
        return "n/a"
    scale, unit = (100.0, "%") if pct else (1.0, "")
    text = f"{est.mean * scale:.{digits}f}{unit}"
    if est.low is not None:
        text += f" ± {(est.high - est.low) / 2 * scale:.{digits}f}"
    return text


def line_text(intercept: float, slope: float, unit: str, digits: int = 4) -> str:
    """'101.7 s + 0.1792 s × r', with the sign folded in (never '+ -')."""
    sign = "+" if slope >= 0 else "−"
    return f"{intercept:.1f} {unit} {sign} {abs(slope):.{digits}f} {unit} × r"
