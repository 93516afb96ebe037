"""The shop's services; each subpackage runs as its own OS process."""
