"""The chaos test's marker: ``pytest -m "not chaos"`` leaves out its few minutes."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "chaos: the short chaos run (scripts/chaos.py) against real processes"
    )
