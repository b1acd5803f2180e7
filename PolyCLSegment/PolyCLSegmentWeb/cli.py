"""``polycl-web --data DIR`` / ``python -m PolyCLSegmentWeb --data DIR``: options, then serve the page."""

from __future__ import annotations

import argparse
import contextlib
import logging
import shlex
import sys


def _choices(triples):
    return [value for value, _label, _tip in triples]


def parseArgs(argv=None):
    from .bootstrap import moduleDir

    moduleDir()
    from PolyCLSegmentLib import capabilities

    p = argparse.ArgumentParser(prog="polycl-web", description="PolyCL Segment in the browser (trame-slicer)")
    p.add_argument("--data", required=True, help="folder of CT (NIfTI/NRRD/MHA files, DICOM series folders); "
                   "the page opens files only from here and Save writes here")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    p.add_argument("--token", default=None, help="access token (required, or generated and printed, for any "
                   "host other than loopback)")
    p.add_argument("--mode", default="pipeline", choices=_choices(capabilities.SEGMENT_MODES), help="initial Segment mode")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--engine", default="auto", choices=_choices(capabilities.engineChoices()))
    p.add_argument("--max-upload-mb", type=int, default=1024, help="largest upload accepted (MB; 0: no uploads)")
    p.add_argument("--finetune-args", default="", help="extra arguments the server adds to every `polycl finetune` "
                   "it starts (e.g. \"--size 128\"); the page cannot change them")
    p.add_argument("--testing", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from pathlib import Path

    if not Path(args.data).is_dir():  # one line and exit 2, before the server starts
        p.error(f"--data {args.data}: {'not a folder' if Path(args.data).exists() else 'no such folder'}")
    return args


@contextlib.contextmanager
def quietViews():
    """VTK's warnings while the server makes its render windows off-screen ("bad X server connection"
    on a machine without a display, VTK deprecation notes): expected there, and not the user's concern.
    Warnings after start-up are shown as usual."""
    import vtk

    verbosity = vtk.vtkLogger.GetCurrentVerbosityCutoff()
    vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_ERROR)
    shown = vtk.vtkObject.GetGlobalWarningDisplay()
    vtk.vtkObject.GlobalWarningDisplayOff()
    try:
        yield
    finally:
        vtk.vtkObject.SetGlobalWarningDisplay(shown)
        vtk.vtkLogger.SetStderrVerbosity(verbosity)


def main(argv=None):
    from .app import PolyCLWebApp, log
    from .files import DataFolder
    from .routes import bind
    from .security import resolvePolicy

    args = parseArgs(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    data = DataFolder(args.data)
    policy = resolvePolicy(args.host, args.token)
    sys.argv = sys.argv[:1]  # trame reads its own options from sys.argv: it gets none, only ours below

    from trame.app import get_server

    server = get_server(None, client_type="vue3")
    with quietViews():
        app = PolyCLWebApp(server, data, policy, mode=args.mode, device=args.device, engine=args.engine,
                           testing=args.testing, maxUploadMb=args.max_upload_mb,
                           finetuneArgs=shlex.split(args.finetune_args))
    server.controller.on_server_bind.add(lambda wslinkServer: bind(app, wslinkServer))

    def ready(**_):
        print(f"PolyCL web: serving {data.root} on {args.host}:{server.port}; open {policy.url(server.port)}",
              flush=True)
        if policy.generated:
            print(f"PolyCL web: access token (generated): {policy.token}", flush=True)

    server.controller.on_server_ready.add(ready)
    server.start(host=args.host, port=args.port, open_browser=False, show_connection_info=False, timeout=0)
    app.shutdown()
