"""Typed run configurations: dataclasses saved as JSON next to every run."""
from __future__ import annotations

import dataclasses
import json
import os
import typing
from pathlib import Path
from typing import Any, TypeVar

from .errors import InputError, MismatchError

T = TypeVar("T")


def to_dict(config: Any) -> dict[str, Any]:
    """Dataclass → plain JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def from_dict(cls: type[T], data: dict[str, Any], *, source: str = "config") -> T:
    """Build ``cls`` from a dict, refusing unknown keys and coercing to the declared types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"{source}: unknown setting(s) {', '.join(unknown)} for {cls.__name__}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{source}: {key}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if value is None:
        return None
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(args[0], value, where) if len(args) == 1 else value
    if origin in (tuple, list):
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        seq = [_coerce(inner, v, where) for v in value]
        return tuple(seq) if origin is tuple else seq
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise InputError(f"{where}: {value!r} is not one of {', '.join(map(str, allowed))}")
        return value
    if hint in (int, float, str):
        try:
            return hint(value)
        except (TypeError, ValueError):
            raise InputError(f"{where}: {value!r} is not a valid {hint.__name__}") from None
    if hint is bool:
        if isinstance(value, str):
            return value.lower() in ("1", "true", "yes", "on")
        return bool(value)
    return value


def save_config(config: Any, path: str | os.PathLike) -> None:
    """Write ``config`` as pretty JSON atomically (temporary file, then rename)."""
    atomic_write_text(Path(path), json.dumps(to_dict(config), indent=2, sort_keys=True) + "\n")


def read_json_object(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """A JSON file that must hold an object (a run's config, a store header, model metadata); a file that
    cannot be read or parsed, or holds anything else, is a one-line error naming ``what`` it should be."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # ValueError covers JSON and UTF-8 decoding errors
        raise InputError(f"{path}: cannot read {what} ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: {what} is not a JSON object")
    return data


def load_config(cls: type[T], path: str | os.PathLike) -> T:
    """Read a JSON (or YAML, when PyYAML is installed) config file into ``cls``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml  # optional

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - reported as one line
        raise InputError(f"{path}: cannot parse config ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: config must be a mapping of setting to value")
    return from_dict(cls, data, source=str(path))


def require_same_config(saved: Any, current: Any, *, ignore: tuple[str, ...] = (), where: str) -> None:
    """Refuse to resume a run whose saved config differs from the current one."""
    a, b = to_dict(saved), to_dict(current)
    diff = sorted(k for k in set(a) | set(b) if k not in ignore and a.get(k) != b.get(k))
    if diff:
        shown = "; ".join(f"{k}: saved {a.get(k)!r} vs now {b.get(k)!r}" for k in diff[:4])
        raise MismatchError(f"{where}: cannot resume with a different config ({shown})")


def csv_text(rows: typing.Iterable[typing.Sequence[Any]]) -> str:
    """Rows → CSV text (``\\n`` line endings), ready for :func:`atomic_write_text`.

    A row with a ``\\r`` in a cell is written fully quoted (the csv module quotes ``\\n`` but, with ``\\n``
    line endings, not a lone ``\\r``), so every cell reads back unchanged with the csv module.
    """
    import csv
    import io

    buffer = io.StringIO()
    minimal = csv.writer(buffer, lineterminator="\n")
    quoted = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for row in rows:
        (quoted if any("\r" in str(cell) for cell in row) else minimal).writerow(row)
    return buffer.getvalue()


def atomic_write_text(path: Path, text: str, replace: bool = True) -> None:
    """Write text through a temporary sibling file and an atomic rename."""
    atomic_write_bytes(path, text.encode(), replace)


def atomic_write_bytes(path: Path, data: bytes, replace: bool = True) -> None:
    """Write bytes through a temporary sibling file, fsync and an atomic rename.

    When anything fails (a full disk, a file-size limit) the temporary file is removed and ``path`` is
    left as it was. ``replace=False`` never replaces an existing ``path`` (``FileExistsError``; a hard link
    instead of a rename, so of two concurrent writers exactly one wins).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            tmp.unlink()
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not exc.filename:  # name the file a full disk refused
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def safe_name(text: str, keep: str = "-_") -> str:
    """``text`` usable as (part of) a file name: every character but letters, digits and ``keep`` becomes ``_``."""
    return "".join(ch if ch.isalnum() or ch in keep else "_" for ch in text)
