"""User-facing errors: one paragraph naming the file, the key and the fix, and an exit code."""

EXIT_OK = 0
EXIT_CELLS_FAILED = 1
EXIT_USAGE = 2


class UserError(Exception):
    """Bad input or an unusable environment. The CLI prints the message, no traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def format_path(path) -> str:
    """('frameworks', 'pytorch', 'versions', 2) -> 'frameworks.pytorch.versions[2]'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"
