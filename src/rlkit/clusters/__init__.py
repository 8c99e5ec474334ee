"""Ray clusters that rlkit knows by name: the registry, providers, auth tokens.

Importing this package imports no ray: the CLI stays fast, and ray is loaded
only by the functions that start clusters.
"""
