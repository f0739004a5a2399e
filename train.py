"""Train a jaxgen model: ``python train.py --config=configs/vae.py:mnist --workdir=runs/vae``.

A thin wrapper of ``jaxgen/train.py`` (the same command as ``jaxgen-train`` and
``python -m jaxgen.train`` from an installed package); ``--help`` says the rest.
"""

from jaxgen.train import run

if __name__ == "__main__":
    run()
