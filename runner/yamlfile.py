"""YAML loading that keeps line numbers and refuses duplicate keys, alias bombs and files that are not files.

PyYAML silently keeps the last of two equal keys; in a benchmark matrix that
hides a user's mistake, so duplicates are an error here.

Matrix files are copied between colleagues and read by a tool that often runs
as root, so the reader is defensive: only a regular file of bounded size, UTF-8,
nesting bounded, and aliases bounded by how far they *expand* (a "billion
laughs" document is a few lines that expand to 10^9 values, and pydantic and the
line map would walk every one of them).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml

from runner.errors import UserError

MAX_BYTES = 1024 * 1024          # the default matrix is 6 KiB
MAX_NODES = 100_000              # values after alias expansion; the default matrix has ~600
MAX_DEPTH = 32                   # nesting; the default matrix is 6 deep


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _children(node):
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            yield key_node
            yield value_node
    elif isinstance(node, yaml.SequenceNode):
        yield from node.value


def _check_graph(root, path: Path, what: str) -> None:
    """Refuse recursive aliases, complex keys, deep nesting and documents whose aliases expand past
    MAX_NODES, without expanding anything: sizes are memoised per node (iterative, no recursion)."""
    size: dict[int, int] = {}
    on_stack: set[int] = set()
    stack = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            on_stack.discard(key)
            total = 1 + sum(size[id(c)] for c in _children(node))
            if total > MAX_NODES:
                raise UserError(
                    f"{path}: line {node.start_mark.line + 1}: YAML aliases (*name) expand the {what} to more "
                    f"than {MAX_NODES} values, which no {what} needs (an alias bomb?). Write the values out or "
                    f"use fewer aliases.")
            size[key] = total
            continue
        if key in size:
            continue
        if key in on_stack:
            raise UserError(f"{path}: line {node.start_mark.line + 1}: a recursive YAML alias (a value that "
                            f"contains itself). Remove the alias that refers to its own anchor.")
        if depth > MAX_DEPTH:
            raise UserError(f"{path}: line {node.start_mark.line + 1}: the {what} is nested too deep (more than "
                            f"{MAX_DEPTH} levels). Flatten it; see the default matrix.yaml for the layout.")
        if isinstance(node, yaml.MappingNode):
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise UserError(f"{path}: line {key_node.start_mark.line + 1}: a list or mapping used as a "
                                    f"key. Keys are plain names such as `pytorch:`; fix that key.")
        on_stack.add(key)
        stack.append((node, depth, True))
        for child in _children(node):
            if id(child) not in size:
                stack.append((child, depth + 1, False))


def _line_map(root) -> dict:
    """Map each key path to its 1-based line, for error messages (bounded by _check_graph)."""
    out = {}
    stack = [(root, ())]
    while stack:
        node, path = stack.pop()
        out.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                sub = path + (key_node.value,)
                out[sub] = key_node.start_mark.line + 1
                stack.append((value_node, sub))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                stack.append((item, path + (i,)))
    return out


def read_text_file(path: Path, what: str, option: str, max_bytes: int = MAX_BYTES) -> str:
    """The UTF-8 text of a regular file no bigger than max_bytes; UserError naming the file otherwise.
    O_NONBLOCK: a FIFO swapped in after the check does not hang the open."""
    path = Path(path)
    fix = f"Pass a regular {what} file with {option}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{path}: the {what} file does not exist. {fix} (the default matrix is matrix.yaml at "
                        f"the repository root).") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the {what} file ({exc.strerror or exc}). {fix}.") from None
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{path}: is a directory, not a {what} file. {fix}.")
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{path}: not a regular file (a device, pipe or socket), so it is not read as a {what}. "
                        f"{fix}.")
    if st.st_size > max_bytes:
        raise UserError(f"{path}: the {what} file is too big ({st.st_size} bytes; the limit is {max_bytes}). "
                        f"{fix}.")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise UserError(f"{path}: not a regular file, so it is not read as a {what}. {fix}.")
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise UserError(f"{path}: cannot read the {what} file ({exc.strerror or exc}). Check its permissions, "
                        f"or {fix[0].lower() + fix[1:]}.") from None
    if len(data) > max_bytes:
        raise UserError(f"{path}: the {what} file is too big (over {max_bytes} bytes). {fix}.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(f"{path}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                        f"{exc.start}). Save the {what} as UTF-8.") from None


def load_yaml(path: Path, what: str, option: str = "--matrix PATH"):
    """Return (data, lines) for a YAML file; UserError for a missing or unusable file or bad syntax."""
    path = Path(path)
    text = read_text_file(path, what, option)
    loader = None
    try:
        loader = _Loader(text)  # the reader refuses non-printable characters here already
        node = loader.get_single_node()
        if node is None:
            return None, {}
        _check_graph(node, path, what)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or str(exc)
        raise UserError(
            f"{path}: YAML syntax error{where}: {problem}. Fix the {what} so it is valid YAML "
            f"(indentation with spaces, `key: value` pairs, lists as `- item` or `[a, b]`).") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: cannot read the {what} as YAML: {' '.join(str(exc).split())}.") from None
    except RecursionError:
        raise UserError(f"{path}: the {what} is nested too deep to read. Flatten it; see the default "
                        f"matrix.yaml for the layout.") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, _line_map(node)
