"""`bluesky-ptychonn ioc` / `python -m bluesky_ptychonn.ioc`: options and bad input."""

from __future__ import annotations

import argparse
import subprocess
import sys

from bluesky_ptychonn.commands import ioc as ioc_command
from bluesky_ptychonn.ioc.options import hutch_factory


def parse(argv):
    parser = argparse.ArgumentParser(prog="bluesky-ptychonn")
    ioc_command.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["ioc", *argv])


def test_command_registers_its_options():
    args = parse(["--prefix", "XF:", "--motor-egu", "mm", "--motor-sign", "-1"])
    assert args.func is ioc_command.run
    assert (args.prefix, args.motor_egu, args.motor_sign) == ("XF:", "mm", -1)
    assert args.detectors == ["eiger", "medipix3"] and args.interfaces is None


def test_options_build_the_hutch_they_describe():
    args = parse(["--prefix", "OPT:", "--detectors", "eiger", "--motor-egu", "mm",
                  "--field-of-view", "2e-6"])  # fmt: skip
    hutch = hutch_factory(args)(None)
    try:
        description = hutch.describe()
        assert description["stage"]["egu"] == "mm"
        assert list(description["detectors"]) == ["eiger"]
        assert description["detectors"]["eiger"]["prefix"] == "OPT:EIG:"
    finally:
        hutch.close()


def test_bad_option_is_one_clear_line_and_no_server():
    result = subprocess.run(
        [sys.executable, "-m", "bluesky_ptychonn.ioc", "--field-of-view", "-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "error: --field-of-view must be a positive length" in result.stderr
    assert "Traceback" not in result.stderr
