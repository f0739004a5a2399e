"""jaxgen: classic generative models in JAX/Flax.

Layers (imports point down only): engine -> data -> families -> nn -> losses.
"""

__version__ = "0.1.0"
