"""Hierarchies: how fine labels map to a run's stages (`protocol`; `groups`, `factors`), the stage
descriptions training and prediction read (`stage`, `layout`), the only factory that picks a
kind (`build`), and groups proposed from a flat run's confusions (`suggest`)."""
