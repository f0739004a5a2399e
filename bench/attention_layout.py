"""Attention's memory layout on XLA's CPU backend: heads beside the batch, or in place.

    python bench/attention_layout.py           # bench/results/attention_layout.md
    python bench/attention_layout.py --quick   # small shapes, seconds

``jaxgen.nn.layers.attention`` takes ``[B, T, H, D]`` arrays. Contracting them in place
(``einsum("bqhd,bkhd->bhqk")``, as it once did) leaves the batch dimensions ``b`` and ``h``
apart, and XLA's CPU backend then runs the products far slower than after moving the heads
next to the batch (``[B, H, T, D]``), where each product is one batched matrix product. This
bench times both, forward and forward plus gradient, at the shapes the library's models call it
with, and checks that they agree. The in-place form is kept here only as the reference.
"""

from __future__ import annotations

import math

import harness

# (what calls it, B, Tq, Tk, H, D)
CASES = (
    ("latent UNet self-attention, 7x7 grid (sampling batch)", 500, 49, 49, 4, 16),
    ("pixel UNet self-attention, 7x7 level, 1 head (sampling batch)", 500, 49, 49, 1, 64),
    ("cross-attention to a 12-token caption, 7x14 grid", 500, 98, 12, 4, 16),
    ("UNet self-attention, 14x14 grid (train batch)", 64, 196, 196, 4, 32),
    ("transformer prior, 49 codes (train batch)", 64, 49, 49, 8, 32),
)
QUICK = (("quick", 16, 16, 16, 2, 8),)


def in_place(q, k, v):
    """The former layout: contract ``[B, T, H, D]`` without moving the heads."""
    import jax
    import jax.numpy as jnp

    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(logits / math.sqrt(q.shape[-1]), axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def measure(cases, min_seconds: float) -> list[dict]:
    import jax
    import numpy as np

    from jaxgen.nn.layers import attention

    rows = []
    for what, b, tq, tk, h, d in cases:
        keys = jax.random.split(jax.random.PRNGKey(0), 3)
        q = jax.random.normal(keys[0], (b, tq, h, d))
        k = jax.random.normal(keys[1], (b, tk, h, d))
        v = jax.random.normal(keys[2], (b, tk, h, d))
        row = {"case": what, "shape": [b, tq, tk, h, d]}
        for name, fn in (("in_place", in_place), ("heads_first", attention)):
            forward = jax.jit(fn)
            grad = jax.jit(jax.grad(lambda q, k, v, f=fn: (f(q, k, v) ** 2).sum(), (0, 1, 2)))
            for part, f in (("forward", forward), ("grad", grad)):
                timing = harness.time_calls(lambda f=f, a=(q, k, v): f(*a), min_seconds=min_seconds)
                row[f"{name}_{part}_ms"] = 1000 * timing.median_s
        row["max_abs_diff"] = float(np.abs(in_place(q, k, v) - attention(q, k, v)).max())
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "# Attention layout on the CPU: heads beside the batch against in place",
        "",
        "`python bench/attention_layout.py`. Median ms per call of `jaxgen.nn.layers.attention` "
        "(`heads_first`: the heads moved next to the batch, `[B, H, T, D]`) and of the former "
        "in-place contraction of `[B, T, H, D]`, jitted, float32; shape `B, Tq, Tk, H, D`; "
        "ratio = in place / heads first, both measured in this run.",
        "",
        "| case | shape | in place fwd | heads first fwd | ratio | in place fwd+grad "
        "| heads first fwd+grad | ratio | max diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f = r["in_place_forward_ms"] / r["heads_first_forward_ms"]
        g = r["in_place_grad_ms"] / r["heads_first_grad_ms"]
        lines.append(
            f"| {r['case']} | {'x'.join(map(str, r['shape']))} | {r['in_place_forward_ms']:.1f} | "
            f"{r['heads_first_forward_ms']:.1f} | {f:.1f}x | {r['in_place_grad_ms']:.1f} | "
            f"{r['heads_first_grad_ms']:.1f} | {g:.1f}x | {r['max_abs_diff']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    args = harness.parser(__doc__).parse_args()
    rows = measure(QUICK if args.quick else CASES, 0.0 if args.quick else 2.0)
    path = harness.out_path(args, "attention_layout")
    harness.write_results(path, markdown(rows), rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
