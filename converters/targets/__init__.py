"""One package per target (`<name>/`: fp lowering, quantized lowering, runner, fact readers) and the registry
that lists them (`registry.py`). Adding a target is one package here and one line in the registry."""
