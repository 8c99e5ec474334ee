"""Screens that join several areas (clusters with jobs and sweeps): above
the areas they join, so that those import only what lies below them."""
