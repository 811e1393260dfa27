"""User-facing errors. Each carries the CLI exit code documented in the README."""


class ShiftcError(Exception):
    """Base class; a bare ShiftcError is an internal error (exit 1)."""

    exit_code = 1


class InputError(ShiftcError):
    """Usage or bad input: missing/corrupt file, bad shape, unknown target, tampered artifact."""

    exit_code = 2


class UnsupportedModelError(ShiftcError):
    """The model uses something shiftc cannot compile."""

    exit_code = 3


class ToolchainError(ShiftcError):
    """A tool a target needs is missing; the message names the package that provides it."""

    exit_code = 4


class CheckFailedError(ShiftcError):
    """The command ran, and a check it makes failed (``shiftc matrix``: a build failed or an output
    differs; ``shiftc compile --accuracy-budget``: the budget is not met on held-back samples)."""

    exit_code = 5


EXIT_CODES = {
    0: "success",
    1: "internal error (a bug in shiftc)",
    InputError.exit_code: "usage or bad input",
    UnsupportedModelError.exit_code: "unsupported model",
    ToolchainError.exit_code: "missing toolchain",
    CheckFailedError.exit_code: "a check failed (shiftc matrix: a build failed or an output differs; "
                                "shiftc compile: --accuracy-budget not met on held-back samples)",
}
