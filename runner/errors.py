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
            text = str(part)
            if not text or any(c in text for c in "[] ") or not text.isprintable():
                text = repr(text)  # a hostile key must not forge another path or break the line
            out += ("." if out else "") + text
    return out or "(top level)"


def data_loc(data, loc) -> tuple:
    """The part of a pydantic error location that indexes into the data: pydantic adds a union's branch
    names and `[key]` for dict keys, which are not keys of the matrix."""
    out, cur = [], data
    for part in loc:
        if isinstance(cur, dict) and part in cur:
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            out.append(part)
            cur = cur[part]
    return tuple(out)
