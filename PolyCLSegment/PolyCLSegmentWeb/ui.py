"""The page's layout: trame-slicer's views and Segment Editor, and the PolyCL panel (Vuetify).

Every control is bound to a ``polycl_*`` state variable; the ones named after a field of the module's
:class:`PolyCLSegmentLib.settings.Settings` (``polycl_<field>``) are read into it before each operation.
Element ids (``polycl-*``) are what the browser tests click.
"""

from __future__ import annotations

UPLOAD_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")

BUSY = "polycl_busy"
NO_CT = "!polycl_loaded || polycl_busy"


def layout():
    """The red (axial) view large on the left; 3D, sagittal and coronal stacked on the right."""
    from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

    return Layout(LayoutDirection.Horizontal, [
        ViewLayoutDefinition.axial_view(),
        Layout(LayoutDirection.Vertical, [ViewLayoutDefinition.threed_view(), ViewLayoutDefinition.sagittal_view(),
                                          ViewLayoutDefinition.coronal_view()]),
    ])


def _select(label, items, model, ident, tip: str = "", **kw):
    from trame.widgets import vuetify3 as v

    return v.VSelect(label=label, items=(items,), v_model=(model,), density="compact", hide_details=True,
                     disabled=(BUSY,), id=ident, title=tip or label, **kw)


def _button(label, ident, handler, icon, disabled=NO_CT, tip: str = "", **kw):
    from trame.widgets import vuetify3 as v

    return v.VBtn(label, id=ident, click=handler, disabled=(disabled,), size="small", variant="tonal",
                  prepend_icon=icon, title=tip or label, **kw)


def _uploadInput(app):
    from trame.widgets import vuetify3 as v

    chunk = app.server.trigger_name(app.uploads.chunk)
    limit = app.uploads.maxMb * 1_000_000
    v.VFileInput(
        id="polycl-upload", label="Upload a CT", title=f"a CT file into the data folder (at most {app.uploads.maxMb} MB)",
        accept=",".join(UPLOAD_SUFFIXES), density="compact", hide_details=True, classes="mt-2",
        prepend_icon="mdi-file-upload", disabled=(BUSY,), clearable=False,
        change=("const f = $event.target.files;\n"
                "if (!f || !f.length) { return; }\n"
                f"if (f[0].size > {limit}) {{ polycl_error = 'the file is larger than the upload limit "
                f"({app.uploads.maxMb} MB)'; return; }}\n"
                "polycl_busy = true; polycl_message = 'uploading ' + f[0].name;\n"
                f"window.load_files_by_chunks([f[0]], {{ trigger_name: '{chunk}' }})"
                ".finally(() => { polycl_busy = false; });"))


def _segmentSection(app):
    from trame.widgets import html
    from trame.widgets import vuetify3 as v

    _select("Model", "polycl_models", "polycl_model", "polycl-model", "the network (or atlas target) Segment runs")
    _select("Segment mode", "polycl_modes", "polycl_segmentMode", "polycl-mode",
            "unet: seconds; refine: + SAM boxes; pipeline: + reference slice and propagation", classes="mt-2")
    _select("Device", "polycl_devices", "polycl_device", "polycl-device", "where the networks run", classes="mt-2")
    v.VCheckbox(label="Overwrite other segments", v_model=("polycl_overwriteOthers",), density="compact",
                hide_details=True, disabled=(BUSY,), id="polycl-overwrite",
                title="a new result takes its voxels from other (unlocked) segments")
    with html.Div(classes="d-flex flex-wrap mt-1", style="gap: 6px;"):
        _button("Segment", "polycl-segment", app.onSegment, "mdi-auto-fix", tip="segment the CT with the model (S)")
        _button("Undo", "polycl-undo", app.onUndo, "mdi-undo", disabled="!polycl_can_undo || polycl_busy",
                tip="step back the last change (Ctrl+Z)")


def _editSection(app):
    from trame.widgets import html
    from trame.widgets import vuetify3 as v

    _select("SAM model", "polycl_samModels", "polycl_samModel", "polycl-sam-model", "the SAM that refines and chains")
    _select("Propagation engine", "polycl_engines", "polycl_engine", "polycl-engine",
            "SAM 2 when its weights are cached, else LiteMedSAM chained slice to slice", classes="mt-2")
    with html.Div(classes="d-flex flex-wrap mt-2", style="gap: 6px;"):
        _button("Refine", "polycl-refine", app.onRefine, "mdi-creation",
                tip="SAM boxes from the selected segment, and the box drawn with Box")
        v.VBtn("Box", id="polycl-box", click=app.tools.onBoxTool, disabled=(NO_CT,), size="small",
               variant=("polycl_tool == 'refine-box' ? 'flat' : 'tonal'",), title="draw Refine's box on the red view",
               color=("polycl_tool == 'refine-box' ? 'primary' : undefined",), prepend_icon="mdi-vector-square")
        _button("Clear box", "polycl-clear-box", app.tools.onClearBox, "mdi-vector-square-remove",
                disabled="!polycl_has_box || polycl_busy")
        _button("Paint", "polycl-paint", app.onPaint, "mdi-brush", tip="paint the organ on the slice shown")
        _button("Propagate", "polycl-propagate", app.onPropagate, "mdi-layers-triple",
                tip="carry the painted slice through the volume")


