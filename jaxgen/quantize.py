"""Vector quantisation for VQ-VAE (van den Oord et al. 2017), as pure functions.

What is here:
- ``nearest_code`` / ``quantize``: snap each encoder output to its closest codebook row;
  ``straight_through``: the decoder input whose gradient is copied back onto the encoder.
- ``codebook_loss`` and ``commitment_loss``: the two VQ terms of the VQ-VAE objective.
- ``EmaCodebook``, ``ema_init``, ``ema_update``: the alternative to ``codebook_loss`` where the
  codebook follows an exponential moving average of its assigned encoder outputs (online
  k-means) instead of being trained by gradient descent.
- ``code_counts``, ``perplexity``, ``fraction_used``: codebook usage statistics.
- ``update_unused``, ``restart_dead_codes``, ``restart_dead_codes_ema``: re-seeding codes
  that have gone unused for too long from current encoder outputs.
- ``CodebookState``: a tokenizer's codebook state (EMA statistics, unused counters) with its
  ``init``, ``check`` and the ``step`` that applies the transforms above after each update.

Shapes: encoder outputs ``z_e`` are ``[..., D]`` (any leading axes, e.g. ``[B, h, w, D]``,
each trailing ``D``-vector is quantised on its own); the codebook is ``[K, D]``; code indices
are ``int32`` with shape ``z_e.shape[:-1]``. Every reduction that crosses the batch is a global
sum or mean, so under ``jax.jit`` with a batch sharded over devices XLA inserts the
cross-device reductions and the results do not depend on the number of devices.

Which loss trains what:
- encoder: the reconstruction loss (through the straight-through estimator) plus the
  commitment loss;
- decoder: the reconstruction loss only;
- codebook: the codebook ("VQ") loss, or, with an EMA codebook, no gradient at all
  (``ema_update`` sets it directly; drop ``codebook_loss`` then and keep the commitment loss).

Pitfall: compute the VQ losses from ``codes`` (the raw quantised vectors, ``Quantized.codes``),
not from the straight-through ``z_q``. ``z_q`` has the value of ``codes`` but its gradient is
routed to ``z_e``, so ``codebook_loss(z_e, z_q)`` gives the codebook no gradient at all and
hands the encoder a gradient it should not get.

A typical gradient-trained step::

    q = quantize(z_e, codebook)
    recon = decoder(q.z_q)
    loss = (
        recon_loss(recon, x)
        + codebook_loss(z_e, q.codes)
        + commitment_loss(z_e, q.codes, beta=0.25)
    )
"""

from __future__ import annotations

from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import entr

from jaxgen.checks import same_shape

__all__ = [
    "CodebookState",
    "EmaCodebook",
    "Quantized",
    "code_counts",
    "codebook_loss",
    "commitment_loss",
    "ema_init",
    "ema_update",
    "fraction_used",
    "nearest_code",
    "perplexity",
    "quantize",
    "restart_dead_codes",
    "restart_dead_codes_ema",
    "straight_through",
    "update_unused",
]

_REDUCTIONS = ("mean", "sum")
# Distances decide a discrete choice; reduced-precision matmuls (TF32 on GPUs, bf16 passes on
# TPUs) can flip the argmin between near-equidistant codes, so these matmuls use full precision.
_PRECISION = jax.lax.Precision.HIGHEST


class Quantized(NamedTuple):
    """The result of ``quantize``.

    Attributes:
      z_q: the decoder input, ``z_e + stop_gradient(codes - z_e)``. Its value is ``codes``; its
        gradient with respect to ``z_e`` is the identity and it passes none to the codebook.
      codes: ``codebook[indices]``, the quantised vectors themselves. The codebook receives a
        gradient only through these; use them (not ``z_q``) in the VQ losses.
      indices: ``int32`` code index of each vector, shape ``z_e.shape[:-1]``.
    """

    z_q: jax.Array
    codes: jax.Array
    indices: jax.Array


