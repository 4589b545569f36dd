"""One module per task; each defines a ServedModel subclass."""
