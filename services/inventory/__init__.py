"""Stock and the catalog: a single-writer actor that serializes reservations without locks,
its pure `core`, and its event log on the INVENTORY stream."""
