"""Analyses as pure functions, testable without a Trainer."""
