"""Model merging: the method registry, mergekit-style configs and the streaming driver.

Importing this package registers every merge method: each module below adds its methods to the
registry of ``l2s_lib.merge.base`` with ``@register``.
"""

from __future__ import annotations

import importlib

from l2s_lib.merge.base import MergeContext, MergeMethod, Param, available_methods, get_method, register

#: Modules that define merge methods, imported for their registrations.
METHOD_MODULES = (
    "l2s_lib.merge.methods_task_vector",
    "l2s_lib.merge.methods_lowrank",
    "l2s_lib.merge.methods_activation",
)
#: Modules written in a later step: tolerated when absent (and only when absent, not when broken).
_OPTIONAL = {"l2s_lib.merge.methods_lowrank", "l2s_lib.merge.methods_activation"}

for _name in METHOD_MODULES:
    try:
        importlib.import_module(_name)
    except ModuleNotFoundError as _exc:
        if _name in _OPTIONAL and _exc.name == _name:
            continue
        raise

from l2s_lib.merge.config import MergeConfig, load_config  # noqa: E402
from l2s_lib.merge.driver import merge  # noqa: E402

__all__ = [
    "MergeConfig", "MergeContext", "MergeMethod", "Param", "available_methods", "get_method", "load_config",
    "merge", "register",
]
