"""Subcommands of the netdiffusion CLI (see netdiffusion.cli)."""
