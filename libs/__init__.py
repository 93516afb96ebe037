"""What every service shares: contracts, subjects and streams, the bus, settings, logging, money."""
