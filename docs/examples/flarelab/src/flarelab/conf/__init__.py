"""Hydra configs of flarelab (found through ``hydra_plugins/flarelab_searchpath``)."""
