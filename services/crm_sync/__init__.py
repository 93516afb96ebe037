"""The Google Sheets projection: not built yet, so `shop up` does not start it."""
