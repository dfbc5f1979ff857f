"""95 % confidence intervals for proportions (Wilson score interval).

Wilson's interval stays inside [0, 1] and behaves at 0 and n successes, where the normal
approximation does not. It treats the items as independent; phrases of one image are not quite,
so read it as a lower bound on the uncertainty.

>>> wilson_interval(8, 10)
(0.4902, 0.9433)
>>> wilson_interval(0, 0)
(0.0, 1.0)
"""

from __future__ import annotations

import math

Z_95 = 1.959964  # two-sided 95 % normal quantile


def wilson_interval(successes: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """(low, high) of the Wilson score interval, rounded to 4 places; (0, 1) when ``total`` is 0."""
    if total == 0:
        return (0.0, 1.0)
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4))
