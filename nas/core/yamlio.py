"""Safe YAML loading that remembers line numbers and reports duplicate keys instead of hiding them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nas.core.errors import UserError


class LineDict(dict):
    """A mapping from YAML that knows the line of each key (1-based)."""

    lines: dict[Any, int]


class LineList(list):
    lines: list[int]


class YamlError(UserError):
    pass


def plain(value: Any) -> Any:
    """``value`` with its line-keeping mappings and lists turned into plain ones (for yaml.safe_dump,
    which refuses other types)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def line_at(data: Any, path: tuple[Any, ...]) -> int | None:
    """The line of the deepest key of ``path`` (keys and list indices from ``data``) that has one."""
    line, node = None, data
    for key in path:
        lines = getattr(node, "lines", None)
        if isinstance(lines, dict) and key in lines:
            line = lines[key]
        elif isinstance(lines, list) and isinstance(key, int) and 0 <= key < len(lines):
            line = lines[key]
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            break
    return line


MAX_VALUES = 100_000  # values in a document once its aliases are expanded (a search space has a few hundred)
MAX_CHARS = 1_000_000  # characters in a file (a search space has a few thousand; parsing a megabyte takes seconds)


def _expanded_size(root: yaml.Node, path: str | Path) -> int:
    """How many values ``root`` holds with every alias expanded, computed without expanding them (each
    node's size once); a YamlError past MAX_VALUES or for an alias inside itself. Aliases let a few
    lines of YAML stand for billions of values (an "alias bomb")."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise YamlError(f"{path}:{node.start_mark.line + 1}: an alias refers to the value that contains it")
        open_nodes.add(key)
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(v) for v in node.value)
        else:
            total = 1
        open_nodes.discard(key)
        if total > MAX_VALUES:
            raise YamlError(
                f"{path}:{node.start_mark.line + 1}: the value here expands to {total:,} values through "
                f"aliases (*name); at most {MAX_VALUES:,} are allowed in a file"
            )
        sizes[key] = total
        return total

    return size(root)


class _Loader(yaml.SafeLoader):
    """SafeLoader (no Python object tags) that records key lines and duplicate keys."""

    def __init__(self, stream: Any):
        super().__init__(stream)
        self.duplicates: list[tuple[Any, int, int]] = []  # key, first line, repeated line


def _mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        line = key_node.start_mark.line + 1
        if key in out.lines:
            loader.duplicates.append((key, out.lines[key], line))
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = line
    return out


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(n, deep=True) for n in node.value)
    out.lines = [n.start_mark.line + 1 for n in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


def _nearby(path: Path) -> str:
    """What the user may have meant: the closest YAML names in the folder given (or in spaces/)."""
    import difflib

    folder = path.parent if path.parent.is_dir() else Path("spaces")
    if not folder.is_dir():
        return ""
    names = sorted(p.name for p in folder.iterdir() if p.suffix in (".yaml", ".yml"))
    if not names:
        return ""
    close = difflib.get_close_matches(path.name, names, n=1)
    guess = f"; did you mean {folder / close[0]}?" if close else ""
    return f"{guess} ({folder}/ has {', '.join(names[:20])}{', ...' if len(names) > 20 else ''})"


def load(path: str | Path) -> tuple[Any, list[tuple[Any, int, int]]]:
    """Parse ``path`` with safe loading. Returns the document and its duplicate keys
    (key, first line, repeated line). Unreadable files, invalid YAML and tags that would construct
    Python objects raise YamlError naming the file and line."""
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size > 4 * MAX_CHARS:  # not read at all: it may be huge
            raise YamlError(f"{path}: {path.stat().st_size:,} bytes; at most {MAX_CHARS:,} characters are allowed")
        text = path.read_text()
    except FileNotFoundError:
        raise YamlError(f"{path}: no such file{_nearby(path)}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise YamlError(f"{str(path)!r}: cannot be read as text ({e.__class__.__name__}: {e})") from None
    return loads(text, path)


def _unreadable(e: yaml.reader.ReaderError, text: str, path: str | Path) -> YamlError:
    """A NUL byte or another control character, with its line and column."""
    line = text[: e.position].count("\n") + 1
    column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
    code = e.character if isinstance(e.character, int) else ord(e.character)
    return YamlError(f"{path}:{line}:{column}: character U+{code:04X} is not allowed in a YAML file")


def loads(text: str, path: str | Path) -> tuple[Any, list[tuple[Any, int, int]]]:
    """``load`` of text already read; ``path`` names it in messages."""
    if len(text) > MAX_CHARS:
        raise YamlError(f"{path}: {len(text):,} characters; at most {MAX_CHARS:,} are allowed in a file")
    try:
        loader = _Loader(text)  # checks every character first
    except yaml.reader.ReaderError as e:
        raise _unreadable(e, text, path) from None
    try:
        node = loader.get_single_node()
        if node is not None:
            _expanded_size(node, path)
        data = loader.construct_document(node) if node is not None else None
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        if "could not determine a constructor for the tag" in str(e.problem):
            tag = str(e.problem).split("tag", 1)[1].strip(" '")
            raise YamlError(
                f"{where}: YAML tag {tag!r} is not allowed: files are loaded safely, and tags "
                "that construct Python objects are refused"
            ) from None
        raise YamlError(f"{where}: {e.problem}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise YamlError(f"{where}: not valid YAML: {problem}") from None
    finally:
        loader.dispose()
    return data, loader.duplicates
