"""The one error type of the dev tooling: its message is a one-line instruction."""


class DevError(Exception):
    """Something the user must fix before the local control plane can start."""
