"""Command line: ``python -m grader <command>``.

Each command lives in its own module and exposes ``add_arguments(parser)``
and ``main(args) -> int``; this file only wires them together.
"""

import argparse
import importlib
import sys

# command name -> (module, one-line help)
COMMANDS = {
    "selfcheck": ("grader.selfcheck", "run every lab's tests against reference/ or the stubs and check the score"),
    "distribute": ("grader.distribute", "write the student bundle or a GitHub Classroom workflow into dist/"),
    "bench": ("grader.bench", "measure what the plugin's diagnostics cost on each lab's reference suite"),
    "image": ("grader.image", "build the Docker runner image (ipclab-runner:<kit version>) or print its id"),
    "grade": ("grader.grade", "grade one submission in a locked-down container and write its reports"),
    "batch": ("grader.batch", "grade a whole class in parallel (resumable) and write its gradebook and summary"),
    "gradescope": ("grader.gradescope", "write dist/gradescope-<lab>.zip, a Gradescope autograder for one lab"),
    "demo": ("grader.demo", "grade a generated sample class of every lab and print where its summary is"),
    "worker": ("grader.cluster", "join a Dask cluster as a grading worker (checks Docker and the runner image first)"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """Only the chosen command's module is imported: ``selfcheck`` needs neither Docker nor Dask."""
    parser = argparse.ArgumentParser(prog="python -m grader", description="ipclab grader")
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(command)
            command.set_defaults(run=module.main)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
