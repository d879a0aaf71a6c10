"""The one error type for bad user input (files, arguments, devices)."""


class InputError(Exception):
    """Bad input from the user: the message names the file or option and the problem.

    The command line prints it as one line on stderr and exits with code 2.
    """
