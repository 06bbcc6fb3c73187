"""Placeholder until the cluster registration lands (issue 5)."""

import argparse


def add_register_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run_register(args: argparse.Namespace) -> int:
    print("token-projector register: not yet available")
    return 2
