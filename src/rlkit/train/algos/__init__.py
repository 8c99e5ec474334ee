"""The algorithms: the interface and ``make_algorithm`` (base), one module per algorithm, and the pieces they share."""
