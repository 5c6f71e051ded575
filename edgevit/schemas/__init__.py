"""Published JSON Schemas (package data): the bundle manifest that apps and this reader both check."""
