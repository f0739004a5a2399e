"""Configs: one file per family or recipe, ``get_config(arg)`` with the data set as a variant
(``configs/vae.py:fashion_mnist,tiny``); ``configs/common.py`` holds what they share."""
