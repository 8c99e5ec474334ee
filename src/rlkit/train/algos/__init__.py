"""Advantage estimators and losses, one module per algorithm."""
