"""The converter CLI's ``main`` sets up the process's logging, as a command line does; tests that call
it in-process drop the stderr handler it installed, so none outlives the captured stream it writes to."""

import logging

import pytest


@pytest.fixture(autouse=True)
def _drop_cli_log_handlers():
    yield
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if type(handler) is logging.StreamHandler:  # setup_logging's; pytest's own are subclasses
            root.removeHandler(handler)
            handler.close()
