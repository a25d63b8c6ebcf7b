"""`make run-split`: create the split deployment's PostgreSQL databases that do not exist yet.

One per service of shop/services.py, named by the service's variable (DATABASE_URL for the shop,
PAYMENTS_DATABASE_URL for payments, NOTIFICATIONS_DATABASE_URL for notifications). A variable
that is unset, or not a PostgreSQL URL, is skipped with a notice (SQLite creates its file by
itself).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/shop_split \\
    PAYMENTS_DATABASE_URL=postgres://postgres@127.0.0.1:5432/shop_split_payments \\
    NOTIFICATIONS_DATABASE_URL=postgres://postgres@127.0.0.1:5432/shop_split_notifications \\
        .venv/bin/python scripts/split_databases.py
"""

import os
import sys
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from psycopg import sql

from harness.services import PostgresServer
from shop.services import SERVICES


def main() -> int:
    for service in SERVICES.values():
        url = os.environ.get(service.database_env, "")
        if not url.startswith(("postgres://", "postgresql://", "pgsql://")):
            print(f"{service.name}: {service.database_env} is no PostgreSQL URL; nothing to create")
            continue
        name = urlparse(url).path.lstrip("/")
        server = PostgresServer.from_url(url)
        with server.connect() as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if exists:
                print(f"{service.name}: database {name} exists")
                continue
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"{service.name}: database {name} created")
    return 0


if __name__ == "__main__":
    sys.exit(main())
