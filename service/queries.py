"""The SQL, all parameterized, and the mapping from rows to JSON-ready dicts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.db import Session
from service.lsn import parse_lsn
from service.validation import ProductInput

_COLUMNS = "id, name, price_cents, updated_at"

# Where this node stands in the WAL: replayed position on a standby, current write
# position on a primary (also right when the read DSN reaches a promoted node).
_POSITION = """
SELECT pg_is_in_recovery(),
       (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
             ELSE pg_current_wal_lsn() END)::text
"""


@dataclass(frozen=True)
class Position:
    lsn: int
    in_recovery: bool


def product_from_row(row: tuple) -> dict[str, Any]:
    product_id, name, price_cents, updated_at = row
    return {"id": product_id, "name": name, "price_cents": price_cents, "updated_at": updated_at.isoformat()}


async def insert_product(session: Session, item: ProductInput) -> dict[str, Any]:
    row = await session.fetchone(
        f"INSERT INTO products (name, price_cents) VALUES (%s, %s) RETURNING {_COLUMNS}",
        (item.name, item.price_cents),
    )
    assert row is not None
    return product_from_row(row)


async def update_product(session: Session, product_id: int, item: ProductInput) -> dict[str, Any] | None:
    row = await session.fetchone(
        f"UPDATE products SET name = %s, price_cents = %s, updated_at = now() WHERE id = %s RETURNING {_COLUMNS}",
        (item.name, item.price_cents, product_id),
    )
    return None if row is None else product_from_row(row)


async def delete_product(session: Session, product_id: int) -> bool:
    return await session.fetchone("DELETE FROM products WHERE id = %s RETURNING id", (product_id,)) is not None


async def current_wal_lsn(session: Session) -> int:
    # In autocommit the write above has committed (and, with synchronous_commit on,
    # flushed) before this runs, so this position covers its commit record.
    row = await session.fetchone("SELECT pg_current_wal_lsn()::text")
    assert row is not None
    return parse_lsn(row[0])


async def fetch_product(session: Session, product_id: int) -> dict[str, Any] | None:
    row = await session.fetchone(f"SELECT {_COLUMNS} FROM products WHERE id = %s", (product_id,))
    return None if row is None else product_from_row(row)


async def fetch_product_at_position(session: Session, product_id: int) -> tuple[dict[str, Any] | None, Position]:
    """The row and a WAL position the row is at least as new as.

    The position is read by a first statement and the row by a second one, pipelined
    in one round trip. In one statement the position would be read after the
    statement's snapshot, so replay could pass a write's position between the two and
    the old row would be labelled as new enough.
    """
    position_row, product_row = await session.fetchone_each(
        [(_POSITION, ()), (f"SELECT {_COLUMNS} FROM products WHERE id = %s", (product_id,))]
    )
    assert position_row is not None
    in_recovery, lsn_text = position_row
    position = Position(lsn=0 if lsn_text is None else parse_lsn(lsn_text), in_recovery=bool(in_recovery))
    return (None if product_row is None else product_from_row(product_row)), position


async def list_products(session: Session, after_id: int, limit: int) -> list[dict[str, Any]]:
    rows = await session.fetchall(
        f"SELECT {_COLUMNS} FROM products WHERE id > %s ORDER BY id LIMIT %s", (after_id, limit)
    )
    return [product_from_row(row) for row in rows]


async def node_position(session: Session) -> Position:
    row = await session.fetchone(_POSITION)
    assert row is not None
    in_recovery, lsn_text = row
    return Position(lsn=0 if lsn_text is None else parse_lsn(lsn_text), in_recovery=bool(in_recovery))
