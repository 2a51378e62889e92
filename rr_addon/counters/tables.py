"""The embedded backend's table (migration 0002). One row per live counter."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, String
from sqlmodel import Field, SQLModel


class CounterRow(SQLModel, table=True):
    __tablename__ = "rr_counter"
    key: str = Field(sa_column=Column(String(255), primary_key=True))
    value: int = Field(sa_column=Column(BigInteger, nullable=False))
    # Epoch seconds when the counter's window ends; pruned after.
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
