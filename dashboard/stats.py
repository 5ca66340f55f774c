"""When is a difference between two deployment versions larger than noise?

- Success rate: a two-proportion z-test on conversations (pooled variance);
  the difference counts when the two-sided p-value is below 0.05 and each side
  has at least MIN_CONVERSATIONS conversations.
- p95 latency: a distribution-free 95 % confidence interval for each version's
  p95 from the order statistics (ranks n·q ± 1.96·√(n·q·(1−q))), read from the
  latency sketch; the difference counts when the two intervals do not overlap.
"""

import math

from metrics.sketch import Sketch, quantile_at_rank

Z_95 = 1.959963984540054
MIN_CONVERSATIONS = 30


def two_proportions(successes_a: int, n_a: int, successes_b: int, n_b: int) -> dict:
    if n_a < MIN_CONVERSATIONS or n_b < MIN_CONVERSATIONS:
        return {
            "significant": False,
            "p_value": None,
            "reason": f"fewer than {MIN_CONVERSATIONS} conversations on a side",
        }
    p_a, p_b = successes_a / n_a, successes_b / n_b
    pooled = (successes_a + successes_b) / (n_a + n_b)
    variance = pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
    if variance == 0:
        return {"significant": False, "p_value": 1.0, "reason": "no variation"}
    z = (p_b - p_a) / math.sqrt(variance)
    p_value = math.erfc(abs(z) / math.sqrt(2))
    return {"significant": p_value < 0.05, "p_value": p_value, "z": z, "reason": "two-proportion z-test"}


def quantile_interval(sketch: Sketch, q: float) -> tuple[float, float] | None:
    n = sum(c for c in sketch.values() if c > 0)
    if n == 0:
        return None
    spread = Z_95 * math.sqrt(n * q * (1 - q))
    low = max(1, math.floor(n * q - spread))
    high = min(n, math.ceil(n * q + spread))
    return quantile_at_rank(sketch, low), quantile_at_rank(sketch, high)


def quantiles_differ(sketch_a: Sketch, sketch_b: Sketch, q: float = 0.95) -> dict:
    a, b = quantile_interval(sketch_a, q), quantile_interval(sketch_b, q)
    if a is None or b is None:
        return {"significant": False, "interval_a": a, "interval_b": b, "reason": "no latencies on a side"}
    overlap = a[0] <= b[1] and b[0] <= a[1]
    return {
        "significant": not overlap,
        "interval_a": a,
        "interval_b": b,
        "reason": "95 % intervals from order statistics",
    }
