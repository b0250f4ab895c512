"""YAML loading that keeps line numbers and refuses duplicate keys.

PyYAML silently keeps the last of two equal keys; in a benchmark matrix that
hides a user's mistake, so duplicates are an error here.
"""

from pathlib import Path

import yaml

from runner.errors import UserError


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


def _line_map(node, path=(), out=None):
    """Map each key path to its 1-based line, for error messages."""
    if out is None:
        out = {}
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[path + (key,)] = key_node.start_mark.line + 1
            _line_map(value_node, path + (key,), out)
            out[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, path + (i,), out)
    return out


def load_yaml(path: Path, what: str):
    """Return (data, lines) for a YAML file; UserError for a missing file or bad syntax."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"{path}: the {what} file does not exist. Pass an existing file with --matrix PATH "
            f"(the default matrix is matrix.yaml at the repository root).")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or str(exc)
        raise UserError(
            f"{path}: YAML syntax error{where}: {problem}. Fix the {what} so it is valid YAML "
            f"(indentation with spaces, `key: value` pairs, lists as `- item` or `[a, b]`).") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: cannot read the {what} as YAML: {exc}.") from None
    lines = _line_map(node) if node is not None else {}
    return data, lines
