"""User-facing errors: the CLI prints their message alone (no traceback) and exits with `exit_code`."""


class PipelineError(Exception):
    """A problem the user can fix (bad input, missing file, refused store). Exit code 1."""

    exit_code = 1


class ConfigError(PipelineError):
    """Invalid configuration: unknown key, wrong type or value. Exit code 2."""

    exit_code = 2
