"""Rewrite bundle configs so that they use the copy of the package in the bundle's ``scripts/`` folder.

Part of the runtime package because ``lung-nodule-mtl export-bundle`` (a user command) calls it on every export;
the exported bundle itself does not carry :mod:`lung_nodule_mtl.zoo`.

In the repository the configs reference the installed package: ``_target_: lung_nodule_mtl.networks.LNMSNet``,
``$lung_nodule_mtl.data.read_splits(...)`` and ``$import lung_nodule_mtl`` in ``imports``. An exported bundle
carries the package as ``scripts/lung_nodule_mtl/`` and must run where it is not installed, from any working
directory, under every entry point (``python -m monai.bundle run``, ``ckpt_export``, ``verify_net_in_out``, a plain
:class:`monai.bundle.ConfigParser`).

Putting ``scripts/`` on ``sys.path`` with an ``$import`` line is not enough: MONAI evaluates every ``$import``
statement *before* it resolves any other item, so the path cannot depend on ``@bundle_root``, and
``monai.bundle run`` adds the bundle root to ``sys.path`` only after ``initialize`` (and ``ckpt_export`` never
does). The rewrite therefore makes every use of the package depend on one config item that puts
``<bundle_root>/scripts`` on ``sys.path`` and imports the package:

* three keys are added (after ``bundle_root``)::

      lnm_imports: [$import os, $import sys, $from importlib import import_module as lnm_load]
      lnm_scripts_dir: $os.path.abspath(os.path.join(@bundle_root, 'scripts'))
      lnm_scripts: $sys.path.insert(0, @lnm_scripts_dir) or [lnm_load(m) for m in ['lung_nodule_mtl', ...]][0]

  (``lnm_scripts`` is the package module; the list names every package module the configs use). MONAI tries to
  ``ast.parse`` every expression that contains the word ``import`` and fails on one that also holds an ``@``
  reference, hence the ``lnm_load`` alias;
* every component with ``_target_: lung_nodule_mtl.<...>`` gets ``_requires_: "@lnm_scripts"`` (MONAI resolves
  ``_requires_`` before it instantiates the component; the ``_target_`` string is kept);
* in every ``$`` expression the name ``lung_nodule_mtl`` becomes ``@lnm_scripts`` (and a name bound by
  ``$from lung_nodule_mtl.x import y`` / ``$import lung_nodule_mtl.x as y`` becomes ``@lnm_scripts.x.y`` /
  ``@lnm_scripts.x``);
* the package's ``$import`` statements are dropped from the top-level ``imports`` list and replaced by the
  equivalent ``$@lnm_scripts...`` expression anywhere else (e.g. in an ``initialize`` list).

Everything else is left as written.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "PACKAGE",
    "SCRIPTS_DIR",
    "SCRIPTS_DIR_KEY",
    "SCRIPTS_IMPORTS_KEY",
    "SCRIPTS_KEY",
    "PackageUse",
    "find_package_use",
    "make_standalone_config",
]

PACKAGE = "lung_nodule_mtl"
"""Name of the package the configs reference (copied to ``scripts/lung_nodule_mtl`` in an exported bundle)."""
SCRIPTS_DIR = "scripts"
"""Folder of the bundle that holds the package copy."""
SCRIPTS_IMPORTS_KEY = "lnm_imports"
"""Config key added by the rewrite: the standard-library imports the two items below use."""
SCRIPTS_DIR_KEY = "lnm_scripts_dir"
"""Config key added by the rewrite: absolute path of ``<bundle_root>/scripts``."""
SCRIPTS_KEY = "lnm_scripts"
"""Config key added by the rewrite: puts ``scripts/`` on ``sys.path`` and evaluates to the package module."""

_TARGET = "_target_"
_REQUIRES = "_requires_"
_IMPORTS = "imports"
_EXPR = "$"
_REF = "@" + SCRIPTS_KEY
_LOADER = "lnm_load"
# a MONAI reference inside an expression: "@id", "@id#key", "@id::key::0" (as ReferenceResolver.id_matcher, plus "#")
_REF_PATTERN = re.compile(r"@\w*(?:(?:::|#)\w*)*")


@dataclass
class PackageUse:
    """What a set of configs uses from the package (collected over all the configs of a bundle).

    Attributes:
        modules: package modules to import up front (``lung_nodule_mtl`` and every module named in an import
            statement or an attribute chain of an expression).
        aliases: names bound in the expression globals by the configs' package imports, mapped to the dotted
            path they stand for (``{"lung_nodule_mtl": "lung_nodule_mtl", "Keys": "lung_nodule_mtl.constants.Keys"}``).
        other_names: names bound by imports of other modules (must not collide with ``aliases``).
    """

    modules: set[str] = field(default_factory=lambda: {PACKAGE})
    aliases: dict[str, str] = field(default_factory=lambda: {PACKAGE: PACKAGE})
    other_names: set[str] = field(default_factory=set)


def _is_package_path(dotted: str) -> bool:
    return dotted == PACKAGE or dotted.startswith(PACKAGE + ".")


def _module_prefixes(dotted: str, package_dir: Path) -> list[str]:
    """The prefixes of ``dotted`` (``lung_nodule_mtl.a.b.Name``) that are modules of the package in ``package_dir``."""
    parts = dotted.split(".")
    found = [PACKAGE]
    for i in range(1, len(parts)):
        path = package_dir.joinpath(*parts[1 : i + 1])
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            found.append(".".join(parts[: i + 1]))
        else:
            break
    return found


def _parse_import(expr: str) -> ast.Import | ast.ImportFrom | None:
    """The import node of a ``$`` expression (without the ``$``) if it is an import statement, as MONAI decides."""
    if "import" not in expr:
        return None
    try:
        tree = ast.parse(expr)
    except SyntaxError:
        return None
    node = tree.body[0] if tree.body else None
    return node if isinstance(node, (ast.Import, ast.ImportFrom)) else None


def _import_bindings(node: ast.Import | ast.ImportFrom) -> list[tuple[str, str]]:
    """``(bound name, dotted path)`` pairs of an import statement, bound as MONAI's ``ConfigExpression`` binds them.

    MONAI evaluates only the first name of a statement; ``import a.b`` binds the global ``"a.b"`` (not ``a``).
    """
    alias = node.names[0]
    if isinstance(node, ast.ImportFrom):
        module = "." * node.level + (node.module or "")
        return [(alias.asname or alias.name, f"{module}.{alias.name}")]
    return [(alias.asname or alias.name, alias.name)]


def _where(source: str, item_id: str) -> str:
    return f"{source}, item '{item_id}'" if item_id else source


def _walk(config: Any, item_id: str = "") -> Iterable[tuple[str, Any]]:
    """Every ``(id, value)`` in a config, depth first, ids joined with ``#`` as MONAI writes them."""
    yield item_id, config
    if isinstance(config, Mapping):
        for k, v in config.items():
            yield from _walk(v, f"{item_id}#{k}" if item_id else str(k))
    elif isinstance(config, list):
        for i, v in enumerate(config):
            yield from _walk(v, f"{item_id}#{i}" if item_id else str(i))


