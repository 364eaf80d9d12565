"""The `castnet` command line (`node.cli.main`) and its command groups, a module each."""
