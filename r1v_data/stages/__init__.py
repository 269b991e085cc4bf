"""Stages: one `run_*` (or one command's function) per module, each a plain function from a config
to a small result with counts. A stage reads and writes the store and calls the layers below it;
it never prints (the CLI renders its result)."""