def _name_tokens(expr: str, source: str) -> list[tuple[int, int, str, str]]:
    """``(start, end, name, dotted chain)`` of every free name in a Python expression, MONAI references masked.

    A *free* name is a NAME token not preceded by ``.`` and not a keyword-argument name; its dotted chain is the name
    followed by any ``.attr`` tokens (``lung_nodule_mtl.data.read_splits``). Offsets index ``expr``.
    """
    # mask "@id#key" with underscores of the same length: "#" would start a Python comment
    masked = _REF_PATTERN.sub(lambda m: "_" * len(m.group()), expr)
    line_starts = [0]
    for line in masked.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))
    try:
        tokens = [
            t
            for t in tokenize.generate_tokens(io.StringIO(masked).readline)
            if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT)
        ]
    except (tokenize.TokenError, SyntaxError) as e:
        raise ValueError(f"{source}: cannot tokenize the expression {expr!r}: {e}") from e
    found = []
    for i, tok in enumerate(tokens):
        if tok.type != tokenize.NAME:
            continue
        prev = tokens[i - 1] if i > 0 else None
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if prev is not None and prev.type == tokenize.OP and prev.string == ".":
            continue
        if nxt is not None and nxt.type == tokenize.OP and nxt.string == "=":
            continue  # keyword argument name
        chain = [tok.string]
        j = i + 1
        while (
            j + 1 < len(tokens)
            and tokens[j].type == tokenize.OP
            and tokens[j].string == "."
            and tokens[j + 1].type == tokenize.NAME
        ):
            chain.append(tokens[j + 1].string)
            j += 2
        start = line_starts[tok.start[0] - 1] + tok.start[1]
        end = line_starts[tok.end[0] - 1] + tok.end[1]
        found.append((start, end, tok.string, ".".join(chain)))
    return found


