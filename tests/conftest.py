"""Fixtures of the whole suite: the fake Discord (tests/support/fake.py), a settings-free environment;
and the tables of the fault and load runs, printed at the end (tests/support/tables.py)."""

from tests.support import tables
from tests.support.env import clean_env
from tests.support.fake import fake, make_fake

__all__ = ["clean_env", "fake", "make_fake"]


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist)
        config._cdp_tables = tables.start()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    folder = getattr(config, "_cdp_tables", None)
    for text in tables.collected(folder) if folder else []:
        terminalreporter.write_line("")
        for line in text.splitlines():
            terminalreporter.write_line(line)
