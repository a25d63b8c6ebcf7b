"""The outbox's two surfaces: ``outbox`` for the apps, ``outbox.ops`` for the host. Every name
each one lists resolves (a renamed function breaks here, not in a process at run time)."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("module", ["outbox", "outbox.ops"])
def test_every_name_of_a_surface_resolves(module):
    surface = importlib.import_module(module)
    for name in surface.__all__:
        assert getattr(surface, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute"):
        surface.delivery_handle  # noqa: B018 - internal, on neither surface


def test_the_apps_surface_holds_no_operations():
    import outbox
    import outbox.ops

    assert not {"outbox_status", "heartbeat_ages", "OutboxCollector"} & set(outbox.__all__)
    assert {"outbox_status", "heartbeat_ages", "OutboxCollector"} <= set(outbox.ops.__all__)