def _interact(app):
    """The Interact toolbar: include / exclude points and boxes on the red view, answered at once."""
    from trame.widgets import html
    from trame.widgets import vuetify3 as v

    html.Div("Click on the red view: click = include, Shift+click = exclude, drag = box; paint a slice, "
             "then Correct slice", classes="text-caption")
    with v.VBtnToggle(v_model=("polycl_tool",), density="compact", divided=True, variant="outlined",
                      id="polycl-interact", disabled=(NO_CT,), classes="mt-1"):
        v.VBtn("Include", value="include", id="polycl-include", size="small", prepend_icon="mdi-plus-circle",
               title="include points (I)")
        v.VBtn("Exclude", value="exclude", id="polycl-exclude", size="small", prepend_icon="mdi-minus-circle",
               title="exclude points (E)")
        v.VBtn("Box", value="box", id="polycl-prompt-box", size="small", prepend_icon="mdi-selection-drag",
               title="box prompts (B)")
    v.VCheckbox(label="Fill the volume after each click", v_model=("polycl_propagateFromClicks",),
                density="compact", hide_details=True, disabled=(BUSY,), id="polycl-propagate-clicks",
                title="after each prompt, propagate the segment through the volume")
    with html.Div(classes="d-flex flex-wrap", style="gap: 6px;"):
        _button("Correct slice", "polycl-correct", app.promptTools.correct, "mdi-pencil-box-outline",
                tip="the painted slice becomes a fixed correction")
        _button("Propagate from clicks", "polycl-propagate-prompts", app.promptTools.propagate, "mdi-layers-plus",
                tip="fill the volume from the prompted slices now")
        _button("Clear prompts", "polycl-clear-prompts", app.promptTools.clear, "mdi-eraser",
                disabled="!polycl_prompts || polycl_busy")
        _button("Finish segment", "polycl-finish", app.promptTools.finish, "mdi-check", disabled=NO_CT)
    html.Div("Keys: I include, E exclude, B box, Esc no tool, Ctrl+Z undo, Up/Down next/previous slice, "
             "N next segment", id="polycl-shortcuts", classes="text-caption mt-1")


def _view(app):
    """Window presets, the red view's slice, and the segment list (through the controller)."""
    from trame.widgets import html
    from trame.widgets import vuetify3 as v

    with html.Div(classes="d-flex flex-wrap align-center", style="gap: 6px;", id="polycl-presets"):
        for name in app.controller.windowPresets():
            _button(name.capitalize(), f"polycl-preset-{name}", (app.view.onPreset, f"['{name}']"), None,
                    tip=f"CT window preset: {name}")
    html.Div("Window {{ polycl_window }} / level {{ polycl_level }} HU; drag on the red view (no tool) to change",
             id="polycl-wl", classes="text-caption mt-1")
    with html.Div(classes="d-flex align-center mt-2"):
        v.VTextField(label="Red slice (k)", v_model=("polycl_goto",), density="compact", hide_details=True,
                     id="polycl-slice", disabled=(NO_CT,), placeholder=("`${polycl_slice}`",), style="max-width: 130px;")
        html.Span("{{ polycl_loaded ? `${polycl_slice} / ${polycl_nslices - 1}` : 'no CT loaded' }}",
                  id="polycl-slice-now", classes="ml-2 text-caption")
    html.Div("Segments", classes="text-subtitle-2 mt-2")
    with html.Div(id="polycl-segments"):
        with html.Div(v_for="s in polycl_segments", key="s.id", classes="d-flex align-center polycl-segment-row"):
            v.VIcon("mdi-circle", color=("s.color",), size="small")
            html.Span("{{ s.name }}", classes="ml-2 flex-grow-1 polycl-segment-name",
                      click=(app.view.onSelectSegment, "[s.id]"),
                      style=("s.id === polycl_active_segment ? 'font-weight: bold; cursor: pointer' : 'cursor: pointer'",))
            v.VBtn(icon=("s.visible ? 'mdi-eye-outline' : 'mdi-eye-off-outline'",), size="x-small", variant="text",
                   click=(app.view.onSegmentVisible, "[s.id, !s.visible]"), title="show or hide",
                   classes="polycl-segment-eye")
            v.VBtn(icon=("s.locked ? 'mdi-lock' : 'mdi-lock-open-variant-outline'",), size="x-small", variant="text",
                   click=(app.view.onSegmentLocked, "[s.id, !s.locked]"), title="lock: no operation changes it",
                   classes="polycl-segment-lock")
            v.VBtn(icon="mdi-delete-outline", size="x-small", variant="text",
                   click=(app.view.onSegmentDelete, "[s.id]"), disabled=("s.locked || polycl_busy",),
                   title="delete (Undo brings it back)", classes="polycl-segment-delete")
    _button("Next segment", "polycl-next-segment", app.view.onNextSegment, "mdi-plus-box-outline",
            tip="finish this segment and start a new, empty one (N)", classes="mt-1")


