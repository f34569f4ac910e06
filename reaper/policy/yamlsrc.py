"""YAML that remembers where everything came from (docs/config.md).

PyYAML's safe loader, extended so that
- a duplicate key is an error naming both lines (PyYAML silently keeps the last one);
- every node keeps its line and column, for values and separately for keys, so that an error
  points at the offending node and an unknown key points at the key;
- plain scalars that YAML resolved to something other than a string keep their original text,
  so that `no` read as false or `1:30` read as 90 can be explained and the fix suggested;
- no input produces a traceback: syntax errors, bad UTF-8, empty files, a top level that is not
  a mapping, recursive aliases and absurd nesting all become `Diagnostic`s in a `ConfigError`.

Idea from cfn-lint's line-marking loader (src/cfnlint/decode/cfn_yaml.py); the construction walks
the composed node graph instead of subclassing the constructor, so the C parser can be used."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reaper.errors import ConfigError, Diagnostic
from reaper.untrusted import RefusedFile, read_bounded

# The C parser is faster; both keep marks. Nesting is bounded before composing because libyaml's
# recursive composer overflows the C stack (segfault) at a few ten thousand levels.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_DEPTH = 64  # no config or policy needs more than a dozen levels
MAX_NODES = 200_000  # bounds alias expansion ("billion laughs")
MAX_FILE_BYTES = 1 << 20  # 1 MiB: the largest policy file or config reaper reads

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NULL_TAG = "tag:yaml.org,2002:null"
_OPENERS = (
    yaml.BlockMappingStartToken,
    yaml.BlockSequenceStartToken,
    yaml.FlowMappingStartToken,
    yaml.FlowSequenceStartToken,
)
_CLOSERS = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)

PathKey = str | int
NodePath = tuple[PathKey, ...]


@dataclass(frozen=True, slots=True)
class Position:
    """A 1-based line and column."""

    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Problem:
    """A problem found in loaded data, located by its path from the document root."""

    path: NodePath
    message: str
    at_key: bool = False  # point at the key of the entry rather than at its value


@dataclass(frozen=True)
class SourceMap:
    """Where each node of one loaded document came from."""

    file: str
    values: Mapping[NodePath, Position]
    keys: Mapping[NodePath, Position]
    plain: Mapping[NodePath, str]  # original text of plain scalars not read as strings

    def value_position(self, path: NodePath) -> Position:
        """Position of the value at `path`, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            found = self.values.get(path[:end])
            if found is not None:
                return found
        return Position(1, 1)

    def key_position(self, path: NodePath) -> Position:
        """Position of the key of the mapping entry at `path`; its value's when it has no key."""
        return self.keys.get(path) or self.value_position(path)

    def plain_text(self, path: NodePath) -> str | None:
        """The text of an unquoted scalar that YAML read as a bool, number, null or date."""
        return self.plain.get(path)

    def locate(self, problem: Problem) -> Diagnostic:
        """The problem as a `file:line:col` diagnostic."""
        at = self.key_position(problem.path) if problem.at_key else None
        at = at or self.value_position(problem.path)
        return Diagnostic(self.file, at.line, at.column, problem.message)


@dataclass(frozen=True)
class YamlDocument:
    """Plain Python data (dicts with str keys, lists, scalars) and where it came from."""

    data: dict[str, Any]
    source: SourceMap


def load_yaml_file(path: Path) -> tuple[YamlDocument, bytes]:
    """Read and parse one file; returns the document and the raw bytes (for hashing).

    Raises ConfigError when the file cannot be read or is not a YAML mapping."""
    try:
        raw = read_bounded(path, MAX_FILE_BYTES)
    except RefusedFile as exc:
        raise ConfigError([Diagnostic(str(path), 1, 1, f"{exc}: refused")]) from None
    except OSError as exc:
        message = f"cannot read: {exc.strerror or exc}"
        raise ConfigError([Diagnostic(str(path), 1, 1, message)]) from None
    return parse_yaml(raw, str(path)), raw


def parse_yaml(raw: bytes | str, file: str) -> YamlDocument:
    """Parse one YAML document whose top level must be a mapping.

    Raises ConfigError with every problem found; never anything else, for any input."""
    text = _decode(raw, file) if isinstance(raw, bytes) else raw
    try:
        _check_depth(text, file)
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_syntax_diagnostic(exc, file, text)]) from None
    except yaml.reader.ReaderError as exc:
        line, column = _line_column(text, exc.position)
        message = f"unacceptable character #x{exc.character:04x}: {exc.reason}"
        raise ConfigError([Diagnostic(file, line, column, message)]) from None
    except yaml.YAMLError as exc:  # any other parser complaint, without a mark
        raise ConfigError([Diagnostic(file, 1, 1, f"YAML error: {exc}")]) from None
    except UnicodeError:  # lone surrogates in a str given directly, never in a decoded file
        raise ConfigError([Diagnostic(file, 1, 1, "text that is not valid Unicode")]) from None
    return _build_document(root, file)


