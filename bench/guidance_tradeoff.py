"""The guidance trade-off: how often guided samples show the requested class, and what variety
they keep, as the guidance scale grows.

    python bench/guidance_tradeoff.py --workdir runs/diff_fashion \
        --evaluator runs/clf_fashion_clean [--classifier runs/clf_fashion_noisy] \
        [--cfg-scales 0,1,2,3,5,7.5] [--clf-scales 0,1,2,4,8] [--per-class 50] [--steps 20] \
        [--name fashion_mnist] [--save-samples runs/guidance_fashion]
    python bench/guidance_tradeoff.py --quick   # a tiny run and evaluator, in $BENCH_QUICK_DIR

For each scale it draws ``--per-class`` samples of every class with DPM-Solver++ 2M (``--steps``
model calls; CFG batches cond and uncond into each call), from one compiled sampler whose scale
is an input. An evaluator classifier trained on clean images (not the guiding one) scores them:

- *accuracy*: the share classified as the requested class;
- *diversity*: the mean pairwise distance between the evaluator's features of samples of one
  class, averaged over classes (``jaxgen.eval``); the same figure for as many real test images
  per class is given for reference.

Writes ``bench/results/guidance_<name>.md`` (the table; its figures in ``.json``),
``docs/images/guidance_<name>.png``
(accuracy and diversity against scale, when matplotlib is installed) and a sample grid per
guidance kind at the scale nearest 3, the smaller of two equally near
(``docs/images/guidance_<name>_<kind>.png``).
"""

from __future__ import annotations

import os
import time

import harness
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.data import load_splits
from jaxgen.engine import loop
from jaxgen.engine.images import save_grid
from jaxgen.eval import Evaluator, class_accuracy, within_class_diversity


def _floats(text):
    return [float(v) for v in text.split(",") if v.strip()]


def sweep(setup, state, kind, scales, labels, steps, classifier=None, seed=0):
    """Samples for each scale, from one jitted sampler taking the scale as an array."""
    family, config = setup.family, setup.config

    @jax.jit
    def run(scale, rng):
        return family.sample(
            config,
            state,
            rng,
            len(labels),
            steps=steps,
            solver="dpm_solver++",
            order=2,
            method="multistep",
            label=jnp.asarray(labels),
            guidance=kind,
            scale=scale,
            classifier=classifier,
        ).images

    out = {}
    for w in scales:
        t0 = time.perf_counter()
        out[w] = np.asarray(run(jnp.float32(w), jax.random.PRNGKey(seed)))
        print(f"{kind} scale {w:g}: {time.perf_counter() - t0:.1f} s", flush=True)
    return out