def _saveSection(app):
    from trame.widgets import html

    _button("Save", "polycl-save", app.onSave, "mdi-content-save",
            tip="the segmentation, a label map and a picture of each segment, beside the CT")
    with html.Div(v_if=("polycl_downloads.length",), id="polycl-downloads", classes="mt-2 text-caption"):
        html.Span("Download: ")
        html.A("{{ d.name }}", v_for="d in polycl_downloads", key="d.name", href=("d.href",), download=("d.name",),
               classes="mr-2 polycl-download")


def _finetune(app):
    from trame.widgets import html
    from trame.widgets import vuetify3 as v

    html.Div("Fine-tune on a labelled folder (imagesTr/ + labelsTr/, or <case>/image.* + label.*)",
             classes="text-caption")
    _select("Labelled folder", "polycl_ft_folders", "polycl_ft_folder", "polycl-ft-folder", classes="mt-1",
            no_data_text="no labelled folder under the data folder")
    v.VTextField(label="New model name", v_model=("polycl_finetuneName",), density="compact", hide_details=True,
                 disabled=(BUSY,), id="polycl-ft-name", classes="mt-2", title="the name it is listed under")
    with html.Div(classes="d-flex mt-2", style="gap: 6px;"):
        for label, model, ident, tip in (("Target", "polycl_finetuneTarget", "polycl-ft-target",
                                          "the organ: liver, kidney, or label values such as 5"),
                                         ("Epochs", "polycl_finetuneEpochs", "polycl-ft-epochs", "passes over the data")):
            v.VTextField(label=label, v_model=(model,), density="compact", hide_details=True, disabled=(BUSY,),
                         id=ident, title=tip)
    _button("Fine-tune", "polycl-finetune", app.onFinetune, "mdi-school", disabled="!polycl_ft_folder || polycl_busy",
            classes="mt-2")


def _status(app):
    """The status bar, fixed to the bottom of the window (always in view, whatever the panel's scroll):
    the running job, its progress and Cancel, the last message, errors and questions."""
    from trame.widgets import client, html
    from trame.widgets import vuetify3 as v

    client.Style(".v-main { padding-bottom: 56px !important; } "
                 "#polycl-status { position: fixed; left: 0; right: 0; bottom: 0; z-index: 2500; "
                 "background: rgb(var(--v-theme-surface)); border-top: 1px solid rgba(128,128,128,.5); "
                 "padding: 4px 12px; }")
    with html.Div(id="polycl-status"):
        with html.Div(classes="d-flex align-center", style="gap: 12px;"):
            html.Span("{{ polycl_busy ? polycl_task : 'Ready' }}", id="polycl-task", classes="text-subtitle-2")
            with html.Div(v_show=(BUSY,), id="polycl-busy"), html.Div(classes="d-flex align-center", style="gap: 8px;"):
                v.VProgressLinear(model_value=("polycl_progress",), height=10, color="primary", id="polycl-progress",
                                  style="width: 220px;")
                html.Span("{{ Math.round(polycl_progress) }} %", classes="text-caption")
                v.VBtn("Cancel", id="polycl-cancel", click=app.onCancel, size="small", color="warning",
                       variant="tonal", prepend_icon="mdi-cancel")
            html.Div("{{ polycl_message }}", id="polycl-message", classes="text-caption flex-grow-1",
                     style="white-space: pre-wrap;")
        html.Span("{{ polycl_done_count }}", id="polycl-done", style="display: none;")
        v.VAlert(v_if=("polycl_error",), text=("polycl_error",), type="error", density="compact", classes="mt-1",
                 id="polycl-error", closable=True, click_close="polycl_error = ''")
        with v.VAlert(v_if=("polycl_confirm",), type="warning", density="compact", classes="mt-1", id="polycl-confirm"):
            html.Div("{{ polycl_confirm }}", id="polycl-confirm-text")
            v.VBtn("Discard and continue", id="polycl-confirm-yes", click=(app.onConfirm, "[true]"), size="small",
                   color="error", variant="tonal", classes="mt-1 mr-2")
            v.VBtn("Keep my work", id="polycl-confirm-no", click=(app.onConfirm, "[false]"), size="small",
                   color="primary", variant="tonal", classes="mt-1")


