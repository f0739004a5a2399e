"""Hypothesis strategies the property tests share."""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def floats(lo, hi, *extremes):
    """float32 values in ``[lo, hi]``, with the listed extremes drawn often."""
    lo, hi = float(np.float32(lo)), float(np.float32(hi))
    # No subnormals: XLA on CPU flushes them to zero, a platform choice, not a property.
    within = st.floats(
        lo, hi, width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False
    )
    if not extremes:
        return within
    return st.one_of(st.sampled_from([float(np.float32(e)) for e in extremes]), within)


def arrays(shape, elements):
    return hnp.arrays(np.float32, shape, elements=elements)
