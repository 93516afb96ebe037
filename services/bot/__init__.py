"""The shop window in Telegram (aiogram 3): not built yet, so `shop up` does not start it."""
