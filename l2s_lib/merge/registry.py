"""The merge methods, in one explicit list (mergekit's shape): names, aliases, and AIM on any of them.

``METHODS`` is the whole registry: each entry is a method class and its aliases. Nothing registers
itself when imported, so no import order matters. The task-vector family is one generalized method
with its sparsifiers and consensus as values (``methods_task_vector.task_arithmetic_method``): a new
trim or drop is one ``Sparsifier`` and one line here. AIM applies to every listed method that it can
wrap (data-free, with a base): ``aim_<name>`` is made on first use by ``methods_activation.aim``.
"""

from __future__ import annotations

import functools

from l2s_lib.errors import ConfigError
from l2s_lib.merge import methods_activation as act
from l2s_lib.merge import methods_lowrank as lowrank
from l2s_lib.merge import methods_task_vector as tv
from l2s_lib.merge.base import MergeMethod, check_method

#: (method, aliases), in the order ``l2s methods`` lists them.
METHODS: tuple[tuple[type[MergeMethod], tuple[str, ...]], ...] = (
    (tv.Average, ("linear",)),
    (tv.TaskArithmetic, ("ta",)),
    (tv.Ties, ("ties_merging",)),
    (tv.DareLinear, ("dare_task_arithmetic", "dare_ta")),
    (tv.DareAverage, ()),
    (tv.DareTies, ()),
    (tv.Slerp, ()),
    (lowrank.LoREMerging, ("lore_merging",)),
    (lowrank.TwinMerging, ("twin_merging",)),
    (lowrank.IsoC, ("isotropic_merging", "iso-c")),
    (act.SensMerging, ("sens_merging",)),
)

#: Prefix of the AIM variant of a listed method: ``aim_ties`` is AIM on ``ties``.
AIM_PREFIX = "aim_"


def _index() -> tuple[dict[str, type[MergeMethod]], dict[str, str]]:
    by_name: dict[str, type[MergeMethod]] = {}
    aliases: dict[str, str] = {}
    for cls, names in METHODS:
        check_method(cls)
        if cls.name in by_name or cls.name in aliases:
            raise TypeError(f"merge method name '{cls.name}' listed twice")
        by_name[cls.name] = cls
        for alias in names:
            if alias in by_name or alias in aliases:
                raise TypeError(f"merge method alias '{alias}' listed twice")
            aliases[alias] = cls.name
    return by_name, aliases


_BY_NAME, _ALIAS_TO_NAME = _index()


@functools.cache
def _aim_of(inner_name: str) -> type[MergeMethod]:
    return check_method(act.aim(_BY_NAME[inner_name]))


def method_names() -> list[str]:
    """Every method name, sorted: the listed methods and ``aim_<name>`` for each one AIM can wrap."""
    names = set(_BY_NAME) | {AIM_PREFIX + n for n, cls in _BY_NAME.items() if act.aim_applies(cls)}
    return sorted(names)


#: The name the rest of the library and the tests use for ``method_names``.
available_methods = method_names


def aliases() -> dict[str, str]:
    """``{alias: canonical name}`` of every alias."""
    return dict(_ALIAS_TO_NAME)


def get_method(name: str) -> type[MergeMethod]:
    """The method called ``name`` (or an alias; ``aim_<name or alias>`` for AIM on it).

    ``ConfigError`` listing every method if unknown, or saying why AIM cannot wrap the named method."""
    key = _ALIAS_TO_NAME.get(name, name)
    if key in _BY_NAME:
        return _BY_NAME[key]
    if name.startswith(AIM_PREFIX):
        inner = _ALIAS_TO_NAME.get(name[len(AIM_PREFIX):], name[len(AIM_PREFIX):])
        if inner in _BY_NAME:
            return _aim_of(inner)
    raise ConfigError(f"unknown merge method '{name}'; available: {', '.join(method_names())}")
