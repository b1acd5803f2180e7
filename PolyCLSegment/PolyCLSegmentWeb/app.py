"""PolyCL Segment in the browser: a trame-slicer page on the module's own ``PolyCLSegmentLogic``.

One Python process holds a real MRML scene (trame-slicer's ``SlicerApp``: slicer-core's MRML, slice
and 3D views rendered off screen and streamed to the page, the Segment Editor's effects), and the
module's Logic works on that scene exactly as it does inside Slicer:

* ``slicer.mrmlScene`` and ``slicer.modules.<name>.logic()`` point at trame-slicer's scene and
  logics; Qt, ctk and the ScriptedLoadableModule base classes are stood in for by the same harness
  the module's tests use (``Testing/slicer_harness.py``), so ``PolyCLSegment.py`` is imported
  unchanged;
* Segment, Refine and Propagate run as in the Slicer panel: ``prepare*`` on the event loop's thread
  (reads MRML), ``compute*`` on the module's worker thread (``PolyCLSegmentLib.jobs.JobRunner``),
  polled from an asyncio task that updates the progress bar; ``applyOutcome`` back on the loop's
  thread; Cancel is the job's token; Undo is the Logic's undo;
* the page reaches ``polycl`` only through the Logic (and the module's own PolyCLSegmentLib
  helpers): nothing in this package imports ``polycl`` (a test checks it).

Run: ``bash Testing/web.sh --data DIR`` (or ``python -m PolyCLSegmentWeb`` from ``PolyCLSegment/``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

from .files import DataFolder
from .security import AccessPolicy, aiohttpMiddleware, resolvePolicy

HERE = Path(__file__).resolve().parent
MODULE_DIR = HERE.parent
ROOT = MODULE_DIR.parent



def panelChoices() -> dict[str, list[dict]]:
    """The mode, device and engine choices of the Slicer panel (PolyCLSegmentLib.backends), as
    {"title", "value"} items for the page's selects."""
    if str(MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(MODULE_DIR))
    from PolyCLSegmentLib import backends

    def items(triples):
        return [{"title": label, "value": value} for value, label, _tip in triples]

    return {"modes": items(backends.SEGMENT_MODES), "devices": items(backends.deviceChoices()),
            "engines": items(backends.engineChoices())}


UPLOAD_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")

log = logging.getLogger("polycl.web")


def preloadTorch() -> None:
    """Import torch's compiler stack (and so triton) before VTK makes its first OpenGL context.

    Off screen, VTK renders with Mesa (llvmpipe), which loads the system's LLVM; triton bundles its
    own. Loaded in that order, importing triton later (torch does it on the first model load, on
    the worker thread) crashes the process (seen here: SIGSEGV in triton/knobs.py). Loaded first, both work."""
    try:
        import torch._dynamo  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - no torch: Segment will say so
        log.warning("torch could not be imported: %s", exc)


def bootstrapSlicer() -> None:
    """Make ``import PolyCLSegment`` work without Slicer's Qt application (the tests' harness)."""
    for p in (MODULE_DIR, ROOT / "Testing"):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    from slicer_harness import install

    install()


def wireLogicToScene(slicerApp) -> None:
    """Point the globals the Logic uses at trame-slicer's scene and module logics."""
    import slicer

    markups = slicerApp.markups_logic
    markups = getattr(markups, "_logic", markups)
    slicer.mrmlScene = slicerApp.scene
    slicer.modules = SimpleNamespace(
        segmentations=SimpleNamespace(logic=lambda: slicerApp.segmentations_logic),
        volumes=SimpleNamespace(logic=lambda: slicerApp.volumes_logic),
        markups=SimpleNamespace(logic=lambda: markups),
    )


