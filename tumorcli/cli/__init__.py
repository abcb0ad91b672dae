"""The `tumor` command: one thin module per verb; heavy imports happen inside each command."""
