"""Helpers for the tests: images from wheels, a small BWS client."""