class PolyCLWebApp:
    """The page: trame-slicer's views and Segment Editor, plus the PolyCL panel."""

    def __init__(self, server, data: DataFolder, policy: AccessPolicy, *, mode: str = "pipeline",
                 device: str = "auto", engine: str = "auto", testing: bool = False, maxUploadMb: int = 1024,
                 finetuneArgs=()):
        preloadTorch()
        from trame_slicer import module as trameSlicerModule
        from trame_slicer.app.logic import SegmentEditorLogic
        from trame_slicer.core import LayoutManager, SlicerApp
        from trame_slicer.rca_view import register_rca_factories

        bootstrapSlicer()
        self.server = server
        self.state = server.state
        self.data = data
        self.policy = policy
        self.testing = testing
        self.maxUploadMb = int(maxUploadMb)
        self._uploadFiles: list = []
        self.finetuneArgs = [str(a) for a in finetuneArgs]
        self.boxNode = None  # the ROI markup drawn with the Box tool (Refine's box prompt)
        self._boxStart = None
        self._boxTags: dict = {}
        self.downloads: dict[str, Path] = {}  # what the last Save wrote: file name -> path (the download route)
        server.enable_module(trameSlicerModule)

        self.slicerApp = SlicerApp()
        wireLogicToScene(self.slicerApp)

        import PolyCLSegment
        from PolyCLSegmentLib.jobs import JobRunner

        self.logic = PolyCLSegment.PolyCLSegmentLogic()
        self.runner = JobRunner()
        self.volumeNode = None
        self.entry = None
        self._pollTask = None
        self._sliceObserver = None

        register_rca_factories(self.slicerApp.view_manager, server)
        # views first: the Segment Editor's effects make their per-view pipelines when their parameter
        # nodes are added, and a pipeline made while its view is still being built gets no view
        self.layoutManager = LayoutManager(self.slicerApp.scene, self.slicerApp.view_manager, server)
        self.layoutManager.register_layout("PolyCL", self._layout())
        self.editorLogic = SegmentEditorLogic(server, self.slicerApp)

        s = self.state
        s.trame__title = "PolyCL Segment"
        s.polycl_files = [{"title": e.title, "value": e.name} for e in data.listImages()]
        s.polycl_file = s.polycl_files[0]["value"] if s.polycl_files else None
        s.polycl_loaded = ""
        s.polycl_models = self._models()
        s.polycl_model = s.polycl_models[0]["value"] if s.polycl_models else None
        choices = panelChoices()
        s.polycl_modes, s.polycl_mode = choices["modes"], mode
        s.polycl_devices, s.polycl_device = choices["devices"], device
        s.polycl_engines, s.polycl_engine = choices["engines"], engine
        s.polycl_busy = False
        s.polycl_task = ""
        s.polycl_progress = 0
        s.polycl_message = "Pick a CT from the data folder and click Load."
        s.polycl_error = ""
        s.polycl_can_undo = False
        s.polycl_slice = 0
        s.polycl_nslices = 0
        s.polycl_goto = ""
        s.polycl_done_count = 0  # goes up after each finished operation (tests wait on it)
        s.polycl_box_mode = False
        s.polycl_has_box = False
        s.polycl_downloads = []
        s.polycl_ft_folders = data.listLabelledFolders()
        s.polycl_ft_folder = s.polycl_ft_folders[0] if s.polycl_ft_folders else None
        s.polycl_ft_name = "my-liver"
        s.polycl_ft_target = "liver"
        s.polycl_ft_epochs = "30"

        self._buildUi()
        self.editorLogic.set_ui(self.editorUi)
        self._brushDefaults()
        self.layoutManager.set_layout("PolyCL")
        self.state.change("polycl_goto")(self._onGoto)
        self._installBoxTool()

    # ------------------------------------------------------------------ UI
    @staticmethod
    def _layout():
        from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

        return Layout(LayoutDirection.Horizontal, [
            ViewLayoutDefinition.axial_view(),
            Layout(LayoutDirection.Vertical, [ViewLayoutDefinition.threed_view(), ViewLayoutDefinition.sagittal_view(),
                                              ViewLayoutDefinition.coronal_view()]),
        ])

    def _models(self):
        try:
            return [{"title": m["name"] + ("" if m["available"] else " (missing)"), "value": m["name"]}
                    for m in self.logic.listModels()]
        except Exception as exc:  # noqa: BLE001 - shown in the page
            log.warning("no models: %s", exc)
            return []

    def _buildUi(self):
        from trame.widgets import html
        from trame.widgets import vuetify3 as v
        from trame_slicer.app.ui import (SegmentEditorToolbarUI, SegmentEditorUI, SegmentEditorUndoRedoUI,
                                         ViewerLayout)

        busy = "polycl_busy"
        noCt = "!polycl_loaded || polycl_busy"
        with ViewerLayout(self.server, title="PolyCL Segment", is_drawer_visible=True) as self.ui:
            self.ui.title.set_text("PolyCL Segment")
            with self.ui.drawer:
                with v.VCard(variant="flat", classes="pa-2", id="polycl-panel"):
                    with html.Div(classes="d-flex align-center"):
                        v.VSelect(id="polycl-ct", label="CT (data folder)", items=("polycl_files",),
                                  v_model=("polycl_file",), density="compact", hide_details=True, disabled=(busy,))
                        v.VBtn("Load", id="polycl-load", click=self.onLoad, disabled=(busy,), classes="ml-2",
                               size="small", variant="tonal")
                    if self.maxUploadMb > 0:
                        chunk = self.server.trigger_name(self._uploadChunk)
                        limit = self.maxUploadMb * 1_000_000
                        v.VFileInput(
                            id="polycl-upload", label=f"Upload a CT into the data folder (max {self.maxUploadMb} MB)",
                            accept=",".join(UPLOAD_SUFFIXES), density="compact", hide_details=True, classes="mt-2",
                            prepend_icon="mdi-file-upload", disabled=(busy,), clearable=False,
                            change=(
                                "const f = $event.target.files;\n"
                                "if (!f || !f.length) { return; }\n"
                                f"if (f[0].size > {limit}) {{ polycl_error = 'the file is larger than the upload limit "
                                f"({self.maxUploadMb} MB)'; return; }}\n"
                                f"polycl_busy = true; polycl_message = 'uploading ' + f[0].name;\n"
                                f"window.load_files_by_chunks([f[0]], {{ trigger_name: '{chunk}' }})"
                                ".finally(() => { polycl_busy = false; });"))
                    v.VSelect(label="Model", items=("polycl_models",), v_model=("polycl_model",), density="compact",
                              hide_details=True, classes="mt-2", disabled=(busy,), id="polycl-model")
                    with html.Div(classes="d-flex mt-2"):
                        v.VSelect(label="Mode", items=("polycl_modes",), v_model=("polycl_mode",), density="compact",
                                  hide_details=True, disabled=(busy,), id="polycl-mode")
                        v.VSelect(label="Device", items=("polycl_devices",), v_model=("polycl_device",),
                                  density="compact", hide_details=True, disabled=(busy,), classes="ml-2",
                                  style="max-width: 90px;", id="polycl-device")
                    with html.Div(classes="d-flex flex-wrap mt-2", style="gap: 6px;"):
                        for label, ident, handler, icon in (
                                ("Segment", "polycl-segment", self.onSegment, "mdi-auto-fix"),
                                ("Refine", "polycl-refine", self.onRefine, "mdi-creation"),
                                ("Paint", "polycl-paint", self.onPaint, "mdi-brush"),
                                ("Propagate", "polycl-propagate", self.onPropagate, "mdi-layers-triple"),
                                ("Save", "polycl-save", self.onSave, "mdi-content-save")):
                            v.VBtn(label, id=ident, click=handler, disabled=(noCt,), size="small", variant="tonal",
                                   prepend_icon=icon)
                        v.VBtn("Undo", id="polycl-undo", click=self.onUndo, disabled=("!polycl_can_undo || polycl_busy",),
                               size="small", variant="tonal", prepend_icon="mdi-undo")
                        v.VBtn("Box", id="polycl-box", click=self.onBoxTool, disabled=(noCt,), size="small",
                               variant=("polycl_box_mode ? 'flat' : 'tonal'",),
                               color=("polycl_box_mode ? 'primary' : undefined",), prepend_icon="mdi-vector-square")
                        v.VBtn("Clear box", id="polycl-clear-box", click=self.onClearBox,
                               disabled=("!polycl_has_box || polycl_busy",), size="small", variant="tonal",
                               prepend_icon="mdi-vector-square-remove")
                    v.VSelect(label="Propagation engine", items=("polycl_engines",), v_model=("polycl_engine",),
                              density="compact", hide_details=True, classes="mt-2", disabled=(busy,))
                    with html.Div(classes="d-flex align-center mt-2"):
                        v.VTextField(label="Red slice (k)", v_model=("polycl_goto",), density="compact",
                                     hide_details=True, id="polycl-slice", disabled=(noCt,),
                                     placeholder=("`${polycl_slice}`",), style="max-width: 130px;")
                        html.Span("{{ polycl_slice }} / {{ polycl_nslices - 1 }}", id="polycl-slice-now",
                                  classes="ml-2 text-caption")
                    with html.Div(v_if=("polycl_downloads.length",), id="polycl-downloads", classes="mt-2 text-caption"):
                        html.Span("Download: ")
                        html.A("{{ d.name }}", v_for="d in polycl_downloads", key="d.name", href=("d.href",),
                               download=("d.name",), classes="mr-2 polycl-download")
                    v.VDivider(classes="my-2")
                    html.Div("Fine-tune on a labelled folder (imagesTr/ + labelsTr/, or <case>/image.* + label.*)",
                             classes="text-caption")
                    v.VSelect(label="Labelled folder", items=("polycl_ft_folders",), v_model=("polycl_ft_folder",),
                              density="compact", hide_details=True, classes="mt-1", disabled=(busy,),
                              id="polycl-ft-folder", no_data_text="no labelled folder under the data folder")
                    with html.Div(classes="d-flex mt-2", style="gap: 6px;"):
                        v.VTextField(label="New model name", v_model=("polycl_ft_name",), density="compact",
                                     hide_details=True, disabled=(busy,), id="polycl-ft-name")
                        v.VTextField(label="Target", v_model=("polycl_ft_target",), density="compact",
                                     hide_details=True, disabled=(busy,), id="polycl-ft-target",
                                     style="max-width: 90px;")
                        v.VTextField(label="Epochs", v_model=("polycl_ft_epochs",), density="compact",
                                     hide_details=True, disabled=(busy,), id="polycl-ft-epochs",
                                     style="max-width: 70px;")
                    v.VBtn("Fine-tune", id="polycl-finetune", click=self.onFinetune,
                           disabled=("!polycl_ft_folder || polycl_busy",), size="small", variant="tonal",
                           classes="mt-2", prepend_icon="mdi-school")
                    with html.Div(v_show=(busy,), classes="mt-2", id="polycl-busy"):
                        v.VProgressLinear(model_value=("polycl_progress",), height=10, color="primary",
                                          id="polycl-progress")
                        v.VBtn("Cancel", id="polycl-cancel", click=self.onCancel, size="small", color="warning",
                               variant="tonal", classes="mt-1", prepend_icon="mdi-cancel")
                    html.Span("{{ polycl_done_count }}", id="polycl-done", style="display: none;")
                    html.Div("{{ polycl_message }}", id="polycl-message", classes="text-caption mt-2",
                             style="white-space: pre-wrap;")
                    v.VAlert(v_if=("polycl_error",), text=("polycl_error",), type="error", density="compact",
                             classes="mt-2", id="polycl-error", closable=True,
                             click_close="polycl_error = ''")
                v.VDivider()
                self.editorUi = SegmentEditorUI()
            with self.ui.toolbar:
                SegmentEditorToolbarUI(editor_ui=self.editorUi)
            with self.ui.undo_redo:
                SegmentEditorUndoRedoUI(editor_ui=self.editorUi)
            with self.ui.content:
                self.layoutManager.initialize_layout_grid(self.ui)

    # ------------------------------------------------------------------ helpers
    @property
    def editor(self):
        return self.slicerApp.segmentation_editor

    @property
    def segmentationNode(self):
        return self.editor.active_segmentation_node

    def _say(self, message: str = "", error: str = ""):
        with self.state:
            if message:
                self.state.polycl_message = message
            self.state.polycl_error = error
            self.state.polycl_can_undo = bool(self.segmentationNode is not None and
                                              self.logic.canUndo(self.segmentationNode))

    def _refresh(self):
        self.editor.trigger_all_signals()
        for view in self.slicerApp.view_manager.get_views():
            view.schedule_render()
        self._say()

    def _redSliceNode(self):
        view = self.slicerApp.view_manager.get_view("Red")
        return view.get_view_node() if view is not None else None

    def redSliceIndex(self) -> int:
        from PolyCLSegmentLib import prompts

        node = self._redSliceNode()
        m = node.GetSliceToRAS()
        return prompts.sliceIndexAtRas(self.volumeNode, [m.GetElement(r, 3) for r in range(3)])

    def _onSliceModified(self, *_):
        if self.volumeNode is None:
            return
        k = self.redSliceIndex()
        if k != self.state.polycl_slice:
            with self.state:
                self.state.polycl_slice = k

    def goToSlice(self, k: int):
        from PolyCLSegmentLib import conversions

        dims = self.volumeNode.GetImageData().GetDimensions()
        k = max(0, min(int(k), dims[2] - 1))
        ras = conversions.ijkToRasArray(self.volumeNode) @ [(dims[0] - 1) / 2, (dims[1] - 1) / 2, k, 1.0]
        self._redSliceNode().JumpSliceByOffsetting(*ras[:3])
        self._onSliceModified()

    def _onGoto(self, polycl_goto=None, **_):
        if self.volumeNode is None or polycl_goto in (None, ""):
            return
        try:
            self.goToSlice(int(str(polycl_goto).strip()))
        except ValueError:
            self._say(error=f"slice index: {polycl_goto!r} is not a number")

    # ------------------------------------------------------------------ actions
    def onLoad(self):
        if self.runner.busy:
            return self._say(error="an operation is running; cancel it first")
        try:
            entry, files = self.data.resolve(self.state.polycl_file)
        except (PermissionError, FileNotFoundError) as exc:
            return self._say(error=str(exc))
        self._unload()
        volumes = self.slicerApp.io_manager.load_volumes(files)
        if not volumes:
            return self._say(error=f"could not read {entry.title}")
        self.volumeNode, self.entry = volumes[0], entry
        dm = self.slicerApp.display_manager
        dm.show_volume_in_slice_background(self.volumeNode)
        dm.show_volume_in_slice_foreground(None)
        dm.reset_views()
        self.editorLogic.data.segment_display.show_3d = True
        self.editorLogic.on_volume_changed(self.volumeNode)
        self.editor.set_surface_representation_enabled(True)
        node = self._redSliceNode()
        if self._sliceObserver is not None:
            node.RemoveObserver(self._sliceObserver)
        import vtk

        self._sliceObserver = node.AddObserver(vtk.vtkCommand.ModifiedEvent, self._onSliceModified)
        dims = self.volumeNode.GetImageData().GetDimensions()
        with self.state:
            self.state.polycl_loaded = entry.name
            self.state.polycl_nslices = dims[2]
        self._onSliceModified()
        self._say(f"Loaded {entry.title}: {dims[0]} x {dims[1]} x {dims[2]} voxels.")

    async def _uploadChunk(self, files):
        """Chunks of an upload (trame-slicer's chunked loader); an empty list ends it."""
        if files:
            self._uploadFiles.extend(files)
            if sum(int(f.get("size") or 0) for f in self._uploadFiles) > self.maxUploadMb * 1_000_000:
                self._uploadFiles = []
                self._say(error=f"upload refused: larger than {self.maxUploadMb} MB")
            return
        received, self._uploadFiles = self._uploadFiles, []
        if received:
            self.acceptUpload(received[0])

    def acceptUpload(self, fileState: dict):
        """Store an uploaded image under ``<data>/uploads/``, load it, and keep it only if the Logic
        accepts it as CT (the same check as Segment's); otherwise remove it again and say why."""
        from trame.app.file_upload import ClientFile

        upload = ClientFile(fileState)
        name = Path(str(upload.name or "")).name.replace(" ", "_")
        if not name.lower().endswith(UPLOAD_SUFFIXES) or name.startswith("."):
            return self._say(error=f"upload refused: {name!r} is not a NIfTI, NRRD or MHA file "
                             f"({', '.join(UPLOAD_SUFFIXES)})")
        content = upload.content or b""
        if not content or len(content) > self.maxUploadMb * 1_000_000:
            return self._say(error="upload refused: empty, or larger than the limit")
        folder = self.data.root / "uploads"
        folder.mkdir(exist_ok=True)
        target = folder / name
        stem, suffix = name, ""
        for sfx in UPLOAD_SUFFIXES:
            if name.lower().endswith(sfx):
                stem, suffix = name[: -len(sfx)], name[-len(sfx):]
                break
        n = 1
        while target.exists():
            target, n = folder / f"{stem}-{n}{suffix}", n + 1
        partial = folder / f".partial-{target.name}"
        partial.write_bytes(content)
        os.replace(partial, target)
        relName = target.relative_to(self.data.root).as_posix()
        self.refreshFiles(select=relName)
        self.onLoad()
        ok = self.volumeNode is not None and self.state.polycl_loaded == relName
        why = self.state.polycl_error or "it could not be read"
        if ok:
            try:  # the Logic's own check (CT intensities, 3D scalar volume), as Segment would run it
                self.logic.prepareSegment(self.volumeNode, None, model=self.state.polycl_model, mode="unet",
                                          device="cpu")
            except Exception as exc:  # noqa: BLE001 - the Logic's message
                ok, why = False, str(exc)
        if not ok:
            self._unload()
            target.unlink(missing_ok=True)
            self.refreshFiles()
            return self._say("Upload removed.", error=f"upload refused: {why}")
        self._say(f"Uploaded and loaded {relName}.")

    def refreshFiles(self, select: str | None = None):
        with self.state:
            self.state.polycl_files = [{"title": e.title, "value": e.name} for e in self.data.listImages()]
            names = [f["value"] for f in self.state.polycl_files]
            if select in names:
                self.state.polycl_file = select
            elif self.state.polycl_file not in names:
                self.state.polycl_file = names[0] if names else None
            self.state.polycl_ft_folders = self.data.listLabelledFolders()
            if self.state.polycl_ft_folder not in self.state.polycl_ft_folders:
                self.state.polycl_ft_folder = (self.state.polycl_ft_folders or [None])[0]

    def _unload(self):
        scene = self.slicerApp.scene
        self.editor.clear()
        for node in [self.volumeNode, *list(scene.GetNodesByClass("vtkMRMLSegmentationNode"))]:
            if node is not None and scene.IsNodePresent(node):
                scene.RemoveNode(node)
        self.volumeNode = self.entry = None
        self._removeBox()
        with self.state:
            self.state.polycl_loaded = ""
            self.state.polycl_box_mode = False
            self.state.polycl_downloads = []
        self.downloads = {}

    def _start(self, name: str, prepare, compute, onDone=None):
        if self.runner.busy:
            return self._say(error="an operation is running; cancel it first")
        try:
            request = prepare()
        except Exception as exc:  # noqa: BLE001 - the Logic's PolyCLError (bad input) or any failure: a message
            log.info("%s refused: %s", name, exc)
            return self._say(error=str(exc))
        self.editor.deactivate_effect()
        self.runner.start(name, compute, request, apply=self.logic.applyOutcome, onDone=onDone or self._selectSegment)
        self._started(name)

    def _started(self, name: str):
        with self.state:
            self.state.polycl_busy, self.state.polycl_task, self.state.polycl_progress = True, name, 0
            self.state.polycl_error = ""
            self.state.polycl_box_mode = False
            self.state.polycl_message = f"{name}: starting"
        from trame_server.utils.asynchronous import create_task

        self._pollTask = create_task(self._poll())

    async def _poll(self):
        while True:
            update = self.runner.poll()
            if update is None:
                break
            with self.state:
                self.state.polycl_progress = round(100 * update.fraction, 1)
                self.state.polycl_message = f"{update.name}: {update.message}" if update.message else update.name
            if update.finished:
                if update.error:
                    log.warning("%s failed: %s", update.name, update.detail)
                if self.volumeNode is not None:
                    self._refresh()
                if not update.error and not update.cancelled and self.volumeNode is not None:
                    for view in self.slicerApp.view_manager.get_threed_views():
                        view.reset_camera()
                        view.schedule_render()
                with self.state:
                    self.state.polycl_busy = False
                    self.state.polycl_error = update.error or ""
                    self.state.polycl_message = (f"{update.name}: {update.message}" if not update.error
                                                 else f"{update.name} failed; nothing was changed")
                    self.state.polycl_done_count += 1
                break
            await asyncio.sleep(0.2)

    def _selectSegment(self, segmentId):
        if self.editor.undo_stack is not None:  # paint strokes before the result can no longer be undone one by one
            self.editor.undo_stack.clear()
        if segmentId:
            self.editor.set_active_segment_id(segmentId)

    def onSegment(self):
        s = self.state
        self._start("Segment", lambda: self.logic.prepareSegment(
            self.volumeNode, self.segmentationNode, model=s.polycl_model, mode=s.polycl_mode,
            device=s.polycl_device), self.logic.computeSegment)

    def onRefine(self):
        """SAM on the selected segment (automatic boxes from its mask) and/or on the box drawn with the Box tool."""
        s = self.state
        rois = [self.boxNode] if self._hasBox() else None
        self._start("Refine", lambda: self.logic.prepareRefine(
            self.volumeNode, self.segmentationNode, self.editor.active_segment_id or None, roiNodes=rois,
            device=s.polycl_device), self.logic.computeRefine)

    # ------------------------------------------------------------------ Box tool (Refine's drawn box)
    def _hasBox(self) -> bool:
        return self.boxNode is not None and self.slicerApp.scene.IsNodePresent(self.boxNode)

    def _installBoxTool(self):
        """Observe the red view's mouse before Slicer's interactor style: in Box mode a left-button drag
        draws a rectangle (an ROI markup one slice thick) instead of panning, painting or window/level."""
        import vtk

        interactor = self.slicerApp.view_manager.get_view("Red").interactor()
        for event, handler in ((vtk.vtkCommand.LeftButtonPressEvent, self._boxPress),
                               (vtk.vtkCommand.MouseMoveEvent, self._boxMove),
                               (vtk.vtkCommand.LeftButtonReleaseEvent, self._boxRelease)):
            self._boxTags[event] = interactor.AddObserver(event, handler, 100.0)

    def _swallow(self, interactor, event: str):
        import vtk

        tag = self._boxTags.get(vtk.vtkCommand.GetEventIdFromString(event))
        if tag is not None:
            interactor.GetCommand(tag).SetAbortFlag(1)

    def _eventRas(self, interactor):
        import numpy as np

        x, y = interactor.GetEventPosition()
        m = self._redSliceNode().GetXYToRAS()
        xyToRas = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
        return (xyToRas @ np.array([x, y, 0.0, 1.0]))[:3]

    def _boxPress(self, interactor, event):
        if not self.state.polycl_box_mode or self.volumeNode is None or self.runner.busy:
            return
        self._swallow(interactor, event)
        self._boxStart = self._eventRas(interactor)
        self._setBox(self._boxStart, self._boxStart)

    def _boxMove(self, interactor, event):
        if self._boxStart is None:
            return
        self._swallow(interactor, event)
        self._setBox(self._boxStart, self._eventRas(interactor))

    def _boxRelease(self, interactor, event):
        if self._boxStart is None:
            return
        self._swallow(interactor, event)
        start, self._boxStart = self._boxStart, None
        size = self._setBox(start, self._eventRas(interactor))
        if min(size[:2]) < 2.0:  # a click, not a drag
            self._removeBox()
            return self._say(error="drag a rectangle around the organ (the box was too small)")
        with self.state:
            self.state.polycl_box_mode = False
            self.state.polycl_has_box = True
        self._say(f"Box drawn on slice {self.redSliceIndex()} ({size[0]:.0f} x {size[1]:.0f} mm): click Refine "
                  "(SAM inside the box; with a segment selected, also automatic boxes from it).")

    def _setBox(self, a, b):
        """Make or move the ROI: the rectangle a-b in the red slice's plane, one voxel thick, centred on
        the volume's slice under the view (so that its box prompt lands on exactly that slice)."""
        import numpy as np

        from PolyCLSegmentLib import conversions

        ijkToRas = conversions.ijkToRasArray(self.volumeNode)
        normal = ijkToRas[:3, 2]
        k = self.redSliceIndex()
        onSlice = (ijkToRas @ np.array([0.0, 0.0, k, 1.0]))[:3]
        axis = int(np.argmax(np.abs(normal)))  # the RAS axis across the slices (axial: S)
        thickness = float(np.linalg.norm(normal))
        centre = (np.asarray(a) + np.asarray(b)) / 2.0
        size = np.abs(np.asarray(b) - np.asarray(a))
        centre[axis], size[axis] = onSlice[axis], thickness
        scene = self.slicerApp.scene
        if not self._hasBox():
            self.boxNode = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
            self.boxNode.CreateDefaultDisplayNodes()
            self.boxNode.SetLocked(True)  # moved only by drawing it again (its handles would catch Paint's drags)
            display = self.boxNode.GetDisplayNode()
            if display is not None:
                display.SetSelectedColor(1.0, 0.85, 0.1)
                display.SetColor(1.0, 0.85, 0.1)
                display.SetFillOpacity(0.1)
                display.SetHandlesInteractive(False)
        self.boxNode.SetCenter(*[float(c) for c in centre])
        self.boxNode.SetSize(*[float(v) for v in size])
        self.slicerApp.view_manager.get_view("Red").schedule_render()
        for view in self.slicerApp.view_manager.get_threed_views():
            view.schedule_render()
        inPlane = [float(size[i]) for i in range(3) if i != axis]
        return inPlane + [thickness]

    def _removeBox(self):
        scene = self.slicerApp.scene
        if self.boxNode is not None and scene.IsNodePresent(self.boxNode):
            scene.RemoveNode(self.boxNode)
        self.boxNode, self._boxStart = None, None
        with self.state:
            self.state.polycl_has_box = False

    def onBoxTool(self):
        if self.volumeNode is None:
            return self._say(error="load a CT first")
        on = not self.state.polycl_box_mode
        if on:
            self.editor.deactivate_effect()
        with self.state:
            self.state.polycl_box_mode = on
        self._say("Box: drag a rectangle around the organ on the red view, then click Refine." if on
                  else "Box tool off.")

    def onClearBox(self):
        self._removeBox()
        for view in self.slicerApp.view_manager.get_views():
            view.schedule_render()
        self._say("Box removed.")

    # ------------------------------------------------------------------ Fine-tune
    def onFinetune(self):
        """``polycl finetune`` (through the Logic) on a listed labelled folder, in a subprocess; when it
        has finished, the model list is read again and the new model selected."""
        s = self.state
        if self.runner.busy:
            return self._say(error="an operation is running; cancel it first")
        name = str(s.polycl_ft_name or "").strip()
        try:
            folder = self.data.resolveLabelled(s.polycl_ft_folder)
            epochs = int(str(s.polycl_ft_epochs).strip())
            if not 1 <= epochs <= 1000:
                raise ValueError
        except (PermissionError, FileNotFoundError) as exc:
            return self._say(error=str(exc))
        except (TypeError, ValueError):
            return self._say(error=f"epochs: {s.polycl_ft_epochs!r} is not a number from 1 to 1000")
        try:
            process = self.logic.finetune(folder, name, target=str(s.polycl_ft_target or "liver").strip(),
                                          epochs=epochs, device=s.polycl_device, extraArgs=self.finetuneArgs)
        except Exception as exc:  # noqa: BLE001 - the Logic's message (bad name, no folder)
            return self._say(error=str(exc))

        def done(proc):
            with self.state:
                self.state.polycl_models = self._models()
                if name in [m["value"] for m in self.state.polycl_models]:
                    self.state.polycl_model = name

        self.runner.startProcess("Fine-tune", process, onDone=done)
        self._started("Fine-tune")

    def onPropagate(self):
        s = self.state
        self._start("Propagate", lambda: self.logic.preparePropagate(
            self.volumeNode, self.segmentationNode, self.editor.active_segment_id or None, self.redSliceIndex(),
            engine=s.polycl_engine, device=s.polycl_device), self.logic.computePropagate)

    def _brushDefaults(self, diameterMm: float = 10.0):
        """Paint and Erase as in Slicer's Segment Editor: a brush in millimetres (the editor's slider,
        1-30 mm) that paints on the viewed slice only (Propagate needs exactly one annotated slice)."""
        from trame_server.utils.typed_state import TypedState
        from trame_slicer.app.ui import PaintEffectState
        from trame_slicer.segmentation import BrushDiameterMode

        brush = TypedState(self.state, PaintEffectState).data
        with self.state:
            brush.use_sphere_brush = False
            brush.brush_diameter_mode = BrushDiameterMode.Absolute
            brush.brush_diameter_slider.value = diameterMm

    def onPaint(self):
        from trame_slicer.segmentation import SegmentationEffectPaint

        if self.editor.active_segmentation is None:
            return self._say(error="load a CT first")
        if not self.editor.active_segment_id:
            self.editor.add_empty_segment(segment_name="annotation", segment_color=[0.3, 0.8, 1.0])
        self.editor.set_active_effect_type(SegmentationEffectPaint)
        self._say("Paint on the red view (drag with the left button; brush size: the editor's slider), "
                  "then Propagate.")

    def onUndo(self):
        if self.runner.busy or self.segmentationNode is None:
            return
        if self.logic.undo(self.segmentationNode):
            self._refresh()
            self._say("Undone.")
        else:
            self._say(error="nothing to undo")

    def onCancel(self):
        self.runner.cancel()
        self._say("Cancelling...")

    def onSave(self):
        try:
            written = self.save()
        except Exception as exc:  # noqa: BLE001 - e.g. a full disk: a message, nothing half-written kept
            log.exception("save failed")
            return self._say(error=f"Save failed: {exc}")
        self.downloads = {p.name: p for p in written}
        with self.state:
            self.state.polycl_downloads = [{"name": p.name, "href": f"polycl/download/{p.name}"} for p in written]
        self._say("Saved " + ", ".join(p.name for p in written) + " in the data folder.")

    def save(self) -> list[Path]:
        """Write the segmentation beside the CT: ``.polycl.seg.nrrd``, ``.polycl.labels.nii.gz`` (segment i
        has label i + 1; where segments overlap the later one wins) and ``.polycl.labels.json`` (the names)."""
        import numpy as np
        import slicer

        from PolyCLSegmentLib import conversions, segmentedit

        seg, volume = self.segmentationNode, self.volumeNode
        if seg is None or volume is None:
            raise RuntimeError("load a CT first")
        segPath = self.data.outputPath(self.entry, ".seg.nrrd")
        labelsPath = self.data.outputPath(self.entry, ".labels.nii.gz")
        namesPath = self.data.outputPath(self.entry, ".labels.json")
        dims = volume.GetImageData().GetDimensions()
        labels = np.zeros((dims[2], dims[1], dims[0]), np.uint16)
        names = {}
        for i, segId in enumerate(segmentedit.segmentIds(seg)):
            mask = conversions.maskFromSegment(seg, segId, volume)
            labels[mask > 0] = i + 1
            names[i + 1] = {"name": seg.GetSegmentation().GetSegment(segId).GetName(), "segmentId": segId}

        def partial(path: Path) -> Path:
            return path.with_name(path.name.replace(".polycl.", ".polycl.partial."))

        scene = self.slicerApp.scene
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(partial(segPath)))
        if not storage.WriteData(seg):
            raise RuntimeError(f"could not write {segPath.name}")
        labelNode = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "polycl-save")
        try:
            labelNode.CopyOrientation(volume)
            slicer.util.updateVolumeFromArray(labelNode, labels)
            lstorage = slicer.vtkMRMLVolumeArchetypeStorageNode()
            lstorage.SetFileName(str(partial(labelsPath)))
            lstorage.SetUseCompression(True)
            if not lstorage.WriteData(labelNode):
                raise RuntimeError(f"could not write {labelsPath.name}")
        finally:
            scene.RemoveNode(labelNode)
        partial(namesPath).write_text(json.dumps({"image": self.entry.name, "labels": names}, indent=1))
        for p in (segPath, labelsPath, namesPath):
            os.replace(partial(p), p)
        return [segPath, labelsPath, namesPath]

    # ------------------------------------------------------------------ test hooks (--testing only)
    def redViewInfo(self, ijk):
        """Normalised positions (u right, v down, 0..1) in the red view of IJK points, and the slice k."""
        import numpy as np

        from PolyCLSegmentLib import conversions

        node = self._redSliceNode()
        xyToRas = np.array([[node.GetXYToRAS().GetElement(r, c) for c in range(4)] for r in range(4)])
        rasToXy = np.linalg.inv(xyToRas)
        ijkToRas = conversions.ijkToRasArray(self.volumeNode)
        w, h, _ = node.GetDimensions()
        pts = []
        for p in ijk:
            xy = rasToXy @ ijkToRas @ np.array([p[0], p[1], p[2], 1.0])
            pts.append([float(xy[0] / w), float(1.0 - xy[1] / h)])
        return {"k": self.redSliceIndex(), "size": [w, h], "points": pts}

    def bindHttp(self, wslinkServer):
        """Install the access check in front of every route, and the test routes when --testing."""
        from aiohttp import web

        app = wslinkServer.app
        app.middlewares.insert(0, aiohttpMiddleware(self.policy))

        async def health(request):
            return web.json_response({"ok": True, "loaded": self.state.polycl_loaded,
                                      "busy": bool(self.state.polycl_busy)})

        async def download(request):
            """A file the last Save wrote (nothing else: the name must be one of those just written)."""
            path = self.downloads.get(request.match_info["name"])
            if path is None or not path.is_file() or self.data.root not in path.parents:
                return web.Response(status=404, text="PolyCL web: no such saved file\n")
            return web.FileResponse(path, headers={
                "Content-Disposition": f'attachment; filename="{path.name}"',
                "Content-Type": "application/octet-stream", "Cache-Control": "no-store"})

        app.router.add_get("/polycl/health", health)
        app.router.add_get("/polycl/download/{name}", download)
        if not self.testing:
            return

        async def red(request):
            ijk = json.loads(request.query.get("ijk", "[]"))
            return web.json_response(self.redViewInfo(ijk))

        async def active(request):
            from PolyCLSegmentLib import conversions

            segId = self.editor.active_segment_id
            voxels = 0
            if segId and self.volumeNode is not None:
                voxels = int(conversions.maskFromSegment(self.segmentationNode, segId, self.volumeNode).sum())
            return web.json_response({"segmentId": segId, "voxels": voxels})

        app.router.add_get("/polycl/test/red", red)
        app.router.add_get("/polycl/test/active", active)


