"""`havana ui`: start MLflow's UI on 127.0.0.1 and print the links that open each experiment's runs table."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HOST = "127.0.0.1"  # this machine only: the store holds paths and configs


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `ui` subcommand."""
    parser = subparsers.add_parser(
        "ui",
        help="start the MLflow UI on 127.0.0.1 and print the links to each experiment's runs table and saved views",
        description="Start `mlflow ui --backend-store-uri URI --host 127.0.0.1 --port PORT` and print, for every "
        "experiment (a dataset), the link that opens its runs table and the links of the views `havana runs` "
        "saved. Open those links: MLflow 3.17 opens an experiment picked from its experiments list on the "
        "GenAI overview, not on its runs. Ctrl-C stops the UI.",
    )
    parser.add_argument("--backend-store-uri", required=True, help="the store, e.g. sqlite:///results/mlflow.db")
    parser.add_argument("--port", type=int, default=5000, help="the UI's port (default 5000)")
    parser.add_argument("--no-server", action="store_true", help="print the links only (a UI already runs)")
    parser.set_defaults(func=run)


def server_command(store: str, port: int) -> list[str]:
    """The `mlflow ui` command line, with the mlflow of this Python."""
    mlflow = Path(sys.executable).with_name("mlflow")
    program = [str(mlflow)] if mlflow.is_file() else [sys.executable, "-m", "mlflow"]
    return [*program, "ui", "--backend-store-uri", store, "--host", HOST, "--port", str(port)]


def run(args: argparse.Namespace) -> int:
    """Print the links, then run the UI until it stops or Ctrl-C."""
    from havana.report.runs import ui_pages

    for what, page in ui_pages(args.backend_store_uri):
        print(f"{what}: http://{HOST}:{args.port}/{page}")
    sys.stdout.flush()
    if args.no_server:
        return 0
    server = subprocess.Popen(server_command(args.backend_store_uri, args.port))
    try:
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()
        server.wait()
        raise
