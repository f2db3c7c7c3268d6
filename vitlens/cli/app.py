"""``vitlens app``: the Streamlit app, configured through flags."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _app(args: argparse.Namespace) -> int:
    """Replace this process by ``streamlit run app/main.py`` (so stopping it stops the server), configured
    through flags (address, port, upload cap) and ``VITLENS_APP_*`` variables the app reads (first model, runs
    folder, whether visitors may load local paths)."""
    main = Path(__file__).resolve().parents[2] / "app" / "main.py"
    if not main.exists():
        raise FileNotFoundError(f"{main} not found: the app ships with the source tree; run `vitlens app` from an "
                                f"editable install (pip install -e .) of a vitlens clone")
    if args.max_upload_mb < 1:
        raise ValueError(f"--max-upload-mb {args.max_upload_mb}: the upload cap must be at least 1 (MB)")
    env = dict(os.environ, VITLENS_APP_MAX_UPLOAD_MB=str(args.max_upload_mb))
    # only this flag opens the server's files to visitors, never a variable left over in the environment
    env.pop("VITLENS_APP_ALLOW_LOCAL_PATHS", None)
    if args.allow_local_paths:
        env["VITLENS_APP_ALLOW_LOCAL_PATHS"] = "1"
    if args.model:
        env["VITLENS_APP_MODEL"] = args.model
    if args.runs_dir:
        env["VITLENS_APP_RUNS_DIR"] = str(Path(args.runs_dir).expanduser().resolve())
    cmd = [sys.executable, "-m", "streamlit", "run", str(main), "--server.address", args.host,
           "--server.port", str(args.port), "--server.maxUploadSize", str(args.max_upload_mb),
           "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
           "--client.toolbarMode", "minimal",  # no Deploy button: the app is a lab, not something to publish
           # Streamlit's first-run e-mail prompt would block `make app` on a fresh machine (and fail without a tty)
           "--server.showEmailPrompt", "false"]
    if args.headless:  # otherwise Streamlit decides: it opens a browser where there is a display
        cmd += ["--server.headless", "true"]
    host = f"[{args.host}]" if ":" in args.host else args.host  # an IPv6 address goes in brackets in a URL
    print(f"vitlens app: http://{host}:{args.port}", flush=True)
    os.execve(sys.executable, cmd, env)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="start the Streamlit app")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only; "
                   "0.0.0.0 serves every network interface)")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--model", default=None, help="model to open first (default: the bundled demo:vit-fashion)")
    p.add_argument("--runs-dir", default=None, help="folder of run directories and checkpoints to offer (./runs)")
    p.add_argument("--allow-local-paths", action="store_true", help="let visitors load any model file the server "
                   "can read (default: bundled models, timm:<name>, and the runs under --runs-dir only)")
    p.add_argument("--max-upload-mb", type=int, default=20, help="largest upload accepted")
    p.add_argument("--headless", action="store_true", help="never open a browser (default: open one when there "
                   "is a display)")
    p.set_defaults(func=_app)
