"""Static shape checks for the public pure functions (losses, quantiser, diffusion).

They read ``.shape`` only, so they run at trace time (also under ``jax.jit``) and turn a
broadcasting error deep inside XLA, or a silently broadcast ``[B]`` against ``[B, 1]``, into a
``ValueError`` that names the function, the arguments and their shapes.
"""

from __future__ import annotations

import jax.numpy as jnp


def same_shape(fn: str, **arrays) -> None:
    """Raise unless all ``arrays`` (by argument name) have one shape."""
    (name0, a0), *rest = arrays.items()
    for name, a in rest:
        if jnp.shape(a) != jnp.shape(a0):
            raise ValueError(
                f"{fn}: {name0} and {name} must have the same shape, got {name0} "
                f"{jnp.shape(a0)} and {name} {jnp.shape(a)}"
            )
