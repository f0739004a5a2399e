"""Flax linen modules. Pure: used only through ``init`` / ``apply``."""