def find_package_use(config: Any, source: str, package_dir: Path, use: PackageUse | None = None) -> PackageUse:
    """Collect the package modules and import aliases a config uses (call once per config, sharing ``use``).

    Args:
        config: a loaded bundle config (dict).
        source: name of the config file, for error messages.
        package_dir: folder of the package (to tell modules from attributes in dotted paths).
        use: the collection to add to (the configs of a bundle are merged at run time, so their imports share
            one namespace); a new one when ``None``.

    Returns:
        ``use`` (or the new collection).

    Raises:
        ValueError: for a relative import, a name bound both to the package and to something else, or an
            expression that cannot be tokenized.
    """
    use = PackageUse() if use is None else use
    for item_id, value in _walk(config):
        if not (isinstance(value, str) and value.startswith(_EXPR)):
            continue
        node = _parse_import(value[len(_EXPR) :])
        if node is None:
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            raise ValueError(f"{_where(source, item_id)}: relative import {value!r} is not supported in a config.")
        for name, dotted in _import_bindings(node):
            if _is_package_path(dotted):
                use.modules.update(_module_prefixes(dotted, package_dir))
                if "." in name:  # `import lung_nodule_mtl.x` binds the useless global "lung_nodule_mtl.x"
                    continue
                if use.aliases.get(name, dotted) != dotted:
                    raise ValueError(
                        f"{_where(source, item_id)}: {value!r} binds {name!r} to {dotted!r}, but another import "
                        f"binds it to {use.aliases[name]!r}; use one name per object."
                    )
                use.aliases[name] = dotted
            else:
                use.other_names.add(name)
    clash = sorted(set(use.aliases) & use.other_names)
    if clash:
        raise ValueError(
            f"{source}: the name(s) {clash} are bound both to {PACKAGE} and to another module by the configs' "
            "imports; rename one of them."
        )
    for item_id, value in _walk(config):
        if isinstance(value, str) and value.startswith(_EXPR) and _parse_import(value[len(_EXPR) :]) is None:
            for _, _, name, chain in _name_tokens(value[len(_EXPR) :], _where(source, item_id)):
                if name in use.aliases:
                    dotted = use.aliases[name] + chain[len(name) :]
                    use.modules.update(_module_prefixes(dotted, package_dir))
    return use


def _ref_for(dotted: str) -> str:
    """``lung_nodule_mtl.a.B`` → ``@lnm_scripts.a.B``."""
    return _REF + dotted[len(PACKAGE) :]


def _rewrite_string(value: str, use: PackageUse, where: str) -> str | None:
    """The rewritten ``$`` expression, or ``None`` to drop it (a package import in the ``imports`` list)."""
    expr = value[len(_EXPR) :]
    node = _parse_import(expr)
    if node is not None:
        (name, dotted), *_ = _import_bindings(node)
        return _EXPR + _ref_for(dotted) if _is_package_path(dotted) else value
    out = []
    last = 0
    for start, end, name, _ in _name_tokens(expr, where):
        if name in use.aliases:
            out += [expr[last:start], _ref_for(use.aliases[name])]
            last = end
    if not out:
        return value
    new = "".join(out) + expr[last:]
    if "import" in new:
        # MONAI's ConfigExpression.is_import_statement runs ast.parse on any expression holding "import"
        try:
            ast.parse(new)
        except SyntaxError as e:
            raise ValueError(
                f"{where}: the rewritten expression {_EXPR + new!r} holds the word 'import' and an '@' reference, "
                "which MONAI cannot parse; avoid the word 'import' in expressions that use the package."
            ) from e
    return _EXPR + new