def parseArgs(argv=None):
    p = argparse.ArgumentParser(prog="polycl-web", description="PolyCL Segment in the browser (trame-slicer)")
    p.add_argument("--data", required=True, help="folder of CT (NIfTI/NRRD/MHA files, DICOM series folders); "
                   "the page opens files only from here and Save writes here")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    p.add_argument("--token", default=None, help="access token (required, or generated and printed, for any "
                   "host other than loopback)")
    choices = panelChoices()
    p.add_argument("--mode", default="pipeline", choices=[m["value"] for m in choices["modes"]],
                   help="initial Segment mode")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--engine", default="auto", choices=[e["value"] for e in choices["engines"]])
    p.add_argument("--max-upload-mb", type=int, default=1024, help="largest upload accepted (MB; 0: no uploads)")
    p.add_argument("--finetune-args", default="", help="extra arguments the server adds to every `polycl finetune` "
                   "it starts (e.g. \"--size 128\"); the page cannot change them")
    p.add_argument("--testing", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    args = parseArgs(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    data = DataFolder(args.data)
    policy = resolvePolicy(args.host, args.token)
    sys.argv = sys.argv[:1]  # trame reads its own options from sys.argv: it gets none, only ours below

    from trame.app import get_server

    server = get_server(None, client_type="vue3")
    app = PolyCLWebApp(server, data, policy, mode=args.mode, device=args.device, engine=args.engine,
                       testing=args.testing, maxUploadMb=args.max_upload_mb,
                       finetuneArgs=shlex.split(args.finetune_args))
    server.controller.on_server_bind.add(app.bindHttp)

    def ready(**_):
        print(f"PolyCL web: serving {data.root} on {args.host}:{server.port}; open {policy.url(server.port)}",
              flush=True)
        if policy.generated:
            print(f"PolyCL web: access token (generated): {policy.token}", flush=True)

    server.controller.on_server_ready.add(ready)
    server.start(host=args.host, port=args.port, open_browser=False, show_connection_info=False, timeout=0)
    app.runner.shutdown()


if __name__ == "__main__":
    main()
