"""The studies: one module per notebook with compute / tables / figures / verdict (see ``folder``), the registry
of studies and their input order, the papermill runner and the ``l2s run`` / ``l2s figures`` commands."""