def _float_dtype(dtype) -> jnp.dtype:
    """At least float32: statistics and distances are not accumulated in half precision."""
    return jnp.promote_types(dtype, jnp.float32)


def _flatten(z_e: jax.Array) -> jax.Array:
    """``[..., D] -> [N, D]``."""
    return z_e.reshape(-1, z_e.shape[-1])


# Static shape and dtype checks at the public boundaries. They read ``.shape`` and ``.dtype``
# only, so they run at trace time (also under ``jax.jit``) and replace a broadcasting or
# gather error deep inside XLA with a ValueError/TypeError naming the arguments and shapes.
def _check_codebook(fn: str, codebook, name: str = "codebook") -> None:
    if jnp.ndim(codebook) != 2:
        raise ValueError(f"{fn}: {name} must be [K, D], got shape {jnp.shape(codebook)}")


def _check_vectors(fn: str, z_e, codebook, name: str = "codebook") -> None:
    """``z_e: [..., D]`` against a ``[K, D]`` codebook."""
    _check_codebook(fn, codebook, name)
    if jnp.ndim(z_e) < 1 or jnp.shape(z_e)[-1] != jnp.shape(codebook)[-1]:
        raise ValueError(
            f"{fn}: z_e must be [..., D] with D = {name}.shape[-1] = {jnp.shape(codebook)[-1]}, "
            f"got z_e {jnp.shape(z_e)} and {name} {jnp.shape(codebook)}"
        )


def _check_indices(fn: str, indices, name: str = "indices") -> None:
    dtype = jnp.result_type(indices)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{fn}: {name} must be integer code indices, got dtype {dtype}")


def _check_num_codes(fn: str, num_codes) -> None:
    if not isinstance(num_codes, int | np.integer) or isinstance(num_codes, bool) or num_codes < 1:
        raise ValueError(f"{fn}: num_codes must be an integer >= 1, got {num_codes!r}")


def _check_restart(fn: str, codebook, steps_unused, z_e, name: str = "codebook") -> None:
    _check_vectors(fn, z_e, codebook, name)
    if jnp.shape(steps_unused) != jnp.shape(codebook)[:1]:
        raise ValueError(
            f"{fn}: steps_unused must be [K] with K = {name}.shape[0] = "
            f"{jnp.shape(codebook)[0]}, got steps_unused {jnp.shape(steps_unused)}"
        )
    if np.prod(jnp.shape(z_e)[:-1], dtype=np.int64) == 0:
        raise ValueError(f"{fn}: z_e {jnp.shape(z_e)} holds no vectors to re-seed dead codes from")


