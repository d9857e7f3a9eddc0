"""Shared test helpers: the layer cases every contract test runs over."""