def _decode(raw: bytes, file: str) -> str:
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        column = len(raw[line_start : exc.start].decode("utf-8", "replace")) + 1
        bad = raw[exc.start : exc.start + 1].hex()
        message = f"not valid UTF-8 (byte 0x{bad}); save the file as UTF-8"
        raise ConfigError([Diagnostic(file, line, column, message)]) from None


def _line_column(text: str, index: int) -> tuple[int, int]:
    line_start = text.rfind("\n", 0, index) + 1
    return text.count("\n", 0, index) + 1, index - line_start + 1


def _check_depth(text: str, file: str) -> None:
    """Refuse absurd nesting with the (non-recursive) scanner before the composer recurses."""
    depth = 0
    for token in yaml.scan(text, Loader=_LOADER):
        if isinstance(token, _OPENERS):
            depth += 1
            if depth > MAX_DEPTH:
                mark = token.start_mark
                message = f"nested more than {MAX_DEPTH} levels deep"
                raise ConfigError([Diagnostic(file, mark.line + 1, mark.column + 1, message)])
        elif isinstance(token, _CLOSERS):
            depth -= 1


def _syntax_diagnostic(exc: yaml.MarkedYAMLError, file: str, text: str) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = exc.problem or "invalid document"
    if exc.context:  # e.g. "while parsing a block mapping (line 3): did not find expected key"
        since = f" (line {exc.context_mark.line + 1})" if exc.context_mark else ""
        problem = f"{exc.context}{since}: {problem}"
    message = f"YAML syntax error: {problem}{_syntax_hint(exc, text)}"
    return Diagnostic(file, line, column, message)


def _syntax_hint(exc: yaml.MarkedYAMLError, text: str) -> str:
    """The usual cause of two cryptic messages (docs/policies.md, "YAML traps")."""
    problem = exc.problem or ""
    if problem.startswith("found undefined alias"):
        return (
            "; a value starting with * is read as an alias: quote globs that start with *, "
            "e.g. names: ['*-nightly']"
        )
    mark = exc.problem_mark
    tab = mark is not None and _char_at(text, mark) == "\t"
    if "tab character" in problem or ("cannot start any token" in problem and tab):
        return "; tabs are not allowed for indentation in YAML: indent with spaces"
    return ""


def _char_at(text: str, mark: Any) -> str:
    """The character at a mark (the C parser's marks carry no buffer; its index is the same)."""
    index = mark.index
    return text[index] if 0 <= index < len(text) else ""


def _build_document(root: Node | None, file: str) -> YamlDocument:
    if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL_TAG):
        raise ConfigError([Diagnostic(file, 1, 1, "the file is empty: expected a mapping")])
    if not isinstance(root, MappingNode):
        mark = root.start_mark
        kind = "a list" if isinstance(root, SequenceNode) else "a single value"
        message = f"the top level must be a mapping (key: value lines), not {kind}"
        raise ConfigError([Diagnostic(file, mark.line + 1, mark.column + 1, message)])
    builder = _Builder(file)
    data = builder.construct(root, ())
    if builder.diagnostics:
        raise ConfigError(builder.diagnostics)
    source = SourceMap(file, builder.values, builder.keys, builder.plain)
    return YamlDocument(data=data, source=source)


