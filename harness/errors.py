"""What the harness raises: a process that exited, or did not get ready, or a failed step."""


class HarnessError(Exception):
    """Something the harness was asked to do could not be done."""


class ProcessExited(HarnessError):
    """A process that is meant to be running is not."""
