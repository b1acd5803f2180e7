"""PolyCL Segment in the browser: a trame-slicer page on the module's own (Qt-free) Logic.

One Python process holds a real MRML scene (trame-slicer's ``SlicerApp``: slicer-core's MRML, slice
and 3D views rendered off screen and streamed to the page, the Segment Editor's effects), and the
module works on that scene exactly as it does inside Slicer:

* ``slicer.mrmlScene`` and ``slicer.modules.<name>.logic()`` point at trame-slicer's scene and logics
  (:mod:`.bootstrap`); the page drives ``PolyCLSegmentLib.logic.PolyCLLogic``, which needs no Qt (the
  Slicer module file's Logic subclasses it), through the controller the Slicer panel uses;
* every operation runs as in the Slicer panel: read MRML on the event loop's thread, compute on the
  module's worker thread (``PolyCLSegmentLib.jobs.JobRunner``), polled from an asyncio task that moves
  the progress bar, the result applied back on the loop's thread; Cancel is the job's token; Undo is
  the module's undo;
* the page's choices are the module's :class:`~PolyCLSegmentLib.settings.Settings` (state
  ``polycl_<field>``).

Parts: :mod:`.ui` (layout), :mod:`.redview` (the red view and its mouse tools), :mod:`.prompttools`
(prompts), :mod:`.uploads`, :mod:`.saving`, :mod:`.routes` (HTTP), :mod:`.cli` (the command).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from .bootstrap import moduleDir, preloadTorch, wireLogicToScene
from .files import DataFolder
from .security import AccessPolicy

log = logging.getLogger("polycl.web")

#: State name prefix of the module's Settings fields (``polycl_model``, ``polycl_engine``...).
PREFIX = "polycl_"


def _items(triples) -> list[dict]:
    return [{"title": label, "value": value} for value, label, _tip in triples]


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

        from . import ui
        from .prompttools import PromptTools
        from .redview import MouseTools, RedView
        from .uploads import Uploads
        from .viewing import ViewAndSegments

        moduleDir()
        self.server, self.state, self.data, self.policy, self.testing = server, server.state, data, policy, testing
        self.finetuneArgs = [str(a) for a in finetuneArgs]
        self.downloads: dict[str, Path] = {}  # what the last Save wrote: file name -> path (the download route)
        self._savedStamp = None  # contentStamp of the segments at the last load or Save (unsaved work)
        self._pending = (None, None)  # (proceed, keep) of the question askFirst shows
        server.enable_module(trameSlicerModule)
        self.slicerApp = SlicerApp()
        wireLogicToScene(self.slicerApp)

        from PolyCLSegmentLib.controller import Controller
        from PolyCLSegmentLib.logic import PolyCLLogic
        from PolyCLSegmentLib.settings import Settings

        self.controller = Controller(PolyCLLogic())  # the Qt-free Logic; Slicer's module subclasses it
        self.volumeNode = self.entry = None
        self._pollTask = self._sliceObserver = None
        self.red = RedView(self)
        self.tools = MouseTools(self)
        self.promptTools = PromptTools(self)
        self.uploads = Uploads(self, maxUploadMb)
        self.view = ViewAndSegments(self)

        register_rca_factories(self.slicerApp.view_manager, server)
        # views first: the Segment Editor's effects make their per-view pipelines when their parameter
        # nodes are added, and a pipeline made while its view is still being built gets no view
        self.layoutManager = LayoutManager(self.slicerApp.scene, self.slicerApp.view_manager, server)
        self.layoutManager.register_layout("PolyCL", ui.layout())
        self.editorLogic = SegmentEditorLogic(server, self.slicerApp)

        s = self.state
        s.trame__title = "PolyCL Segment"
        for name, value in vars(Settings(segmentMode=mode, device=device, engine=engine)).items():
            s[PREFIX + name] = value
        s.polycl_files = [{"title": e.title, "value": e.name} for e in data.listImages()]
        s.polycl_file = s.polycl_files[0]["value"] if s.polycl_files else None
        s.polycl_models = self._models()
        s.polycl_model = s.polycl_models[0]["value"] if s.polycl_models else None
        choices = self.controller.choices()
        s.polycl_modes, s.polycl_devices = _items(choices["modes"]), _items(choices["devices"])
        s.polycl_engines = _items(choices["engines"])
        s.polycl_samModels = self._samModels()
        s.polycl_loaded, s.polycl_busy, s.polycl_task, s.polycl_progress = "", False, "", 0
        s.polycl_message, s.polycl_error = "Pick a CT from the data folder and click Load.", ""
        s.polycl_confirm = ""  # a question before unsaved segments would be dropped (askFirst)
        s.polycl_can_undo, s.polycl_slice, s.polycl_nslices, s.polycl_goto = False, 0, 0, ""
        s.polycl_done_count = 0  # goes up after each finished operation (tests wait on it)
        s.polycl_tool, s.polycl_has_box, s.polycl_prompts, s.polycl_downloads = "", False, 0, []
        s.polycl_ft_folders = data.listLabelledFolders()
        s.polycl_ft_folder = s.polycl_ft_folders[0] if s.polycl_ft_folders else None
        s.polycl_sections = [value for value, _, _ in ui.SECTIONS[:-1]]  # open: all but fine-tune
        s.polycl_segments, s.polycl_active_segment = [], ""  # the segment list (controller.segments)
        s.polycl_window, s.polycl_level = 0, 0  # the CT's window/level (HU)

        self.editorUi = ui.build(self)
        self.editorLogic.set_ui(self.editorUi)
        self._brushDefaults()
        self.layoutManager.set_layout("PolyCL")
        self.state.change("polycl_goto")(self._onGoto)
        self.state.change("polycl_tool")(self._onTool)
        self.tools.install()

    # ------------------------------------------------------------------ state
    def settings(self):
        """The page's choices as the module's Settings."""
        from PolyCLSegmentLib.settings import Settings

        try:
            return Settings.read(self.state.to_dict(), prefix=PREFIX).validate()
        except (TypeError, ValueError) as exc:
            from polycl.errors import InputError

            raise InputError(f"a setting is not a valid value: {exc}") from exc

    def _models(self):
        try:
            return [{"title": m["name"] + (" (atlas-based, no network)" if m.get("kind") == "atlas-based" else "")
                     + ("" if m["available"] else " (missing)"), "value": m["name"]}
                    for m in self.controller.listModels()]
        except Exception as exc:  # noqa: BLE001 - shown in the page
            log.warning("no models: %s", exc)
            return []

    @staticmethod
    def _samModels():
        return [{"title": "LiteMedSAM (bundled)", "value": "litemedsam"}]

    @property
    def editor(self):
        return self.slicerApp.segmentation_editor

    @property
    def segmentationNode(self):
        return self.editor.active_segmentation_node

    def say(self, message: str = "", error: str = ""):
        with self.state:
            if message:
                self.state.polycl_message = message
            self.state.polycl_error = error
            self.state.polycl_can_undo = self.controller.canUndo(self.segmentationNode)
            self.state.polycl_prompts = self.controller.promptCount()
            self.state.polycl_segments = self.controller.segments(self.segmentationNode) if self.volumeNode else []
            self.state.polycl_active_segment = self.editor.active_segment_id or ""

    def refresh(self):
        self.editor.trigger_all_signals()
        self.red.render()
        self.view.show3d()
        self.say()

    def _onSliceModified(self, *_):
        if self.volumeNode is None:
            return
        k = self.red.sliceIndex()
        if k != self.state.polycl_slice:
            with self.state:
                self.state.polycl_slice = k
                if str(self.state.polycl_goto).strip() not in ("", str(k)):
                    self.state.polycl_goto = ""  # a typed slice left behind: the box shows the slice now
            self.controller.sliceChanged(self.volumeNode, k)  # while prompting: embed around it in the background

    def _onTool(self, polycl_tool=None, **_):
        if polycl_tool:
            self.editor.deactivate_effect()  # a prompt tool or the box: no painting at the same time

    def goToSlice(self, k: int):
        self.red.goToSlice(k)
        self._onSliceModified()

    def _onGoto(self, polycl_goto=None, **_):
        if self.volumeNode is None or polycl_goto in (None, ""):
            return
        try:
            self.goToSlice(int(str(polycl_goto).strip()))
        except ValueError:
            self.say(error=f"slice index: {polycl_goto!r} is not a number")

    # ------------------------------------------------------------------ unsaved work
    def markSaved(self):
        """The segments as they are now count as saved (after Save, or a fresh load)."""
        from PolyCLSegmentLib.segmentedit import contentStamp

        self._savedStamp = contentStamp(self.segmentationNode)

    def hasUnsavedWork(self) -> bool:
        """Segments exist and differ from what was last saved (or loaded)."""
        from PolyCLSegmentLib.segmentedit import contentStamp

        stamp = contentStamp(self.segmentationNode) if self.volumeNode is not None else None
        return stamp is not None and stamp != self._savedStamp

    def askFirst(self, question: str, proceed, keep=None):
        """Run ``proceed()`` at once when no unsaved work would be lost; else show ``question`` with
        "Discard and continue" (runs ``proceed``) and "Keep my work" (runs ``keep``, if any)."""
        if not self.hasUnsavedWork():
            return proceed()
        self._pending = (proceed, keep)
        with self.state:
            self.state.polycl_confirm = question

    def onConfirm(self, discard: bool):
        (proceed, keep), self._pending = self._pending, (None, None)
        with self.state:
            self.state.polycl_confirm = ""
        action = proceed if discard else keep
        if action is not None:
            action()
        elif not discard:
            self.say("Kept your segments; nothing was loaded.")

    # ------------------------------------------------------------------ data
    def _selected(self):
        """(entry, files) of the file chosen in the page, or None (the reason shown)."""
        if self.controller.busy:
            return self.say(error="an operation is running; cancel it first")
        try:
            return self.data.resolve(self.state.polycl_file)
        except (PermissionError, FileNotFoundError) as exc:
            return self.say(error=str(exc))

    def onLoad(self):
        """Load: the chosen CT replaces the loaded one, after asking when segments are not saved."""
        chosen = self._selected()
        if chosen is None:
            return
        current = self.entry.title if self.entry is not None else "the loaded CT"
        self.askFirst(f"The segments of {current} are not saved. Load {chosen[0].title} and discard them?",
                      lambda: self.load(*chosen))

    def onLoadNow(self):
        """Load the chosen CT without asking (the caller has asked)."""
        chosen = self._selected()
        if chosen is not None:
            self.load(*chosen)

    def load(self, entry, files):
        """Replace the loaded CT (and its segments) by ``entry`` (read from ``files``)."""
        self.unload()
        self.view.fitted3d = False
        volumes = self.slicerApp.io_manager.load_volumes(files)
        if not volumes:
            return self.say(error=f"could not read {entry.title}")
        self.volumeNode, self.entry = volumes[0], entry
        dm = self.slicerApp.display_manager
        dm.show_volume_in_slice_background(self.volumeNode)
        dm.show_volume_in_slice_foreground(None)
        dm.reset_views()
        self.editorLogic.data.segment_display.show_3d = True
        self.editorLogic.on_volume_changed(self.volumeNode)
        self.editor.set_surface_representation_enabled(True)
        import vtk

        node = self.red.sliceNode()
        if self._sliceObserver is not None:
            node.RemoveObserver(self._sliceObserver)
        self._sliceObserver = node.AddObserver(vtk.vtkCommand.ModifiedEvent, self._onSliceModified)
        dims = self.volumeNode.GetImageData().GetDimensions()
        with self.state:
            self.state.polycl_loaded = entry.name
            self.state.polycl_nslices = dims[2]
        self._onSliceModified()
        display = self.volumeNode.GetDisplayNode()
        display.AddObserver(vtk.vtkCommand.ModifiedEvent, self.view.onWindowModified)
        self.controller.applyWindowPreset(self.volumeNode, "abdomen")  # a CT shown as an abdomen is read
        self.view.onWindowModified()
        self.markSaved()
        self.say(f"Loaded {entry.title}: {dims[0]} x {dims[1]} x {dims[2]} voxels.")

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

    def unload(self):
        scene = self.slicerApp.scene
        self.promptTools.reset()
        self.editor.clear()
        for node in [self.volumeNode, *list(scene.GetNodesByClass("vtkMRMLSegmentationNode"))]:
            if node is not None and scene.IsNodePresent(node):
                scene.RemoveNode(node)
        self.volumeNode = self.entry = None
        self.tools.removeBox()
        with self.state:
            self.state.polycl_loaded, self.state.polycl_tool, self.state.polycl_downloads = "", "", []
        self.downloads = {}

    def onSave(self):
        from .saving import save

        try:
            written = save(self.data, self.entry, self.segmentationNode, self.volumeNode, self.controller)
        except Exception as exc:  # noqa: BLE001 - e.g. a full disk: a message, nothing half-written kept
            log.exception("save failed")
            return self.say(error=f"Save failed: {exc}")
        self.downloads = {p.name: p for p in written}
        self.markSaved()
        with self.state:
            self.state.polycl_downloads = [{"name": p.name, "href": f"polycl/download/{p.name}"} for p in written]
        self.say("Saved " + ", ".join(p.name for p in written) + " in the data folder.")

    # ------------------------------------------------------------------ jobs
    def run(self, name: str, call):
        """Start one controller operation (``call()``) with the page's settings; a refusal (the module's
        InputError: bad input, busy) is shown and changes nothing. Then poll it until the controller is idle."""
        try:
            self.controller.settings = self.settings()
            call()
        except Exception as exc:  # noqa: BLE001 - the module's message, in the page
            log.info("%s refused: %s", name, exc)
            return self.say(error=str(exc))
        self.started(name)

    def started(self, name: str):
        from trame_server.utils.asynchronous import create_task

        with self.state:
            self.state.polycl_busy, self.state.polycl_task, self.state.polycl_progress = True, name, 0
            self.state.polycl_error = ""
            self.state.polycl_message = f"{name}: starting"
        if self._pollTask is None or self._pollTask.done():
            self._pollTask = create_task(self._poll())

    async def _poll(self):
        """Progress of the controller's jobs, until it is idle (a click may chain a propagation)."""
        while True:
            update = self.controller.poll()
            if update is not None:
                with self.state:
                    self.state.polycl_progress = round(100 * update.fraction, 1)
                    self.state.polycl_message = f"{update.name}: {update.message}" if update.message else update.name
                if update.finished:
                    self._finished(update)
            if not self.controller.busy:
                break
            await asyncio.sleep(0.1)

    def _finished(self, update):
        if update.error:
            log.warning("%s failed: %s", update.name, update.detail)
        if self.volumeNode is not None:
            self.refresh()
        if self.controller.busy:  # chained (a click's propagation): keep the bar
            return
        with self.state:
            self.state.polycl_busy = False
            self.state.polycl_error = update.error or ""
            self.state.polycl_message = (f"{update.name}: {update.message}" if not update.error
                                         else f"{update.name} failed; nothing was changed")
            self.state.polycl_done_count += 1

    def selectSegment(self, segmentId):
        """After a result: select its segment; paint strokes before it can no longer be undone one by one
        (the editor's own stroke history; the module's undo steps back over the result)."""
        if self.editor.undo_stack is not None:
            self.editor.undo_stack.clear()
        if segmentId:
            self.editor.set_active_segment_id(segmentId)

    def _operation(self, name: str, call):
        self.editor.deactivate_effect()
        self.run(name, call)

    # ------------------------------------------------------------------ operations (the controller's)
    def onSegment(self):
        from PolyCLSegmentLib.controller import SegmentRequest

        self._operation("Segment", lambda: self.controller.segment(
            SegmentRequest(self.volumeNode, self.segmentationNode), onDone=self.selectSegment))

    def onRefine(self):
        """SAM on the selected segment (automatic boxes from its mask) and/or on the box drawn with the Box tool."""
        from PolyCLSegmentLib.controller import RefineRequest

        rois = [self.tools.boxNode] if self.tools.hasBox() else []
        self._operation("Refine", lambda: self.controller.refine(RefineRequest(
            self.volumeNode, self.segmentationNode, self.editor.active_segment_id or None, roiNodes=rois),
            onDone=self.selectSegment))

    def onPropagate(self):
        from PolyCLSegmentLib.controller import PropagateRequest

        self._operation("Propagate", lambda: self.controller.propagate(PropagateRequest(
            self.volumeNode, self.segmentationNode, self.editor.active_segment_id or None, self.red.sliceIndex()),
            onDone=self.selectSegment))

    def onFinetune(self):
        """``polycl finetune`` on a listed labelled folder, in a subprocess; when it has finished, the model
        list is read again and the new model selected."""
        from PolyCLSegmentLib.controller import FinetuneRequest

        name = str(self.state.polycl_finetuneName or "").strip()

        def done(proc):
            with self.state:
                self.state.polycl_models = self._models()
                if name in [m["value"] for m in self.state.polycl_models]:
                    self.state.polycl_model = name

        self.run("Fine-tune", lambda: self.controller.finetune(FinetuneRequest(
            self.data.resolveLabelled(self.state.polycl_ft_folder), extraArgs=self.finetuneArgs), onDone=done))

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
            return self.say(error="load a CT first")
        if not self.editor.active_segment_id:
            self.editor.add_empty_segment(segment_name="annotation", segment_color=[0.3, 0.8, 1.0])
        with self.state:
            self.state.polycl_tool = ""
        self.editor.set_active_effect_type(SegmentationEffectPaint)
        self.say("Paint on the red view (drag with the left button; brush size: the editor's slider), then Propagate.")

    def onUndo(self):
        if self.controller.undo(self.segmentationNode):
            self.refresh()
            self.say("Undone.")
        else:
            self.say(error="nothing to undo")

    def onCancel(self):
        self.controller.cancel()
        self.say("Cancelling...")

    def shutdown(self):
        self.controller.shutdown()