def main(argv=None):
    ap = harness.parser(__doc__)
    ap.add_argument("--workdir", help="a class-conditional diffusion run (CFG)")
    ap.add_argument("--evaluator", help="a clean classifier run (:clean)")
    ap.add_argument("--classifier", default=None, help="a noise-aware classifier run")
    ap.add_argument("--cfg-scales", default="0,1,2,3,5,7.5")
    ap.add_argument("--clf-scales", default="0,1,2,4,8")
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--name", default="fashion_mnist")
    ap.add_argument(
        "--save-samples",
        default=None,
        help="folder for <kind>_<scale>.npz of every sweep point (images, labels), for rescoring",
    )
    args = ap.parse_args(argv)
    image_dir = os.path.join(harness.ROOT, "docs", "images")
    if args.quick:
        where = harness.Runs.for_driver("guidance", quick=True)
        os.chdir(harness.ROOT)
        args.workdir = where.train("diffusion_mnist", "diffusion", "mnist,demo,cond")
        args.evaluator = where.evaluator("mnist")
        args.classifier, args.name = None, "mnist"
        image_dir = os.path.dirname(where.image("guidance"))
        args.cfg_scales, args.per_class, args.steps = "0,3", 2, 4
    elif not (args.workdir and args.evaluator):
        ap.error("--workdir and --evaluator are required (or --quick)")

    setup, state = loop.restore_for_inference(args.workdir)
    ev_setup, ev_state = loop.restore_for_inference(args.evaluator)
    evaluator = Evaluator(
        args.evaluator, ev_setup.config, ev_state.model.params, int(ev_state.step), None
    )
    k = setup.config.model.num_classes
    labels = np.repeat(np.arange(k, dtype=np.int32), args.per_class)

    def score(images):
        logits, feats = evaluator.outputs(images)
        return class_accuracy(logits, labels), within_class_diversity(feats, labels)

    _, test = load_splits(ev_setup.config.data)
    test_labels = np.asarray(test.get(np.arange(test.num_examples))["label"])
    pick = np.concatenate([np.flatnonzero(test_labels == c)[: args.per_class] for c in range(k)])
    real = test.get(pick)
    real_logits, real_feats = evaluator.outputs(real["image"])
    real_acc = class_accuracy(real_logits, real["label"])
    real_div = within_class_diversity(real_feats, real["label"])

    runs = [("cfg", _floats(args.cfg_scales), None)]
    if args.classifier:
        clf_setup, clf_state = loop.restore_for_inference(args.classifier)
        clf = (clf_setup.config, clf_state.model.params)
        runs.append(("classifier", _floats(args.clf_scales), clf))

    rows, curves = [], {}
    for kind, scales, clf in runs:
        samples = sweep(setup, state, kind, scales, labels, args.steps, clf)
        curves[kind] = []
        for w, images in samples.items():
            if args.save_samples:
                os.makedirs(args.save_samples, exist_ok=True)
                path = os.path.join(args.save_samples, f"{kind}_{w:g}.npz")
                np.savez_compressed(path, images=images, labels=labels)
            acc, div = score(images)
            rows.append((kind, w, acc, div))
            curves[kind].append((w, acc, div))
        w_show = min(samples, key=lambda w: abs(w - 3.0))
        show = samples[w_show].reshape(k, args.per_class, *samples[w_show].shape[1:])[:, :10]
        save_grid(
            show.reshape(-1, *show.shape[2:]),
            os.path.join(image_dir, f"guidance_{args.name}_{kind}.png"),
            show.shape[1],
        )

    lines = [
        f"# Guidance trade-off on {args.name}",
        "",
        f"`python bench/guidance_tradeoff.py --workdir {args.workdir} --evaluator "
        f"{args.evaluator}"
        + (f" --classifier {args.classifier}" if args.classifier else "")
        + f" --per-class {args.per_class} --steps {args.steps} --name {args.name}`, "
        f"{time.strftime('%Y-%m-%d')}, diffusion step {int(state.step)}.",
        "",
        f"DPM-Solver++ 2M, {args.steps} steps, {args.per_class} samples per class "
        f"({len(labels)} in all); one seed. Scored by the clean evaluator classifier "
        f"(test accuracy on real images of these classes: {100 * real_acc:.1f}%).",
        "",
        "| guidance | scale | classified as requested | within-class diversity |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {kind} | {w:g} | {100 * acc:.1f}% | {div:.3f} |" for kind, w, acc, div in rows]
    lines += [f"| real test images | | {100 * real_acc:.1f}% | {real_div:.3f} |", ""]
    out = harness.out_path(args, f"guidance_{args.name}")
    figures = {
        "rows": [{"guidance": k, "scale": w, "accuracy": a, "diversity": d} for k, w, a, d in rows],
        "real": {"accuracy": real_acc, "diversity": real_div},
        "diffusion_step": int(state.step),
    }
    harness.write_results(out, "\n".join(lines), figures)
    print("\n".join(lines))
    print("wrote", out)
    _plot(curves, real_div, os.path.join(image_dir, f"guidance_{args.name}.png"))


def _plot(curves, real_div, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for kind, pts in curves.items():
        w, acc, div = zip(*pts, strict=True)
        label = "classifier-free (w)" if kind == "cfg" else "classifier (s)"
        axes[0].plot(w, [100 * a for a in acc], "o-", label=label)
        axes[1].plot(w, div, "o-", label=label)
    axes[1].axhline(real_div, color="grey", ls="--", label="real images")
    axes[0].set(xlabel="guidance scale", ylabel="% classified as requested")
    axes[1].set(xlabel="guidance scale", ylabel="within-class feature distance")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
