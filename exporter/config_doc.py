"""The example configuration and the README's table of variables, written from the model.

`python -m exporter.config_doc` rewrites `config/pggit-exporter.yml`; tests compare the
committed file and the README table with what this renders, so a setting added to
`exporter.config` shows up in both or the suite says which file is stale.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from exporter.config import (
    DATABASE_ENV_KEYS,
    ENV_KEYS,
    ENV_PREFIX,
    Config,
    Kind,
    _submodel,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "pggit-exporter.yml"
README = EXAMPLE.parent.parent / "README.md"
WIDTH = 95

HEADER = """\
# pggit-exporter: the documented example configuration, with EVERY setting.
# Generated from exporter/config.py by `python -m exporter.config_doc`; edit the model, not this.
#
# Validate a file with:   pggit-exporter check-config --config config/pggit-exporter.yml
# (exit 0 when valid, exit 2 with one line per problem naming its key otherwise).
#
# Unknown keys are errors at every level, so a typo never silently falls back to a default.
# Durations accept a number of seconds (1.5) or a string with a unit: "500ms", "30s", "5m", "1h".
# Each setting below shows its default; environment variables marked "env:" override the file,
# which is how containers configure the exporter without a mounted YAML.
"""


def _extra(f: FieldInfo) -> dict[str, Any]:
    return f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}


def _kind(f: FieldInfo) -> Kind | None:
    return next((m for m in f.metadata if isinstance(m, Kind)), None)


def show(f: FieldInfo, value: Any) -> str:
    """A value as it would be typed in the YAML."""
    kind = _kind(f)
    if kind is not None and kind.show is not None:
        return kind.show(value)
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").strip()


def default_text(f: FieldInfo) -> str:
    extra = _extra(f)
    if "default_doc" in extra:
        return f"Default: {extra['default_doc']}."
    if f.is_required():
        return "Required."
    if f.default is None or f.default in ({}, ()):
        return "Default: none."
    value = f.default if isinstance(f.default, str) else show(f, f.default)
    return "Default: as below." if len(value) > 40 else f"Default {value}."


def _optional(f: FieldInfo) -> bool:
    return type(None) in get_args(f.annotation)


def _comment(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, WIDTH - len(indent) - 2, initial_indent=f"{indent}# ",
                         subsequent_indent=f"{indent}# ", break_on_hyphens=False)


def _wrap_value(line: str, indent: str) -> list[str]:
    """A long flow list broken after commas, continued under its first item."""
    if len(line) <= WIDTH or "[" not in line:
        return [line]
    head, _, rest = line.partition("[")
    pad = " " * (len(head) + 1)
    lines, current = [], head + "["
    for item in rest.split(", "):
        piece = item if current.endswith("[") else ", " + item
        if len(current) + len(piece) > WIDTH:
            lines.append(current + ",")
            current = pad + item
        else:
            current += piece
    return [*lines, current]


def _setting(key: str, f: FieldInfo, indent: str, env: str | None) -> list[str]:
    env_note = f"  env: {ENV_PREFIX}{env}" if env else ""
    lines = [*_comment(f.description or "", indent),
             *_comment(default_text(f) + env_note, indent)]
    example = _extra(f).get("example")
    if f.is_required() or (f.default is None and not _optional(f)):
        # Always has a value (required, or worked out at run time): shown set, as users do.
        lines.append(f"{indent}{key}: {example}")
    elif f.default is None:
        lines.append(f"{indent}# {key}: {example}" if example else f"{indent}# {key}:")
    else:
        lines.extend(_wrap_value(f"{indent}{key}: {show(f, f.default)}", indent))
        if example is not None:
            lines.append(f"{indent}#   {example}")
    return lines


def _block(model: type[BaseModel], indent: str, env_keys: dict[str, str]) -> list[str]:
    env_of = {key: suffix for suffix, key in env_keys.items()}
    out: list[str] = []
    for name, f in model.model_fields.items():
        key = f.alias or name
        sub = _submodel(f.annotation)
        if out:
            out.append("")
        if sub is None:
            out.extend(_setting(key, f, indent, env_of.get(key)))
            continue
        out.extend(_comment(f.description or "", indent))
        if f.annotation is not sub and get_origin(f.annotation) is not tuple:
            # An optional section, off by default: shown commented out.
            out.append(f"{indent}# {key}:")
            out.extend(f"{indent}#{line[len(indent):]}" if line.strip() else line
                       for line in _block(sub, indent + "  ", {}))
            continue
        out.append(f"{indent}{key}:")
        if f.annotation is sub:
            out.extend(_block(sub, indent + "  ", {}))
        else:
            items = _block(sub, indent + "    ", DATABASE_ENV_KEYS)
            items[0] = f"{indent}  - " + items[0].removeprefix(indent + "    ")
            out.extend(items)
    return out


ENV_START = "<!-- config-env:start -->\n"
ENV_END = "\n<!-- config-env:end -->"


def example_yaml() -> str:
    return HEADER + "\n" + "\n".join(_block(Config, "", ENV_KEYS)) + "\n"


def env_table() -> str:
    """The README's table: each variable, the setting it overrides and that setting's default."""
    rows = ["| variable | setting | default |", "|---|---|---|"]
    fields = Config.model_fields
    db_fields = _submodel(fields["databases"].annotation).model_fields  # type: ignore[union-attr]
    for suffix, key in DATABASE_ENV_KEYS.items():
        f = db_fields[key]
        rows.append(f"| `{ENV_PREFIX}{suffix}` | `databases[0].{key}` (only with a single "
                    f"database) | {_cell(f)} |")
    for suffix, key in ENV_KEYS.items():
        rows.append(f"| `{ENV_PREFIX}{suffix}` | `{key}` | {_cell(fields[key])} |")
    return "\n".join(rows)


def _cell(f: FieldInfo) -> str:
    if f.is_required():
        return "required unless the YAML sets it"
    if f.default is None:
        return str(_extra(f).get("default_doc", "none"))
    return f"`{show(f, f.default)}`"


def readme_with_env_table(readme: str) -> str:
    """The README with its environment-variable table (between its markers) regenerated."""
    head, rest = readme.split(ENV_START, 1)
    _, tail = rest.split(ENV_END, 1)
    return f"{head}{ENV_START}{env_table()}{ENV_END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """Rewrite the example file and the README's variable table (or, with --check, exit 1
    when either is stale)."""
    args = sys.argv[1:] if argv is None else argv
    wanted = {EXAMPLE: example_yaml()}
    if README.is_file():
        wanted[README] = readme_with_env_table(README.read_text(encoding="utf-8"))
    if "--check" in args:
        stale = [path for path, text in wanted.items()
                 if path.read_text(encoding="utf-8") != text]
        for path in stale:
            print(f"{path} is stale; run: python -m exporter.config_doc", file=sys.stderr)
        return int(bool(stale))
    for path, text in wanted.items():
        path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
