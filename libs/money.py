"""Money as an integer number of kopecks, and every way the shop writes or reads it.

Three spellings of an amount: for people ('1 290 ₽'), for machines (YooKassa's and the sheet's
'1290.00'), and for a spreadsheet's number cells (1290, 1290.5). Nothing here uses a float for
arithmetic; a float only ever arrives from (or leaves for) a spreadsheet cell.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

# What people type between thousands: a space, a no-break space, a narrow no-break space.
_SPACES = str.maketrans("", "", " \u00a0\u202f")


def rubles(kopecks: int) -> str:
    """Kopecks as machines write rubles (YooKassa's amount value, a sheet's text cell):
    123450 -> '1234.50', -99000 -> '-990.00'."""
    sign = "-" if kopecks < 0 else ""
    whole, part = divmod(abs(kopecks), 100)
    return f"{sign}{whole}.{part:02d}"


def kopecks(value: object) -> int:
    """Rubles as machines write them ('1234.50', '-990', a Decimal; anything a JSON body holds)
    as kopecks; ValueError if it is not a number or has a fraction of a kopeck. Nothing is
    rounded: this is money received."""
    amount = _decimal(str(value), value)
    exact = amount * 100
    if exact != exact.to_integral_value():
        raise ValueError(f"a fraction of a kopeck in {value!r}")
    return int(exact)


def rubles_to_kopecks(value: str | int | float) -> int:
    """What a person typed ('890', 890.5, '1 290,90') as kopecks; refuses fractions of a kopeck
    and negatives."""
    amount = _decimal(_typed(value), value)
    if amount < 0:
        raise ValueError(f"not an amount of rubles: {value!r}")
    exact = amount * 100
    if exact != exact.to_integral_value():
        raise ValueError(f"more than two decimals in {value!r}")
    return int(exact)


def format_rub(kopecks: int) -> str:
    """For people: 12990 -> '129.90 ₽'; whole rubles without decimals: 89000 -> '890 ₽'."""
    rub, kop = divmod(abs(kopecks), 100)
    sign = "-" if kopecks < 0 else ""
    whole = f"{rub:,}".replace(",", "\u00a0")
    return f"{sign}{whole} ₽" if kop == 0 else f"{sign}{whole}.{kop:02d} ₽"


def cell_number(kopecks: int) -> int | float:
    """Rubles as a spreadsheet's number cell: a whole number, or its shortest decimal (exact:
    the float's shortest repr is the two-decimal text, so `cell_kopecks` reads it back)."""
    return kopecks // 100 if kopecks % 100 == 0 else kopecks / 100


def cell_kopecks(value: str | int | float) -> int:
    """A spreadsheet cell read back (2870.5, 2870, '2870.50', '-990,00', '1 290') as kopecks,
    to the nearest kopeck: a cell someone typed or computed is not money received. A blank cell
    is 0; ValueError if it is not a number."""
    text = _typed(value)
    if text in ("", "-"):
        return 0
    amount = _decimal(text, value) * 100
    return int(amount.to_integral_value(ROUND_HALF_EVEN))


def _typed(value: str | int | float) -> str:
    # A float's repr is its shortest decimal (2870.5, not 2870.4999...); a person's comma is a dot.
    if isinstance(value, float):
        return repr(value)
    return str(value).translate(_SPACES).replace(",", ".")


def _decimal(text: str, value: object) -> Decimal:
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not an amount of rubles: {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"not an amount of rubles: {value!r}")
    return amount
