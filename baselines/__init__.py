"""Centralized supervised baselines."""
