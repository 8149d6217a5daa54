"""One module per ``livefoley`` subcommand.

Each module defines ``register(subparsers)``, which adds its parser and sets ``func`` (a callable
taking the parsed ``argparse.Namespace`` and returning an exit code).  Modules import heavy
dependencies (torch, av, …) inside ``func`` so that ``livefoley --help`` stays instant.  The CLI
discovers the modules in this folder, so a command exists exactly when its module does.
"""
