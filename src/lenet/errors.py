"""One error hierarchy. The CLI turns a `LenetError` into one line on stderr and exit code 2;
anything else is a bug and keeps its traceback."""


class LenetError(Exception):
    """Base class: a problem with the user's input, data, files or configuration."""


class ConfigError(LenetError, ValueError):
    """A bad option value or an unknown name."""


class DataError(LenetError):
    """Dataset files missing, truncated, corrupt or of the wrong kind."""


class CheckpointError(LenetError):
    """A checkpoint that is missing, truncated, foreign or for another model."""


class ImageError(LenetError):
    """An image file that cannot be read, is not an image, is too large, or holds no ink."""


class TrainingError(LenetError):
    """Training cannot go on (e.g. the loss became non-finite); the last good checkpoint is kept."""


class Terminated(BaseException):
    """SIGTERM arrived (the CLI turns it into one line and exit code 143). A BaseException, like
    KeyboardInterrupt, so that `except Exception` blocks do not swallow it. `detail` (e.g. where the last
    checkpoint is) is appended to the CLI's line; code that knows more re-raises with it set."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
