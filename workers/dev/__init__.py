"""Development helpers: `make run`'s process stack, an embedded Redis, Flower's launcher."""
