"""Sample from a trained jaxgen model: ``python sample.py --workdir=runs/vae --num=64``.

A thin wrapper of ``jaxgen/sample.py`` (the same command as ``jaxgen-sample`` and
``python -m jaxgen.sample`` from an installed package); ``--help`` says the rest, and with a
``--workdir`` it lists that family's sampling options.
"""

from jaxgen.sample import run

if __name__ == "__main__":
    run()
