"""Packaged data: the embedded default model and shipped network weights."""