def _position(node: Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


@dataclass
class _Builder:
    """Turns a composed node graph into plain data, recording positions and problems."""

    file: str
    values: dict[NodePath, Position] = field(default_factory=dict)
    keys: dict[NodePath, Position] = field(default_factory=dict)
    plain: dict[NodePath, str] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    constructor: Any = field(default_factory=yaml.constructor.SafeConstructor)
    active: set[int] = field(default_factory=set)  # ids of the nodes being built (cycle check)
    seen: set[int] = field(default_factory=set)  # ids of the nodes built so far
    aliased: bool = False  # a node was built twice: an alias was expanded
    count: int = 0

    def report(self, node: Node, message: str) -> None:
        at = _position(node)
        self.diagnostics.append(Diagnostic(self.file, at.line, at.column, message))

    def construct(self, node: Node, path: NodePath) -> Any:
        """The plain value of `node`; None where a problem was reported instead."""
        self.count += 1
        self.aliased = self.aliased or id(node) in self.seen
        self.seen.add(id(node))
        if self.count > MAX_NODES:
            if self.count == MAX_NODES + 1:
                why = " after expanding aliases" if self.aliased else ": far more than any policy"
                self.report(node, f"more than {MAX_NODES} values{why}")
            return None
        if id(node) in self.active:
            self.report(node, "an alias refers to a node that contains it (recursive alias)")
            return None
        self.values[path] = _position(node)
        self.active.add(id(node))
        try:
            return self._construct_node(node, path)
        finally:
            self.active.discard(id(node))

    def _construct_node(self, node: Node, path: NodePath) -> Any:
        if isinstance(node, ScalarNode):
            return self._construct_scalar(node, path)
        if isinstance(node, SequenceNode) and node.tag == _SEQ_TAG:
            return [self.construct(child, (*path, i)) for i, child in enumerate(node.value)]
        if isinstance(node, MappingNode) and node.tag == _MAP_TAG:
            return self._construct_mapping(node, path)
        tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
        self.report(node, f"unsupported YAML tag {tag}: use plain mappings and lists")
        return None

    def _construct_scalar(self, node: ScalarNode, path: NodePath) -> Any:
        value, ok = self._scalar_value(node)
        if ok and not isinstance(value, str):
            self.plain[path] = str(node.value)
        return value

    def _scalar_value(self, node: ScalarNode) -> tuple[Any, bool]:
        """The scalar's value and True, or (None, False) after reporting why it cannot be read."""
        if node.tag == _MERGE_TAG:  # `<<` outside a key is just text
            return str(node.value), True
        try:
            return self.constructor.construct_object(node), True
        except yaml.YAMLError as exc:
            self.report(node, f"cannot read this value: {getattr(exc, 'problem', None) or exc}")
        except (ValueError, OverflowError) as exc:  # e.g. the timestamp 2024-13-45
            self.report(node, f"cannot read {node.value!r}: {exc}; quote it if it is text")
        return None, False

    def _construct_mapping(self, node: MappingNode, path: NodePath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node, merged in self._entries(node):
            key = self._construct_key(key_node)
            if key is None:
                continue
            if merged and key in result:
                continue  # an explicit key or an earlier merge wins (YAML merge-key spec)
            if not merged and key in first_line:
                line = first_line[key]
                self.report(key_node, f"duplicate key {key!r}: already given at line {line}")
                continue
            if not merged:
                first_line[key] = key_node.start_mark.line + 1
            self.keys[(*path, key)] = _position(key_node)
            result[key] = self.construct(value_node, (*path, key))
        return result

    def _entries(self, node: MappingNode) -> Iterator[tuple[Node, Node, bool]]:
        """Explicit entries first, then entries merged in by `<<` (which never override)."""
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
            else:
                yield key_node, value_node, False
        for source in merges:
            yield from self._merged_entries(source)

    def _merged_entries(self, source: Node) -> Iterator[tuple[Node, Node, bool]]:
        sources = source.value if isinstance(source, SequenceNode) else [source]
        for item in sources:
            if not isinstance(item, MappingNode) or id(item) in self.active:
                self.report(item, "a merge key (<<) takes a mapping or a list of mappings")
                continue
            self.active.add(id(item))
            try:
                for key_node, value_node, _ in list(self._entries(item)):
                    yield key_node, value_node, True
            finally:
                self.active.discard(id(item))

    def _construct_key(self, node: Node) -> str | None:
        if not isinstance(node, ScalarNode):
            self.report(node, "a key must be a plain string, not a list or a mapping")
            return None
        value, ok = self._scalar_value(node)
        if not ok or isinstance(value, str):
            return value if ok else None
        if node.value in ("", "~"):
            self.report(node, "empty key")
        else:
            hint = read_as_hint(node.value, value)
            self.report(node, f"key {node.value!r} must be a string{hint}")
        return None


def read_as_hint(text: str, value: object) -> str:
    """'; YAML 1.1 reads unquoted no as false — quote it: "no"' for a plain scalar that YAML
    read as something other than a string; '' when there is nothing to explain."""
    if isinstance(value, str):
        return ""
    if value is None:
        return "; the value is empty (null)" if text in ("", "~") else f"; {text} reads as null"
    if isinstance(value, bool) and text.lower() not in ("true", "false"):
        return f'; YAML 1.1 reads unquoted {text} as {str(value).lower()} — quote it: "{text}"'
    if isinstance(value, int | float) and ":" in text:
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        return f'; YAML 1.1 reads unquoted {text} as {shown} (base 60) — quote it: "{text}"'
    kind = {bool: "a boolean", int: "a number", float: "a number"}.get(type(value), "a date")
    return f'; YAML reads unquoted {text} as {kind} — quote it: "{text}"'
