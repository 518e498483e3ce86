"""The ``keras-dynamic`` command: inspect, benchmark and calibrate an export.

    keras-dynamic inspect EXPORT_DIR
    keras-dynamic bench EXPORT_DIR [--data test.npz] [--threads 1 2 4] [--static static.tflite]
                        [--conditional conditional.tflite] [--json report.json]
    keras-dynamic calibrate EXPORT_DIR --data val.npz --max-accuracy-drop 0.01 [--plot curve.png]

It needs the runtime only (numpy and a TFLite interpreter), never TensorFlow.
Data files are ``.npz`` archives holding the inputs as ``x`` (single-input
models) or under the model's input names, and the labels as ``y``.

Exit status: 0 on success, 1 when the export or the data is refused (the
message names the file and the problem), 2 for a wrong command line.
"""

import argparse
import sys

from keras_dynamic import __version__
from keras_dynamic.cli import bench_command
from keras_dynamic.cli import calibrate_command
from keras_dynamic.cli import inspect_command
from keras_dynamic.cli.data import DataError

COMMANDS = (inspect_command, bench_command, calibrate_command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-dynamic",
        description="Inspect, benchmark and calibrate keras-dynamic exports.",
    )
    parser.add_argument("--version", action="version", version=f"keras-dynamic {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = commands.add_parser(command.NAME, help=command.HELP, description=command.HELP)
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv=None) -> int:
    """Runs the command line; returns the exit status.

    Example (``export_dir`` written by `converters.export_stages`):

    >>> from keras_dynamic.cli import main
    >>> main(["inspect", str(export_dir)])  # doctest: +ELLIPSIS
    Chain 'digits_skip': 3 stages, 3 exits, 10 classes
    ...
    0
    """
    # Errors a user can fix: a refused export, bad data, a bad argument value.
    from keras_dynamic.runtime.errors import FileIntegrityError
    from keras_dynamic.runtime.errors import InputError
    from keras_dynamic.runtime.errors import ManifestError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ManifestError, FileIntegrityError, InputError, DataError, ValueError) as error:
        print(f"keras-dynamic {args.command}: error: {error}", file=sys.stderr)
        return 1


def entry_point():
    """The console script: ``sys.exit(main())``."""
    sys.exit(main())


__all__ = ["main", "build_parser"]
