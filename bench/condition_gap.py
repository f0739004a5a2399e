"""Where a conditional diffusion model uses its condition: the denoising loss at each noise
level with the true condition, with none, and with another example's (issue 29).

    python bench/condition_gap.py runs/ldm_pairs [runs/pixel_pairs_cond ...] [--num=512]

For each workdir (a class-conditional or text model, pixel or latent) and each time ``t``, the
held-out loss of the EMA weights on the first ``--num`` test examples, all with the same noise:

- ``true``: the example's own label or caption;
- ``none``: the null class or the empty prompt (what guidance extrapolates from);
- ``other``: the next example's condition, so the loss of a model that reads its condition but
  is given the wrong one.

``gain`` is ``(none - true) / none``: the share of the loss the condition removes, and
``content`` is ``(other - true) / other``: the share that knowing *which* condition removes. A
model that ignores its condition has both near 0; one that only tells "some condition" from
none has ``gain > 0`` and ``content`` near 0.

Each prediction type's loss weighs the clean image's squared error by ``SNR`` (eps), ``SNR + 1``
(v) or 1 (x0), so the same gap in the image is a far smaller loss at high noise for an eps model:
the ``loss`` columns are what training sees at each noise level.

Writes ``bench/results/condition_gap.md`` and ``.json`` (``--out`` names another table); a
run keeps the rows of workdirs it does not measure.
"""

from __future__ import annotations

import json
import os

import harness  # puts the repository on sys.path
import numpy as np

TIMES = (0.1, 0.3, 0.5, 0.7, 0.85, 0.95)


def gaps(workdir: str, num: int, times=TIMES, seed: int = 1) -> list[dict]:
    """One row per time: the losses with the true, no and another example's condition."""
    import jax
    import jax.numpy as jnp

    from jaxgen.data import captions, load_splits
    from jaxgen.engine import loop
    from jaxgen.families import diffusion

    setup, state = loop.restore_for_inference(workdir)
    config = setup.config
    _, test = load_splits(config.data)
    batch = test.get(np.arange(min(num, test.num_examples)))
    x0, _ = diffusion.diffused_data(config, state, jnp.asarray(batch["image"]))
    if diffusion.text_conditional(config):
        true = jnp.asarray(batch["text"])
        none = jnp.broadcast_to(captions.empty_prompt(config.data.caption_len), true.shape)
    elif config.model.num_classes > 0:
        true = jnp.asarray(batch["label"], jnp.int32)
        none = jnp.full_like(true, config.model.num_classes)
    else:
        raise SystemExit(f"{workdir}: an unconditional model has no condition to measure")
    other = jnp.roll(true, 1, axis=0)
    noise = jax.random.normal(jax.random.PRNGKey(seed), x0.shape, jnp.float32)
    params = state.model.ema_params
    schedule = diffusion.make_schedule(config)

    @jax.jit
    def loss(t, condition):
        times_ = jnp.full((x0.shape[0],), t, jnp.float32)
        return diffusion.loss_fn(config, params, x0, times_, noise, condition, None)[0]

    rows = []
    for t in times:
        # log_snr is log(alpha / sigma)
        snr = float(jnp.exp(2.0 * schedule.log_snr(jnp.float32(t))))
        l_true, l_none, l_other = (float(loss(t, c)) for c in (true, none, other))
        rows.append(
            {
                "t": t,
                "snr": snr,
                "true": l_true,
                "none": l_none,
                "other": l_other,
                "gain": (l_none - l_true) / l_none,
                "content": (l_other - l_true) / l_other,
            }
        )
    return rows


def markdown(result: dict) -> str:
    lines = [
        "# Where conditional diffusion models use their condition",
        "",
        "`python bench/condition_gap.py <workdirs>`: held-out denoising loss (EMA weights, "
        "the same noise for every column) with the true condition, none (null class or empty "
        "prompt) and another example's; `gain` = (none - true) / none, the share of the loss "
        "the condition removes; `content` = (other - true) / other, the share that knowing "
        "which condition removes.",
        "",
    ]
    for workdir, entry in result.items():
        lines += [
            f"## `{workdir}` ({entry['prediction']} prediction, {entry['examples']} test examples)",
            "",
            "| t | SNR | loss, true | none | other | gain | content |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in entry["rows"]:
            lines.append(
                f"| {r['t']:g} | {r['snr']:.3g} | {r['true']:.4g} | {r['none']:.4g} | "
                f"{r['other']:.4g} | {100 * r['gain']:.1f}% | {100 * r['content']:.1f}% |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--num", type=int, default=512)
    args = parser.parse_args()
    from jaxgen.engine import checkpoint as ckpt_lib

    path = harness.out_path(args, "condition_gap")
    result = {}
    json_path = os.path.splitext(path)[0] + ".json"
    if os.path.exists(json_path):  # other workdirs keep their rows
        with open(json_path) as f:
            result = json.load(f)["results"]
    for workdir in args.workdirs:
        config = ckpt_lib.load_config(workdir, "workdir")
        rows = gaps(workdir, args.num)
        result[workdir] = {
            "prediction": config.diffusion.prediction,
            "examples": args.num,
            "rows": rows,
        }
    harness.write_results(path, markdown(result), result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
