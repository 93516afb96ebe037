"""Money as an integer number of kopecks: parsing what people write, formatting what they read."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation


def rubles_to_kopecks(value: str | int | float) -> int:
    """'890', 890.5, '1 290,90' -> kopecks; refuses fractions of a kopeck and negatives."""
    text = str(value).replace(" ", "").replace("\u00a0", "").replace(",", ".")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not an amount of rubles: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"not an amount of rubles: {value!r}")
    kopecks = amount * 100
    if kopecks != kopecks.to_integral_value():
        raise ValueError(f"more than two decimals in {value!r}")
    return int(kopecks)


def format_rub(kopecks: int) -> str:
    """12990 -> '129.90 ₽'; whole rubles without decimals: 89000 -> '890 ₽'."""
    rub, kop = divmod(abs(kopecks), 100)
    sign = "-" if kopecks < 0 else ""
    whole = f"{rub:,}".replace(",", "\u00a0")
    return f"{sign}{whole} ₽" if kop == 0 else f"{sign}{whole}.{kop:02d} ₽"