def nearest_code(z_e: jax.Array, codebook: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Index and value of the closest codebook row (squared Euclidean distance) for each vector.

    The distances are expanded as ``|z|^2 - 2 z.e + |e|^2`` so that the work is a single
    ``[N, D] x [D, K]`` matmul over all ``N`` flattened vectors, never an ``[N, K, D]`` tensor.
    Exact ties go to the lowest index.

    Args:
      z_e: ``[..., D]`` vectors (encoder outputs).
      codebook: ``[K, D]``.
    Returns:
      ``(indices, codes)``: ``int32`` indices of shape ``z_e.shape[:-1]`` and the selected
      rows ``codebook[indices]`` of shape ``[..., D]``. No gradient flows through the choice of
      index; ``codes`` is differentiable with respect to ``codebook``.
    """
    _check_vectors("nearest_code", z_e, codebook)
    dtype = _float_dtype(jnp.result_type(z_e, codebook))
    flat = jax.lax.stop_gradient(_flatten(z_e)).astype(dtype)
    book = jax.lax.stop_gradient(codebook).astype(dtype)
    distances = (
        jnp.sum(jnp.square(flat), axis=-1, keepdims=True)
        - 2.0 * jnp.matmul(flat, book.T, precision=_PRECISION)
        + jnp.sum(jnp.square(book), axis=-1)[None, :]
    )
    indices = jnp.argmin(distances, axis=-1).astype(jnp.int32).reshape(z_e.shape[:-1])
    codes = jnp.take(codebook, indices, axis=0)
    return indices, codes


def straight_through(z_e: jax.Array, codes: jax.Array) -> jax.Array:
    """Straight-through estimator: the value of ``codes``, the gradient of ``z_e``.

    Returns ``z_e + stop_gradient(codes - z_e)``: the decoder sees the quantised vectors, and
    the gradient the decoder sends back is copied unchanged onto ``z_e`` (the quantiser is
    treated as the identity in the backward pass). Nothing reaches the codebook through it.
    """
    same_shape("straight_through", z_e=z_e, codes=codes)
    return z_e + jax.lax.stop_gradient(codes - z_e)


def quantize(z_e: jax.Array, codebook: jax.Array) -> Quantized:
    """Quantise ``z_e`` ``[..., D]`` against ``codebook`` ``[K, D]``; see ``Quantized``."""
    _check_vectors("quantize", z_e, codebook)
    indices, codes = nearest_code(z_e, codebook)
    return Quantized(z_q=straight_through(z_e, codes), codes=codes, indices=indices)


def _reduce(squared: jax.Array, reduction: str) -> jax.Array:
    if reduction == "mean":
        return jnp.mean(squared)
    # "sum": over positions and D, then the mean over the leading (batch) axis.
    batch = squared.shape[0] if squared.ndim > 1 else 1
    return jnp.sum(squared) / batch


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def codebook_loss(z_e: jax.Array, codes: jax.Array, reduction: str = "mean") -> jax.Array:
    """The codebook ("VQ") term ``|stop_gradient(z_e) - codes|^2``: pulls codes to the encoder.

    Its gradient reaches the codebook (through ``codes``) and never the encoder. Pass the raw
    ``codes`` from ``quantize``/``nearest_code``, not the straight-through ``z_q``, which
    carries no gradient to the codebook. Not used with an EMA codebook.

    Args:
      z_e: ``[B, ..., D]`` encoder outputs.
      codes: same shape, the quantised vectors.
      reduction: ``"mean"``: mean over every element (batch, positions and ``D``), on the
        scale of a per-pixel mean squared-error reconstruction loss. ``"sum"``: summed over
        positions and ``D``, averaged over the leading (batch) axis, on the scale of a
        per-image summed reconstruction loss (e.g. a Gaussian or Bernoulli log-likelihood).
    Returns:
      A scalar (at least float32).
    """
    _check_reduction(reduction)
    same_shape("codebook_loss", z_e=z_e, codes=codes)
    dtype = _float_dtype(jnp.result_type(z_e, codes))
    diff = jax.lax.stop_gradient(z_e).astype(dtype) - codes.astype(dtype)
    return _reduce(jnp.square(diff), reduction)


def commitment_loss(
    z_e: jax.Array, codes: jax.Array, beta: float = 0.25, reduction: str = "mean"
) -> jax.Array:
    """The commitment term ``beta * |z_e - stop_gradient(codes)|^2``: keeps the encoder near codes.

    Its gradient reaches the encoder and never the codebook. As in the VQ-VAE paper, ``beta``
    scales this term and only this one; the codebook term has weight 1. (taming-transformers'
    ``VectorQuantizer`` puts ``beta`` on the codebook term instead and leaves the commitment
    term at weight 1, which is not the paper's objective; do not copy its ``beta`` placement.)

    ``beta`` only means something relative to the reconstruction loss's reduction: the paper's
    0.25 was tuned against its reconstruction term, so pick ``reduction`` to match how the
    reconstruction loss is reduced (see ``codebook_loss`` for the two options), or retune
    ``beta``. ``"sum"`` over a ``D``-dimensional latent grid is ``h * w * D`` times ``"mean"``.

    Args:
      z_e: ``[B, ..., D]`` encoder outputs.
      codes: same shape, the quantised vectors.
      beta: weight of the term.
      reduction: ``"mean"`` or ``"sum"``, as in ``codebook_loss``.
    Returns:
      A scalar (at least float32).
    """
    _check_reduction(reduction)
    same_shape("commitment_loss", z_e=z_e, codes=codes)
    dtype = _float_dtype(jnp.result_type(z_e, codes))
    diff = z_e.astype(dtype) - jax.lax.stop_gradient(codes).astype(dtype)
    return beta * _reduce(jnp.square(diff), reduction)


@flax.struct.dataclass
class EmaCodebook:
    """State of a codebook trained by exponential moving averages (no gradient).

    Attributes:
      codebook: ``[K, D]``, ``embed_sum`` divided by the Laplace-smoothed ``cluster_size``.
      cluster_size: ``[K]`` moving average of how many vectors each code is assigned per batch.
      embed_sum: ``[K, D]`` moving average of the per-code sum of assigned vectors.
    """

    codebook: jax.Array
    cluster_size: jax.Array
    embed_sum: jax.Array


def ema_init(codebook: jax.Array) -> EmaCodebook:
    """EMA state starting from ``codebook`` ``[K, D]``.

    The start is self-consistent: every code gets a pseudo-count of 1 and a sum equal to its
    own vector, so ``codebook == embed_sum / cluster_size``; the pseudo-observation fades away
    at rate ``decay``. (Starting the sums at zero or at a different value than the codebook
    drags every code towards the origin in the first updates, which is one way codebooks
    collapse; see lucidrains/vector-quantize-pytorch issue #66.)
    """
    _check_codebook("ema_init", codebook)
    dtype = _float_dtype(codebook.dtype)
    codebook = codebook.astype(dtype)
    return EmaCodebook(
        codebook=codebook,
        cluster_size=jnp.ones(codebook.shape[:1], dtype),
        embed_sum=codebook * 1.0,
    )


def ema_update(
    ema: EmaCodebook,
    z_e: jax.Array,
    indices: jax.Array,
    decay: float = 0.99,
    eps: float = 1e-5,
) -> EmaCodebook:
    """One EMA (online k-means) step of the codebook, from a batch and its code assignment.

    With ``n_k`` the number of vectors of the batch assigned to code ``k`` and ``s_k`` their
    sum (all leading axes of ``z_e`` flattened)::

        cluster_size <- decay * cluster_size + (1 - decay) * n_k
        embed_sum    <- decay * embed_sum    + (1 - decay) * s_k
        n            =  sum(cluster_size)
        smoothed     =  (cluster_size + eps) / (n + K * eps) * n      # Laplace smoothing
        codebook     =  embed_sum / smoothed[:, None]

    This is the update of Sonnet's/Haiku's ``VectorQuantizerEMA`` without their
    zero-debiasing. The smoothing keeps codes with no recent assignment from dividing by zero;
    such codes shrink towards the origin, so pair this with ``restart_dead_codes_ema``.

    ``n_k`` and ``s_k`` are global sums over the whole batch (``s`` is one
    ``one_hot(indices)^T @ z_e`` matmul), so under ``jax.jit`` with the batch sharded across
    devices and the state replicated, the result is the same on one device or many. ``z_e``
    is passed through ``stop_gradient``: this update never sends a gradient to the encoder.

    Args:
      ema: current state.
      z_e: ``[..., D]`` encoder outputs.
      indices: their code indices, shape ``z_e.shape[:-1]`` (e.g. ``quantize(...).indices``,
        computed against ``ema.codebook``).
      decay: EMA decay in ``[0, 1)``; 0 sets each code to the mean of its batch assignment.
      eps: Laplace smoothing constant.
    Returns:
      The new state.
    """
    _check_vectors("ema_update", z_e, ema.codebook, "ema.codebook")
    _check_indices("ema_update", indices)
    if jnp.shape(indices) != jnp.shape(z_e)[:-1]:
        raise ValueError(
            f"ema_update: indices must have shape z_e.shape[:-1] = {jnp.shape(z_e)[:-1]}, "
            f"got indices {jnp.shape(indices)} for z_e {jnp.shape(z_e)}"
        )
    num_codes = ema.codebook.shape[0]
    dtype = ema.embed_sum.dtype
    flat = jax.lax.stop_gradient(_flatten(z_e)).astype(dtype)
    one_hot = jax.nn.one_hot(indices.reshape(-1), num_codes, dtype=dtype)  # [N, K]
    counts = jnp.sum(one_hot, axis=0)
    sums = jnp.matmul(one_hot.T, flat, precision=_PRECISION)  # [K, D]
    cluster_size = decay * ema.cluster_size + (1.0 - decay) * counts
    embed_sum = decay * ema.embed_sum + (1.0 - decay) * sums
    total = jnp.sum(cluster_size)
    smoothed = (cluster_size + eps) / (total + num_codes * eps) * total
    return EmaCodebook(
        codebook=embed_sum / smoothed[:, None],
        cluster_size=cluster_size,
        embed_sum=embed_sum,
    )


def code_counts(indices: jax.Array, num_codes: int) -> jax.Array:
    """``[num_codes]`` float32 histogram of ``indices`` over all of its axes.

    Summed over several batches (e.g. a whole evaluation pass) it gives ``fraction_used``.
    """
    _check_indices("code_counts", indices)
    _check_num_codes("code_counts", num_codes)
    return jnp.bincount(indices.reshape(-1), length=num_codes).astype(jnp.float32)


def perplexity(indices: jax.Array, num_codes: int) -> jax.Array:
    """``exp(entropy)`` of the batch's average code distribution: the effective number of codes.

    It is ``K`` when all ``K`` codes are used equally often and 1 when a single code is used.
    It is a statistic of one batch and depends on the batch size: a batch of ``N`` vectors can
    never show a perplexity above ``N``, and a small batch underestimates the usage of a large
    codebook. To know how much of the codebook is used, sum ``code_counts`` over an evaluation
    pass and take ``fraction_used`` of the total.
    """
    _check_indices("perplexity", indices)
    _check_num_codes("perplexity", num_codes)
    counts = code_counts(indices, num_codes)
    probs = counts / jnp.maximum(jnp.sum(counts), 1.0)
    entropy = jnp.sum(entr(probs))
    return jnp.exp(entropy)


def fraction_used(counts: jax.Array) -> jax.Array:
    """Fraction of codes with a nonzero count, e.g. of ``code_counts`` summed over a pass."""
    return jnp.mean((counts > 0).astype(jnp.float32))


def update_unused(steps_unused: jax.Array, indices: jax.Array) -> jax.Array:
    """Per-code count of consecutive steps without an assignment.

    Args:
      steps_unused: ``[K]`` int32 counters (start from zeros).
      indices: code indices of this step's batch, any shape.
    Returns:
      ``[K]`` int32: 0 for the codes used in this batch, the old counter plus 1 for the others.
    """
    if jnp.ndim(steps_unused) != 1:
        raise ValueError(
            f"update_unused: steps_unused must be [K], got shape {jnp.shape(steps_unused)}"
        )
    _check_indices("update_unused", indices)
    used = code_counts(indices, steps_unused.shape[0]) > 0
    return jnp.where(used, 0, steps_unused + 1).astype(jnp.int32)


def _dead_and_draws(
    steps_unused: jax.Array, z_e: jax.Array, rng: jax.Array, max_unused
) -> tuple[jax.Array, jax.Array]:
    """Mask of codes to restart and, for every code, a uniformly drawn row of ``z_e``."""
    num_codes = steps_unused.shape[0]
    flat = jax.lax.stop_gradient(_flatten(z_e))
    picks = jax.random.randint(rng, (num_codes,), 0, flat.shape[0])
    draws = jnp.take(flat, picks, axis=0)
    dead = (steps_unused >= max_unused) & (jnp.asarray(max_unused) > 0)
    return dead, draws


def _never_restart(max_unused) -> bool:
    return isinstance(max_unused, int | np.integer) and max_unused <= 0


def restart_dead_codes(
    codebook: jax.Array,
    steps_unused: jax.Array,
    z_e: jax.Array,
    rng: jax.Array,
    max_unused: int,
) -> tuple[jax.Array, jax.Array]:
    """Re-seed codes unused for ``max_unused`` steps or more from current encoder outputs.

    Each such code's row is replaced by one of the ``N`` flattened vectors of
    ``stop_gradient(z_e)``, drawn uniformly and independently for each code, and its counter
    is reset to 0; the other rows and counters are returned unchanged. Shapes are fixed (all
    ``K`` draws are made and masked with ``jnp.where``), so this works under ``jax.jit``, with
    ``max_unused`` static or traced.

    Args:
      codebook: ``[K, D]``.
      steps_unused: ``[K]`` int32, from ``update_unused``.
      z_e: ``[..., D]`` encoder outputs of the current batch.
      rng: a PRNG key.
      max_unused: restart threshold; ``<= 0`` means never restart.
    Returns:
      ``(codebook, steps_unused)``.
    """
    _check_restart("restart_dead_codes", codebook, steps_unused, z_e)
    if _never_restart(max_unused):
        return codebook, steps_unused
    dead, draws = _dead_and_draws(steps_unused, z_e, rng, max_unused)
    codebook = jnp.where(dead[:, None], draws.astype(codebook.dtype), codebook)
    return codebook, jnp.where(dead, 0, steps_unused).astype(steps_unused.dtype)


def restart_dead_codes_ema(
    ema: EmaCodebook,
    steps_unused: jax.Array,
    z_e: jax.Array,
    rng: jax.Array,
    max_unused: int,
) -> tuple[EmaCodebook, jax.Array]:
    """``restart_dead_codes`` for an ``EmaCodebook``.

    A re-seeded code gets the drawn vector as its codebook row, ``cluster_size = 1`` and
    ``embed_sum`` equal to that vector, the same self-consistent start as ``ema_init``; the
    other codes' state is unchanged.
    """
    _check_restart("restart_dead_codes_ema", ema.codebook, steps_unused, z_e, "ema.codebook")
    if _never_restart(max_unused):
        return ema, steps_unused
    dead, draws = _dead_and_draws(steps_unused, z_e, rng, max_unused)
    draws = draws.astype(ema.codebook.dtype)
    new = EmaCodebook(
        codebook=jnp.where(dead[:, None], draws, ema.codebook),
        cluster_size=jnp.where(dead, jnp.ones_like(ema.cluster_size), ema.cluster_size),
        embed_sum=jnp.where(dead[:, None], draws.astype(ema.embed_sum.dtype), ema.embed_sum),
    )
    return new, jnp.where(dead, 0, steps_unused).astype(steps_unused.dtype)


@flax.struct.dataclass
class CodebookState:
    """A codebook's training state besides gradient-trained parameters, changed only by
    ``step`` (an explicit state transform after each optimiser step).

    Attributes:
      ema: the ``EmaCodebook`` of a codebook that follows moving averages (the codebook lives
        here), or ``None`` for one learned by ``codebook_loss`` (the codebook is then a
        parameter ``learned`` that the caller keeps and passes to ``step``).
      unused: ``[K]`` int32, consecutive steps without an assignment per code
        (``update_unused``).
    """

    ema: EmaCodebook | None
    unused: jax.Array

    @classmethod
    def init(cls, codebook: jax.Array, *, ema: bool) -> CodebookState:
        """State for a start from ``codebook`` ``[K, D]``: its EMA statistics when ``ema``
        (``ema_init``), and every counter at 0."""
        _check_codebook("CodebookState.init", codebook)
        return cls(
            ema=ema_init(codebook) if ema else None,
            unused=jnp.zeros(codebook.shape[:1], jnp.int32),
        )

    def codebook(self, learned: jax.Array | None = None) -> jax.Array:
        """The ``[K, D]`` codebook in use: the EMA one, else ``learned``."""
        if self.ema is not None:
            return self.ema.codebook
        if learned is None:
            raise ValueError("CodebookState.codebook: a learned codebook holds no EMA: pass it")
        return learned

    def check(self, learned: jax.Array | None = None) -> None:
        """Raise unless the state is consistent: ``unused`` is ``[K]`` integers for the ``K``
        codes of the EMA codebook or of ``learned`` (exactly one of the two is given)."""
        if (self.ema is None) == (learned is None):
            raise ValueError(
                "CodebookState: pass the learned codebook exactly when there is no EMA one "
                f"(ema is {'None' if self.ema is None else 'set'}, learned is "
                f"{'None' if learned is None else 'given'})"
            )
        book = self.codebook(learned)
        _check_codebook("CodebookState", book)
        if jnp.shape(self.unused) != jnp.shape(book)[:1] or not jnp.issubdtype(
            self.unused.dtype, jnp.integer
        ):
            raise ValueError(
                f"CodebookState: unused must be [K] = {jnp.shape(book)[:1]} integers, got "
                f"{jnp.shape(self.unused)} {self.unused.dtype}"
            )

    def step(
        self,
        learned: jax.Array | None,
        z_e: jax.Array,
        indices: jax.Array,
        rng: jax.Array,
        *,
        decay: float = 0.99,
        eps: float = 1e-5,
        restart_after: int = 0,
        seed=False,
    ) -> tuple[CodebookState, jax.Array | None, jax.Array]:
        """The codebook's transforms after an optimiser step, in this order:

        1. with an EMA codebook, ``ema_update`` on ``z_e`` and its ``indices``;
        2. where ``seed`` holds (a bool, static or traced: e.g. "this is step 0"), every code
           re-seeded from a row of ``z_e`` (the restart transform with every code counted
           dead, under ``fold_in(rng, 1)``), so the codebook starts on the encoder's scale;
        3. the unused counters (``update_unused``);
        4. with ``restart_after > 0``, codes unused that long re-seeded from ``z_e`` under
           ``rng`` (``restart_dead_codes`` or ``restart_dead_codes_ema``).

        ``learned`` is the gradient-trained ``[K, D]`` codebook (after this step's update), or
        ``None`` with an EMA one. Returns ``(state, learned, restarted)``: ``learned`` as changed
        by steps 2 and 4 (``None`` with EMA) and the number of codes step 4 re-seeded (float32).
        """
        self.check(learned)
        ema = self.ema
        if ema is not None:
            ema = ema_update(ema, z_e, indices, decay=decay, eps=eps)
        if not (isinstance(seed, bool) and not seed):
            every = jnp.where(seed, 1, 0) * jnp.ones_like(self.unused)
            key = jax.random.fold_in(rng, 1)
            if ema is not None:
                ema, _ = restart_dead_codes_ema(ema, every, z_e, key, 1)
            else:
                learned, _ = restart_dead_codes(learned, every, z_e, key, 1)
        unused = update_unused(self.unused, indices)
        restarted = jnp.zeros((), jnp.float32)
        if restart_after > 0:
            restarted = jnp.sum(unused >= restart_after).astype(jnp.float32)
            if ema is not None:
                ema, unused = restart_dead_codes_ema(ema, unused, z_e, rng, restart_after)
            else:
                learned, unused = restart_dead_codes(learned, unused, z_e, rng, restart_after)
        return CodebookState(ema=ema, unused=unused), learned, restarted
