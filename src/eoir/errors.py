"""Errors for bad user input (files, arguments, devices), worded for the library.

Messages name the file or the argument and say what is wrong with the value, in the library's
own words (``device 'cuda:3': only 1 CUDA device``). The command line prints them as one line,
naming its flags instead (``--device cuda:3: only 1 CUDA device``): :class:`OptionError` and
:attr:`InputError.switches` carry what it needs for that.
"""

from __future__ import annotations

__all__ = ["InputError", "OptionError", "reason"]


class InputError(ValueError):
    """Bad input from the user: the message names the file or argument and the problem.

    Parameters
    ----------
    message : str
        What is wrong, naming the file or the argument.
    switches : tuple of str
        Boolean arguments (Python names, e.g. ``("overwrite",)``) that would let the call go
        ahead: the library's message ends ``; set overwrite=True``, the command line's
        ``; pass --overwrite``.

    The command line prints it as one line on stderr and exits with code 2.
    """

    def __init__(self, message: str, *, switches: tuple[str, ...] = ()) -> None:
        self.message = message
        self.switches = tuple(switches)
        hint = f"; set {' or '.join(f'{s}=True' for s in switches)}" if switches else ""
        super().__init__(message + hint)


class OptionError(InputError):
    """A bad value of a named option (a keyword argument, a config key, a command-line flag).

    Parameters
    ----------
    option : str
        The argument's Python name (``"precision"``, ``"optimize_steps"``) or a config key
        (``"optim.lr"``).
    value : object
        The value given.
    problem : str
        What is wrong with it (``"choose one of float32, bfloat16, float16"``).
    """

    def __init__(self, option: str, value: object, problem: str) -> None:
        self.option, self.value, self.problem = option, value, problem
        super().__init__(f"{option} {value!r}: {problem}")


def reason(err: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (or its type), shortened, for one-line errors."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    return first if len(first) <= limit else first[: limit - 3] + "..."
