"""The project's own exceptions, each with the exit status the CLI uses for it."""

from __future__ import annotations


class HeartflowError(Exception):
    """Base class: a failure heartflow can explain without a traceback."""

    exit_code = 1


class SpecError(HeartflowError):
    """A spec file is not valid. The message names file:line:column and the field."""

    exit_code = 2

    def __init__(self, message: str, *, path: str = "<spec>", line: int | None = None,
                 column: int | None = None, field: str | None = None) -> None:
        self.path, self.line, self.column, self.field = path, line, column, field
        self.detail = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.detail}"


class DataError(HeartflowError):
    """The data does not fit the spec. The message names the column and row."""

    exit_code = 3


class TrainingError(HeartflowError):
    """Training cannot give a usable network (it diverged: a NaN or infinite loss)."""

    exit_code = 7


class TrackingError(HeartflowError):
    """The MLflow tracking store cannot be reached or refused a write."""

    exit_code = 4


class RegistryError(HeartflowError):
    """A registry operation (promote, rollback, lookup) cannot be done."""

    exit_code = 5


class Interrupted(BaseException):
    """Raised in the main thread when SIGTERM arrives (Ctrl-C raises KeyboardInterrupt)."""

    exit_code = 143


# Exit statuses that are not an error class's own (``exit_code`` above).
EXIT_UNDECIDED = RegistryError.exit_code  # the promotion gate refused to decide
EXIT_DRIFT = 6  # heartflow monitor: a check drifted (cron or CI can act on it)
EXIT_CTRL_C = 130  # KeyboardInterrupt
EXIT_TERMINATED = Interrupted.exit_code  # SIGTERM
