"""Products: creation, images, blurhash and stock."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from domain.aggregate import Aggregate
from domain.commands import Command, UnitOfWorkPort, handlers, new_id
from domain.errors import InsufficientStock, RuleViolation
from domain.events import DomainEvent, event, registry
from domain.limits import MAX_AMOUNT_CENTS, MAX_STOCK, Id
from domain.tenancy import require_tenant

__all__ = [
    "AdjustStock",
    "CreateProduct",
    "ImagePath",
    "Product",
    "ProductBlurhashSet",
    "ProductCreated",
    "ProductImageUploaded",
    "ProductStockAdjusted",
    "SetProductBlurhash",
    "UploadProductImage",
]


@event
class ProductCreated(DomainEvent):
    TYPE = "product.created"
    # v1 stored `price` as a float in currency units; v2 stores integer cents.
    SCHEMA_VERSION = 2
    tenant_id: str
    name: str
    sku: str
    price_cents: int
    stock_quantity: int


@registry.upcaster(ProductCreated.TYPE, from_version=1)
def _product_created_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    price = payload.pop("price")
    payload["price_cents"] = round(float(price) * 100)
    return payload


@event
class ProductImageUploaded(DomainEvent):
    TYPE = "product.image_uploaded"
    tenant_id: str
    image_path: str


@event
class ProductBlurhashSet(DomainEvent):
    TYPE = "product.blurhash_set"
    blurhash: str


@event
class ProductStockAdjusted(DomainEvent):
    TYPE = "product.stock_adjusted"
    delta: int
    stock_after: int
    reason: str
    order_id: str | None = None


def _check_image_path(value: Any) -> Any:
    """A relative path under STORAGE_DIR: no NUL or control characters, no absolute path."""
    if isinstance(value, str):
        if any(ord(ch) < 32 or ord(ch) == 0x7F for ch in value):
            raise ValueError("an image path must not hold NUL or control characters")
        if value.startswith(("/", "\\")) or ".." in value.replace("\\", "/").split("/"):
            raise ValueError("an image path is relative to STORAGE_DIR, without '..'")
    return value


ImagePath = Annotated[str, BeforeValidator(_check_image_path), Field(min_length=1, max_length=500)]


class Product(Aggregate):
    TYPE = "product"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.name = ""
        self.price_cents = 0
        self.stock_quantity = 0
        self.image_path: str | None = None

    def apply(self, event: DomainEvent) -> None:
        match event:
            case ProductCreated():
                self.tenant_id, self.name = event.tenant_id, event.name
                self.price_cents, self.stock_quantity = event.price_cents, event.stock_quantity
            case ProductStockAdjusted():
                self.stock_quantity = event.stock_after
            case ProductImageUploaded():
                self.image_path = event.image_path

    @classmethod
    def create(
        cls, product_id: str, *, tenant_id: str, name: str, sku: str, price_cents: int, stock: int
    ) -> Product:
        product = cls(product_id)
        product._record(
            ProductCreated(
                tenant_id=tenant_id,
                name=name,
                sku=sku,
                price_cents=price_cents,
                stock_quantity=stock,
            )
        )
        return product

    def upload_image(self, image_path: str) -> None:
        self._record(ProductImageUploaded(tenant_id=self.tenant_id, image_path=image_path))

    def set_blurhash(self, blurhash: str, for_image: str | None = None) -> bool:
        """Record the image's BlurHash; False (nothing recorded) when `for_image` is no longer
        the product's image: a newer upload's job will set its own."""
        if for_image is not None and for_image != self.image_path:
            return False
        self._record(ProductBlurhashSet(blurhash=blurhash))
        return True

    def adjust_stock(self, delta: int, reason: str, order_id: str | None = None) -> None:
        after = self.stock_quantity + delta
        if after < 0:
            raise InsufficientStock(
                f"product {self.id} has {self.stock_quantity} in stock, "
                f"cannot take {-delta} ({reason})"
            )
        if after > MAX_STOCK:
            raise RuleViolation(
                f"product {self.id} would have {after} in stock; at most {MAX_STOCK} ({reason})"
            )
        self._record(
            ProductStockAdjusted(delta=delta, stock_after=after, reason=reason, order_id=order_id)
        )


class CreateProduct(Command):
    product_id: Id = Field(default_factory=new_id)
    tenant_id: Id
    name: str = Field(min_length=1, max_length=200)
    sku: Id
    price_cents: int = Field(ge=0, le=MAX_AMOUNT_CENTS)
    stock_quantity: int = Field(default=0, ge=0, le=MAX_STOCK)


class UploadProductImage(Command):
    product_id: Id
    image_path: ImagePath


class SetProductBlurhash(Command):
    product_id: Id
    blurhash: str = Field(min_length=6, max_length=100)
    # The image the hash was computed from; a stale one (replaced since) is ignored.
    image_path: ImagePath | None = None


class AdjustStock(Command):
    product_id: Id
    delta: int = Field(ge=-MAX_STOCK, le=MAX_STOCK)
    reason: str = Field(default="manual", min_length=1, max_length=100)


@handlers.register(CreateProduct)
def create_product(cmd: CreateProduct, uow: UnitOfWorkPort) -> str:
    require_tenant(uow, cmd.tenant_id)
    uow.add(
        Product.create(
            cmd.product_id,
            tenant_id=cmd.tenant_id,
            name=cmd.name,
            sku=cmd.sku,
            price_cents=cmd.price_cents,
            stock=cmd.stock_quantity,
        )
    )
    return cmd.product_id


@handlers.register(UploadProductImage)
def upload_product_image(cmd: UploadProductImage, uow: UnitOfWorkPort) -> str:
    uow.get(Product, cmd.product_id).upload_image(cmd.image_path)
    return cmd.product_id


@handlers.register(SetProductBlurhash)
def set_product_blurhash(cmd: SetProductBlurhash, uow: UnitOfWorkPort) -> str:
    uow.get(Product, cmd.product_id).set_blurhash(cmd.blurhash, cmd.image_path)
    return cmd.product_id


@handlers.register(AdjustStock)
def adjust_stock(cmd: AdjustStock, uow: UnitOfWorkPort) -> str:
    if cmd.delta == 0:
        raise RuleViolation("a stock adjustment of 0 changes nothing; give a non-zero delta")
    uow.get(Product, cmd.product_id).adjust_stock(cmd.delta, cmd.reason)
    return cmd.product_id
