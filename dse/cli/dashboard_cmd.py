"""``dse study dashboard``: optuna-dashboard on a study database, with feasible-only best trials."""

from __future__ import annotations

import click

__all__ = ["dashboard"]


@click.command(help="Serve optuna-dashboard on a study database (best trials chosen among feasible ones).")
@click.option("--storage", default=None, metavar="URL",
              help="Database URL (default: $DSE_STORAGE, else sqlite:///dse.db here).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="Port to listen on.")
def dashboard(storage: str | None, host: str, port: int) -> None:
    """Serve the dashboard until Ctrl-C; it only reads the database."""
    from wsgiref.simple_server import make_server

    from dse.study.dashboard import dashboard_app
    from dse.study.storage import check_storage, open_optuna_storage
    from space.errors import StorageError

    target = check_storage(storage, create=False)
    app = dashboard_app(open_optuna_storage(target, create=False))
    try:
        server = make_server(host, port, app)
    except OSError as exc:
        raise StorageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    click.echo(f"optuna-dashboard on {target.display()}: http://{host}:{port}/ (Ctrl-C stops it)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