def _rewrite(config: Any, use: PackageUse, source: str, item_id: str) -> Any:
    if isinstance(config, Mapping):
        new = {k: _rewrite(v, use, source, f"{item_id}#{k}" if item_id else str(k)) for k, v in config.items()}
        target = config.get(_TARGET)
        if isinstance(target, str) and _is_package_path(target):
            requires = new.get(_REQUIRES)
            if requires is None:
                new[_REQUIRES] = _REF
            elif requires != _REF and not (isinstance(requires, list) and _REF in requires):
                new[_REQUIRES] = [*requires, _REF] if isinstance(requires, list) else [requires, _REF]
        return new
    if isinstance(config, list):
        return [_rewrite(v, use, source, f"{item_id}#{i}" if item_id else str(i)) for i, v in enumerate(config)]
    if isinstance(config, str) and config.startswith(_EXPR):
        return _rewrite_string(config, use, _where(source, item_id))
    return config


def _scripts_items(use: PackageUse) -> dict[str, Any]:
    modules = ", ".join(repr(m) for m in sorted(use.modules, key=lambda m: (m != PACKAGE, m)))
    return {
        SCRIPTS_IMPORTS_KEY: [
            _EXPR + "import os",
            _EXPR + "import sys",
            f"{_EXPR}from importlib import import_module as {_LOADER}",
        ],
        SCRIPTS_DIR_KEY: f"$os.path.abspath(os.path.join(@bundle_root, '{SCRIPTS_DIR}'))",
        SCRIPTS_KEY: f"$sys.path.insert(0, @{SCRIPTS_DIR_KEY}) or [{_LOADER}(m) for m in [{modules}]][0]",
    }


def _uses_scripts(config: Any) -> bool:
    return any(isinstance(v, str) and _REF in v for _, v in _walk(config))


def make_standalone_config(config: Mapping[str, Any], use: PackageUse, source: str) -> dict[str, Any]:
    """Rewrite one config of a bundle to use the package copy in ``<bundle_root>/scripts`` (see the module doc).

    Args:
        config: the loaded config (top level must be a mapping).
        use: what all the configs of the bundle use from the package (from :func:`find_package_use`); the added
            ``lnm_scripts`` item is the same in every config, so merging configs in any order is safe.
        source: name of the config file, for error messages.

    Returns:
        A new config; the input is not modified. Unchanged if the config does not use the package.

    Raises:
        ValueError: if the config is not a mapping or already defines ``lnm_scripts`` / ``lnm_scripts_dir``
            differently.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"{source}: a bundle config must be a mapping at the top level, got {type(config).__name__}.")
    new = _rewrite(config, use, source, "")
    if isinstance(new.get(_IMPORTS), list):
        # the package's import statements became "$@lnm_scripts..." expressions: pointless in `imports`
        new[_IMPORTS] = [v for v in new[_IMPORTS] if not (isinstance(v, str) and v.startswith(_EXPR + _REF))]
    if not _uses_scripts(new):
        return dict(config)
    added = _scripts_items(use)
    for key, value in added.items():
        if key in config and config[key] != value:
            raise ValueError(f"{source}: key {key!r} is reserved for the exported bundle's scripts path; rename it.")
    out: dict[str, Any] = {}
    anchor = "bundle_root" if "bundle_root" in new else (_IMPORTS if _IMPORTS in new else None)
    if anchor is None:
        out.update(added)
    for key, value in new.items():
        if key in added:
            continue
        out[key] = value
        if key == anchor:
            out.update(added)
    return out