def _shortcuts(app):
    """Keyboard shortcuts, anywhere on the page but in a text field, the views included (caught before
    the views' own key handling, which would pass them to VTK): sent to :meth:`PolyCLWebApp.onKey`."""
    from trame.widgets import client

    keys = "['i', 'e', 'b', 'n', 'Escape', 'ArrowUp', 'ArrowDown', 'PageUp', 'PageDown']"
    name = app.server.trigger_name(app.view.onKey)
    client.ClientTriggers(mounted=(
        "window.addEventListener('keydown', (e) => {"
        " const t = e.target; const tag = (t && t.tagName) || '';"
        " if (tag === 'INPUT' || tag === 'TEXTAREA' || (t && t.isContentEditable)) { return; }"
        " const ctrl = e.ctrlKey || e.metaKey;"
        f" if (!(ctrl && (e.key === 'z' || e.key === 'Z')) && (ctrl || !{keys}.includes(e.key))) {{ return; }}"
        f" e.preventDefault(); e.stopPropagation(); trigger('{name}', [e.key, ctrl, e.shiftKey]); }}, true)"))


def _section(value: str, title: str, ident: str):
    """One step of the panel, collapsible."""
    from trame.widgets import vuetify3 as v

    panel = v.VExpansionPanel(value=value, id=ident)
    with panel:
        v.VExpansionPanelTitle(title, classes="text-subtitle-2")
    return panel


#: The panel's steps: (value, title, id); all but the last (fine-tune) are open when the page opens.
SECTIONS = (("load", "1. Load a CT", "polycl-section-load"),
            ("segment", "2. Segment", "polycl-section-segment"),
            ("interact", "3. Interact on the red view", "polycl-section-interact"),
            ("edit", "4. Refine, paint, propagate", "polycl-section-edit"),
            ("view", "5. View and segments", "polycl-section-view"),
            ("save", "6. Save", "polycl-section-save"),
            ("finetune", "7. Fine-tune a model", "polycl-section-finetune"))


def build(app):
    """Build the page for ``app`` (a :class:`PolyCLSegmentWeb.app.PolyCLWebApp`); returns the Segment Editor UI."""
    from trame.widgets import html
    from trame.widgets import vuetify3 as v
    from trame_slicer.app.ui import SegmentEditorToolbarUI, SegmentEditorUI, SegmentEditorUndoRedoUI, ViewerLayout

    fill = {"load": _load, "segment": _segmentSection, "interact": _interact, "edit": _editSection,
            "view": _view, "save": _saveSection, "finetune": _finetune}
    with ViewerLayout(app.server, title="PolyCL Segment", is_drawer_visible=True) as app.ui:
        app.ui.title.set_text("PolyCL Segment")
        with app.ui.drawer:
            with v.VCard(variant="flat", classes="pa-1", id="polycl-panel"):
                with v.VExpansionPanels(v_model=("polycl_sections",), multiple=True, variant="accordion",
                                        density="compact", static=True):
                    for value, title, ident in SECTIONS:
                        with _section(value, title, ident):
                            with v.VExpansionPanelText():
                                fill[value](app)
                html.Div(style="height: 8px;")
            v.VDivider()
            editorUi = SegmentEditorUI()
        with app.ui.toolbar:
            SegmentEditorToolbarUI(editor_ui=editorUi)
        with app.ui.undo_redo:
            SegmentEditorUndoRedoUI(editor_ui=editorUi)
        with app.ui.content:
            app.layoutManager.initialize_layout_grid(app.ui)
            _status(app)  # outside the drawer, whose transform would hold a fixed element inside it
            _shortcuts(app)
    return editorUi


def _load(app):
    from trame.widgets import html

    _select("CT (data folder)", "polycl_files", "polycl_file", "polycl-ct", "a CT of the data folder")
    _button("Load", "polycl-load", app.onLoad, "mdi-folder-open", disabled=BUSY, classes="mt-2",
            tip="show this CT (asks first if segments are not saved)")
    if app.uploads.maxMb > 0:
        _uploadInput(app)
