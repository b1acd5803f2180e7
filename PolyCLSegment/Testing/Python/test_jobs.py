"""Long work off the GUI thread: the persistent worker thread and core subprocesses (real processes)."""

from __future__ import annotations

import sys
from pathlib import Path
import textwrap
import time

import pytest


def test_worker_runs_jobs_in_order_reports_errors_and_cancels():
    from PolyCLSegmentLib.jobs.thread import Worker

    worker = Worker()
    try:
        threads = []

        def ok(job):
            import threading

            threads.append(threading.current_thread().name)
            job.progress(1, 2, "half")
            return 42

        def boom(job):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

        def slow(job):  # polycl's protocol: progress(done, total, message) and the job's cancel token
            from polycl.progress import Reporter

            report = Reporter(job.progress, job.token)
            for i in range(200):
                report(i, 200, "working")
                time.sleep(0.01)
            return "finished"

        a, b, c = worker.submit(ok), worker.submit(boom), worker.submit(slow)
        assert a.wait(10) and a.result == 42 and a.error is None and a.message == "half"
        assert b.wait(10) and "out of memory" in b.error and "CPU" in b.error
        time.sleep(0.05)
        c.cancel()
        assert c.wait(10) and c.cancelled and c.result is None
        d = worker.submit(ok)  # the same thread keeps serving after errors
        assert d.wait(10) and d.result == 42 and len(set(threads)) == 1
    finally:
        worker.shutdown()


def test_core_process_parses_progress_and_cancels(tmp_path):
    from PolyCLSegmentLib.jobs.process import CoreProcess

    script = tmp_path / "fake_train.py"
    script.write_text(textwrap.dedent("""
        import json, signal, sys, time
        def stop(*a):
            print("saving state", flush=True); sys.exit(130)
        signal.signal(signal.SIGINT, stop)
        sys.path.insert(0, sys.argv[1])
        from polycl.progress import json_lines   # the transport the polycl CLI uses
        progress = json_lines()
        for e in range(1, 1000):
            print("a plain log line", flush=True)
            progress(e, 1000, f"epoch {e}/1000: validation Dice 0.500")
            time.sleep(0.05)
    """))
    import polycl

    proc = CoreProcess([sys.executable, str(script), str(Path(polycl.__file__).parents[1])])
    deadline = time.monotonic() + 30
    while not proc.events and time.monotonic() < deadline:
        proc.poll()
        time.sleep(0.02)
    assert proc.events and proc.events[0]["event"] == "progress"
    assert 0 < proc.fraction < 0.1 and "validation Dice 0.500" in proc.message
    proc.cancel(grace=10)
    assert proc.wait(10) == 130 and proc.cancelled
    assert proc.lines[-1] == "saving state"


def test_cancel_ends_the_launchers_child_too(tmp_path):
    """PythonSlicer is a launcher: the polycl process is its child. Cancel must end both
    (signalling only the launcher would leave the child training). Here a launcher script starts a child
    that ignores SIGINT and SIGTERM (as a stuck CUDA call would), then waits for it."""
    from PolyCLSegmentLib.jobs.process import CoreProcess

    launcher = tmp_path / "launcher.py"
    launcher.write_text(textwrap.dedent("""
        import signal, subprocess, sys
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); print('child ready', flush=True); time.sleep(600)"])
        print("child", child.pid, flush=True)
        child.wait()
    """))
    proc = CoreProcess([sys.executable, str(launcher)])
    deadline = time.monotonic() + 30
    pids = []
    while not (pids and "child ready" in proc.lines) and time.monotonic() < deadline:
        proc.poll()
        pids = [int(line.split()[1]) for line in proc.lines if line.startswith("child ") and line.split()[1].isdigit()]
        time.sleep(0.02)
    child = pids[0]
    proc.cancel(grace=1)
    proc.wait(20)

    def alive(pid):
        try:
            state = open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0]
        except FileNotFoundError:
            return False
        return state != "Z"  # a zombie has ended; only its exit status is left for the reaper

    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child), "the launcher's child survived the cancel"


def test_finetune_subprocess_adds_model_to_list(ts, tmp_path, monkeypatch, module):
    """Logic.finetune runs the real `polycl finetune` in a subprocess (tiny: 1 epoch, 32 px)."""
    from polycl.errors import InputError

    home = tmp_path / "home"
    monkeypatch.setenv("POLYCL_HOME", str(home))
    case = tmp_path / "data" / "case1"
    case.mkdir(parents=True)
    (case / "image.nii.gz").symlink_to(ts / "example_ct_sm.nii.gz")
    (case / "label.nii.gz").symlink_to(ts / "example_seg_fast" / "liver.nii.gz")
    logic = module.PolyCLSegmentLogic()
    with pytest.raises(InputError):
        logic.finetune(tmp_path / "missing", "x")
    with pytest.raises(InputError):
        logic.finetune(tmp_path / "data", "bad name!")
    proc = logic.finetune(tmp_path / "data", "my-liver", target="1", epochs=1, device="cpu",
                          extraArgs=["--size", "32", "--no-augment"])
    assert proc.wait(300) == 0, "\n".join(proc.lines[-20:])
    epochs = [e["message"] for e in proc.events if "validation Dice" in e["message"]]
    assert epochs and epochs[0].startswith("epoch 1/1: loss") and proc.fraction == pytest.approx(1.0)
    assert proc.message.startswith("fine-tuning finished: best validation Dice")
    models = {m["name"]: m for m in logic.listModels()}
    assert "my-liver" in models and models["my-liver"]["source"] == "user"
    assert "scores" in models["my-liver"]["tooltip"]


