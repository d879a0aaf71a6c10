"""The one error type for bad user input (files, arguments, devices)."""


class InputError(Exception):
    """Bad input from the user: the message names the file or option and the problem.

    The command line prints it as one line on stderr and exits with code 2.
    """


def reason(err: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (or its type), shortened, for one-line errors."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    return first if len(first) <= limit else first[: limit - 3] + "..."
