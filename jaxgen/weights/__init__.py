"""Pretrained weights read from disk (the I/O that the pure layers below must not do)."""
