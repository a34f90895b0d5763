"""Shared test set-up: the repo root on sys.path for the test tree's own helper modules."""
