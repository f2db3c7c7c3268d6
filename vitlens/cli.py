"""The ``vitlens`` command: ``info``, ``app``, and the training and analysis commands."""
from __future__ import annotations

import argparse
import logging
import sys


def _info(args: argparse.Namespace) -> int:
    from .models.loading import load_model

    model = load_model(args.model)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.model}: {type(model).__name__}, {n_params / 1e6:.2f} M parameters")
    for k, v in getattr(model, "config", getattr(model, "vitlens_spec", {})).items():
        print(f"  {k}: {v}")
    print(f"  data_config: {model.data_config}")
    return 0


def _app(args: argparse.Namespace) -> int:
    """Replace this process by ``streamlit run app/main.py`` (so stopping it stops the server), configured
    through flags (port, upload cap) and ``VITLENS_APP_*`` variables the app reads (first model, runs folder)."""
    import os
    from pathlib import Path

    main = Path(__file__).resolve().parent.parent / "app" / "main.py"
    if not main.exists():
        raise FileNotFoundError(f"{main} not found: the app ships with the source tree; run `vitlens app` from an "
                                f"editable install (pip install -e .) of a vitlens clone")
    env = dict(os.environ, VITLENS_APP_MAX_UPLOAD_MB=str(args.max_upload_mb))
    if args.model:
        env["VITLENS_APP_MODEL"] = args.model
    if args.runs_dir:
        env["VITLENS_APP_RUNS_DIR"] = str(Path(args.runs_dir).expanduser().resolve())
    cmd = [sys.executable, "-m", "streamlit", "run", str(main), "--server.port", str(args.port),
           "--server.maxUploadSize", str(args.max_upload_mb), "--server.fileWatcherType", "none",
           "--browser.gatherUsageStats", "false",
           # Streamlit's first-run e-mail prompt would block `make app` on a fresh machine (and fail without a tty)
           "--server.showEmailPrompt", "false"]
    if args.headless:  # otherwise Streamlit decides: it opens a browser where there is a display
        cmd += ["--server.headless", "true"]
    print(f"vitlens app: http://localhost:{args.port}", flush=True)
    os.execve(sys.executable, cmd, env)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitlens", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="load a model and print its architecture and preprocessing")
    p.add_argument("model", help="timm:<name>, demo:<name>, a checkpoint file or a run directory")
    p.set_defaults(func=_info)

    p = sub.add_parser("app", help="start the Streamlit app")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--model", default=None, help="model to open first (default: the bundled demo:vit-fashion)")
    p.add_argument("--runs-dir", default=None, help="folder of run directories and checkpoints to offer (./runs)")
    p.add_argument("--max-upload-mb", type=int, default=20, help="largest upload accepted")
    p.add_argument("--headless", action="store_true", help="never open a browser (default: open one when there "
                   "is a display)")
    p.set_defaults(func=_app)

    from .train.commands import register; register(sub)  # pretrain, finetune, eval
    from .analysis.commands import register as register_analysis; register_analysis(sub)  # analyze ...
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ConnectionError, TypeError) as e:
        print(f"vitlens: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
