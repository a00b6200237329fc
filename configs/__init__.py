"""Hydra configuration: YAML values in this folder, types in :mod:`configs.schema`."""
