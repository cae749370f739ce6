"""The one error family that reaches the user as a single line (see cli.main)."""


class DasdError(Exception):
    """A user-facing error: the message names the culprit (file, field, value)."""


class InputError(DasdError):
    """Bad input data: missing file, malformed row, missing or unknown field."""


class ModelError(DasdError):
    """A model that cannot be used: missing, not a causal LM, context too small."""


class ConfigError(DasdError, ValueError):
    """An option outside its legal range."""


class OutputError(DasdError):
    """An output path that cannot be created or written."""


class Interrupted(DasdError):
    """Ctrl-C during a resumable run: what is written stays; the CLI exits with 130."""

    exit_code = 130


class WriteError(DasdError):
    """An output that cannot be written (full disk, read-only or unwritable directory).
    The run stops; everything it finished is kept and the same command resumes."""
