"""Algorithms: ``update(batch) -> metrics`` on a shared :class:`~stridelab.models.Agent`."""
