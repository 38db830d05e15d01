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
