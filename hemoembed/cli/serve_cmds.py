"""``hemoembed serve``: the review app (upload cells, review predictions, correct labels, retrain)."""
from __future__ import annotations

import secrets
from pathlib import Path

import click

from . import main
from .common import NON_NEGATIVE, POSITIVE, POSITIVE_FLOAT, echo


@main.command()
@click.option("--store", "store_dir", type=click.Path(path_type=Path), required=True,
              help="Reference embedding store (its encoder is the one recorded by embed, or --encoder).")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True,
              help="A fit-svm output (or one column's folder) trained on STORE.")
@click.option("--map", "map_dir", type=click.Path(path_type=Path), default=None,
              help="A t-SNE map of STORE (hemoembed tsne STORE --out MAP) to place cells on.")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=Path("hemoembed-review"),
              show_default=True, help="Folder for uploads, the database and retrained models (kept across restarts).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; any non-loopback address needs --token or --generate-token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--token", default=None, envvar="HEMOEMBED_TOKEN",
              help="Access token: every /api call must send 'Authorization: Bearer TOKEN' (env HEMOEMBED_TOKEN).")
@click.option("--generate-token", is_flag=True, help="Generate a token and print it once.")
@click.option("--encoder", type=click.Path(path_type=Path), default=None,
              help="Encoder .keras or an adapter's encoder.json (default: the one recorded in the store).")
@click.option("--column", default=None, help="Which model of a multi-column fit-svm output.")
@click.option("--labels", multiple=True, type=click.Path(path_type=Path),
              help="Reference labels CSV (path + column) or class folders; default: those the SVM was fitted on.")
@click.option("--image-root", type=click.Path(path_type=Path), default=None,
              help="Folder the store's paths are relative to (default: the one recorded by embed).")
@click.option("-k", "k", type=click.IntRange(1, 100), default=10, show_default=True,
              help="Nearest reference cells shown per cell.")
@click.option("--max-file-mb", type=POSITIVE_FLOAT, default=20.0, show_default=True, help="Largest accepted file.")
@click.option("--max-pixels", type=click.IntRange(min=256), default=25_000_000, show_default=True,
              help="Largest accepted image (pixels; checked before decoding).")
@click.option("--max-files", type=POSITIVE, default=500, show_default=True, help="Most files per upload request.")
@click.option("--max-request-mb", type=POSITIVE_FLOAT, default=1024.0, show_default=True,
              help="Largest upload request (cut off with 413 as soon as the body passes it).")
@click.option("--label-studio-root", "label_studio_roots", multiple=True,
              type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Folder the Label Studio backend (/label-studio) may read task images from: Label Studio's "
                   "media/upload folder or its local-files document root (repeatable; none: data: URIs only).")
@click.option("--retrain-cv", type=NON_NEGATIVE, default=3, show_default=True,
              help="Cross-validation folds reported at each retrain (0: none, faster).")
def serve(store_dir: Path, model_dir: Path, map_dir: Path | None, data_dir: Path, host: str, port: int,
          token: str | None, generate_token: bool, encoder: Path | None, column: str | None, labels: tuple[Path, ...],
          image_root: Path | None, k: int, max_file_mb: float, max_pixels: int, max_files: int,
          max_request_mb: float, label_studio_roots: tuple[Path, ...], retrain_cv: int) -> None:
    """Start the review app: a browser UI and a JSON API (docs at /docs) on one port.

    A cell's nearest reference cells come from the store's approximate index when it has a current one
    (hemoembed store index STORE; milliseconds at a million cells), else from exact search.

    \b
    Example:
      hemoembed serve --store stores/pbc64 --model svm_pbc8 --map maps/pbc --data review
      hemoembed serve --store stores/pbc64 --model svm_pbc8 --host 0.0.0.0 --generate-token
    """
    from ..errors import InputError

    if generate_token:
        if token:
            raise InputError("give --token or --generate-token, not both")
        token = secrets.token_urlsafe(24)
    if token is not None and len(token) < 16:
        raise InputError("--token: use at least 16 characters (or --generate-token)")
    from ..app.hosts import is_loopback

    if not is_loopback(host) and token is None:
        raise InputError(f"--host {host} is reachable from other machines: add --token TOKEN or --generate-token")
    if (not 1 <= k <= 100 or max_file_mb <= 0 or max_pixels < 256 or max_files < 1 or max_request_mb <= 0
            or retrain_cv < 0):
        raise InputError("-k must be 1..100; --max-file-mb, --max-pixels (≥ 256), --max-files, --max-request-mb "
                         "must be positive; --retrain-cv ≥ 0")
    from ..app.reference import load_store_encoder, open_reference

    # store, model, labels and map are checked before the encoder (TensorFlow) and the server load
    reference = open_reference(store_dir, model_dir, map_dir, column=column, labels=labels, image_root=image_root)
    model, record, encoder_path = load_store_encoder(reference, encoder)
    from ..app.engine import Engine
    from ..app.intake import Limits
    from ..app.server import create_app

    limits = Limits(int(max_file_mb * 2**20), max_pixels, max_files, int(max_request_mb * 2**20))
    engine = Engine(reference, model, record, data_dir, limits=limits, k=k, retrain_cv=retrain_cv)
    app = create_app(engine, token=token, loopback_only=is_loopback(host), label_studio_roots=label_studio_roots)
    shown = f"[{host}]" if ":" in host else host
    echo(f"reference {store_dir}: {len(reference.store)} cells, {len(reference.labels)} labelled "
         f"({reference.column}), encoder {encoder_path}; map: {map_dir or 'none'}; data: {data_dir}")
    echo(f"neighbours: {reference.neighbour_search}")
    if generate_token:
        echo(f"access token (shown once): {token}")
    echo(f"review app on http://{shown}:{port}/  (API docs: /docs; Ctrl-C stops)")
    echo(f"Label Studio ML backend: http://{shown}:{port}/label-studio  (Model → Connect model)")
    run_server(app, engine, host, port)


def run_server(app, engine, host: str, port: int) -> None:
    """uvicorn in this process; the engine's worker starts with it and stops after the last request."""
    import uvicorn

    engine.start()
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        engine.stop()
