"""The notebooks under nbval run one after another in one process, in order, also in `make test`'s pytest-xdist
workers (`--dist loadfile`): 03 reads the model that 02 trains into AIMONK_NOTEBOOK_OUT_DIR. The browser check
(tests/browser: JupyterLab running notebook 03) runs in the same worker, so that no two Jupyter kernels start at
once."""

from __future__ import annotations

import pytest


def pytest_xdist_make_scheduler(config: pytest.Config, log):  # noqa: ANN001, ANN201  (xdist's types)
    """loadfile, with every notebook and the browser check in one unit of work (xdist's loadgroup marks are lost
    under pytest 9.2)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class NotebooksTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            jupyter = nodeid.endswith(".ipynb") or ".ipynb::" in nodeid or nodeid.startswith("tests/browser/")
            return "notebooks" if jupyter else super()._split_scope(nodeid)

    return NotebooksTogether(config, log)
