"""The public catalog: what the portal sells, at which price."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from domain.order import Product


class CatalogEntry(BaseModel):
    """A pricebook entry with its product, as the public catalog shows it."""

    model_config = ConfigDict(frozen=True)

    sf_pricebook_entry_id: str
    pricebook_id: str
    product: Product
    unit_price: Decimal
    is_active: bool = True