def test_dependencies_present_means_no_question():
    from PolyCLSegmentLib import dependencies

    for feature in ("segment", "refine", "propagate", "finetune", "batch"):
        assert dependencies.missing(feature) == (False, []), feature
    asked = []
    assert dependencies.ensure("refine", lambda message: asked.append(message) or False) is True
    assert asked == []  # nothing missing: no confirmation, nothing installed


def test_module_self_test_runs_under_the_harness(scene, module):
    """The in-Slicer ScriptedLoadableModuleTest, run here on real MRML (slicer-core)."""
    test = module.PolyCLSegmentTest()
    test.runTest()


def test_installer_asks_for_missing_packages_with_polycls_bounds(monkeypatch):
    """What the first-use installer would pip-install comes from polycl/requirements/*.txt (the
    bounds pyproject.toml uses), never polycl itself (it ships inside the extension)."""
    from PolyCLSegmentLib import dependencies

    monkeypatch.setitem(dependencies.IMPORT_NAMES, "scikit-image", "skimage_not_installed_here")
    monkeypatch.setitem(dependencies.IMPORT_NAMES, "openvino", "openvino_not_installed_here")
    needTorch, reqs = dependencies.missing("refine")
    assert not needTorch
    assert reqs == ["scikit-image>=0.22,<0.27", "openvino>=2025.1,<2027"]
    names = {dependencies.requirementName(r) for g in ("core", "sam") for r in dependencies.requirements(g)}
    assert "torch" in names and not names & {"polycl", "polycl-core"}  # torch is required, polycl never pip-installed
    # torch missing: it is flagged for the PyTorch extension, and never in the pip list
    installed = dependencies._installed
    monkeypatch.setattr(dependencies, "_installed", lambda name: name not in ("torch", "torchvision") and installed(name))
    needTorch, reqs = dependencies.missing("refine")
    assert needTorch and not {dependencies.requirementName(r) for r in reqs} & {"torch", "torchvision"}


def _poll_until_finished(runner, timeout: float = 120.0):
    updates = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        update = runner.poll()
        updates.append(update)
        if update is None or update.finished:
            return updates
        time.sleep(0.02)
    raise TimeoutError("the job did not finish")


def test_job_runner_writes_when_polled_and_a_cancel_changes_nothing(scene, ts, module, tiny_model):
    """The panel's (and any front end's) job machinery on the real Logic and real MRML: the result
    is written by poll() on this thread, never by the worker; a cancelled job writes nothing."""
    import slicer

    from conftest import load_volume_node
    from PolyCLSegmentLib import conversions
    from PolyCLSegmentLib.jobs import JobRunner

    logic = module.PolyCLSegmentLogic()
    ct = load_volume_node(ts / "example_ct_sm.nii.gz", name="ct")
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    runner = JobRunner()
    done = []
    try:
        request = logic.prepareSegment(ct, seg, model=str(tiny_model), prior="off", mode="unet", device="cpu")
        runner.start("segment", logic.computeSegment, request, apply=logic.applyOutcome, onDone=done.append)
        assert runner.busy
        with pytest.raises(RuntimeError, match="still running"):
            runner.start("segment", logic.computeSegment, request, apply=logic.applyOutcome)
        updates = _poll_until_finished(runner)
        last = updates[-1]
        assert last.finished and last.error is None and not runner.busy and runner.poll() is None
        assert done == [last.value] and conversions.segmentArray(seg, last.value, ct).any()
        assert "mode unet" in last.message

        def computeOnceCancelled(request, progress, cancel):  # the Cancel button is pressed first
            while not cancel.cancelled:
                time.sleep(0.01)
            return logic.computeSegment(request, progress, cancel)

        request = logic.prepareSegment(ct, seg, model=str(tiny_model), prior="off", mode="unet", device="cpu")
        runner.start("segment", computeOnceCancelled, request, apply=logic.applyOutcome, onDone=done.append)
        runner.cancel()
        last = _poll_until_finished(runner)[-1]
        assert last.cancelled and "nothing was changed" in last.message
        assert seg.GetSegmentation().GetNumberOfSegments() == 1 and len(done) == 1

        request = logic.prepareSegment(ct, seg, model=str(tiny_model), prior="off", mode="unet", device="cpu")
        slicer.mrmlScene.RemoveNode(seg)  # removed while computing: a clear error, nothing written
        runner.start("segment", logic.computeSegment, request, apply=logic.applyOutcome, onDone=done.append)
        last = _poll_until_finished(runner)[-1]
        assert last.finished and "removed" in last.error and len(done) == 1
    finally:
        runner.shutdown()


def test_job_runner_follows_a_core_process_to_its_error(tmp_path):
    from PolyCLSegmentLib.jobs import JobRunner
    from PolyCLSegmentLib.jobs.process import CoreProcess

    script = tmp_path / "fails.py"
    script.write_text('import sys\nprint("polycl finetune: error: no labelled cases in /x", flush=True)\nsys.exit(2)\n')
    runner = JobRunner()
    runner.startProcess("fine-tuning", CoreProcess([sys.executable, str(script)]), onDone=lambda p: 1 / 0)
    last = _poll_until_finished(runner, 30)[-1]
    assert last.finished and last.error == "fine-tuning failed: polycl finetune: error: no labelled cases in /x"
    assert last.value.returncode == 2  # onDone (which would raise) is not called on failure
