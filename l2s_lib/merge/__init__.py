"""Model merging: the method registry, mergekit-style configs and the streaming driver.

``registry.METHODS`` lists every merge method explicitly; importing this package registers nothing.
"""

from __future__ import annotations

from l2s_lib.merge.base import MergeContext, MergeMethod, Param
from l2s_lib.merge.config import MergeConfig, load_config
from l2s_lib.merge.driver import merge
from l2s_lib.merge.registry import aliases, available_methods, get_method

__all__ = [
    "MergeConfig", "MergeContext", "MergeMethod", "Param", "aliases", "available_methods", "get_method",
    "load_config", "merge",
]
