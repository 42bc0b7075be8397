"""The one error of the engine: a script, a file or a round that cannot go on, named."""


class FederatedError(Exception):
    """Raised with a message naming what was wrong (the worker, the array, the file)."""
