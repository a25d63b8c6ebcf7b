"""Procfile.split names every process of every service of the map (shop/services.py): a service
added to the map without its processes would have nobody to relay, run or take in its events."""

from __future__ import annotations

import re

from harness.procfile import RELEASE, Procfile
from shop.services import SERVICES
from tests.split.conftest import ROOT

SPLIT = Procfile.read(ROOT / "Procfile.split")
MONOLITH = Procfile.read(ROOT / "Procfile")


def service_of(command: str) -> str | None:
    match = re.match(r"SHOP_SERVICE=(\S+)\s", command)
    return match[1] if match else None


def test_every_service_has_a_relay_a_worker_beat_and_a_consumer():
    roles = {}
    for process_type in SPLIT.types.values():
        service = service_of(process_type.command)
        assert service in SERVICES, f"{process_type.name}: SHOP_SERVICE names no service"
        command = process_type.command
        if process_type.is_celery_worker:
            role = "relay" if "outbox_queues --relay" in command else "worker"
            # The queue list is the service's own registry's, computed in the service's shape.
            assert f"$(SHOP_SERVICE={service} python manage.py outbox_queues" in command
        elif "celery -A shop beat" in command:
            role = "beat"
        elif "manage.py bus_consume" in command:
            role = "consumer"
        elif process_type.is_web:
            role = "web"
        else:
            role = process_type.name
        roles.setdefault(service, set()).add(role)
    for name, service in SERVICES.items():
        expected = {"relay", "worker", "beat", "consumer"} | ({"web"} if service.web else set())
        assert expected <= roles.get(name, set()), (name, roles.get(name))
    assert RELEASE in roles["shop"]


def test_celery_node_names_differ_and_the_monolith_is_unchanged():
    hostnames = [
        re.search(r"--hostname (\S+)@", t.command)[1]
        for t in SPLIT.types.values()
        if t.is_celery_worker
    ]
    assert len(hostnames) == len(set(hostnames))
    # The monolith's Procfile selects no service.
    assert all(service_of(t.command) is None for t in MONOLITH.types.values())
