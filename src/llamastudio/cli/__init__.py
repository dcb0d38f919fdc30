"""Command-line interface (Typer); output through rich, logic in the layers below."""
