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


def _select(label, items, model, ident, **kw):
    from trame.widgets import vuetify3 as v

    return v.VSelect(label=label, items=(items,), v_model=(model,), density="compact", hide_details=True,
                     disabled=(BUSY,), id=ident, **kw)


def _button(label, ident, handler, icon, disabled=NO_CT, **kw):
    from trame.widgets import vuetify3 as v

    return v.VBtn(label, id=ident, click=handler, disabled=(disabled,), size="small", variant="tonal",
                  prepend_icon=icon, **kw)


def _uploadInput(app):
    from trame.widgets import vuetify3 as v

    chunk = app.server.trigger_name(app.uploads.chunk)
    limit = app.uploads.maxMb * 1_000_000
    v.VFileInput(
        id="polycl-upload", label=f"Upload a CT into the data folder (max {app.uploads.maxMb} MB)",
        accept=",".join(UPLOAD_SUFFIXES), density="compact", hide_details=True, classes="mt-2",
        prepend_icon="mdi-file-upload", disabled=(BUSY,), clearable=False,
        change=("const f = $event.target.files;\n"
                "if (!f || !f.length) { return; }\n"
                f"if (f[0].size > {limit}) {{ polycl_error = 'the file is larger than the upload limit "
                f"({app.uploads.maxMb} MB)'; return; }}\n"
                "polycl_busy = true; polycl_message = 'uploading ' + f[0].name;\n"
                f"window.load_files_by_chunks([f[0]], {{ trigger_name: '{chunk}' }})"
                ".finally(() => { polycl_busy = false; });"))


def _operations(app):
    from trame.widgets import html
    from trame.widgets import vuetify3 as v

    _select("Model", "polycl_models", "polycl_model", "polycl-model", classes="mt-2")
    with html.Div(classes="d-flex mt-2"):
        _select("Mode", "polycl_modes", "polycl_segmentMode", "polycl-mode")
        _select("Device", "polycl_devices", "polycl_device", "polycl-device", classes="ml-2", style="max-width: 90px;")
    with html.Div(classes="d-flex mt-2"):
        _select("SAM model", "polycl_samModels", "polycl_samModel", "polycl-sam-model")
        _select("Propagation engine", "polycl_engines", "polycl_engine", "polycl-engine", classes="ml-2")
    v.VCheckbox(label="Overwrite other segments", v_model=("polycl_overwriteOthers",), density="compact",
                hide_details=True, disabled=(BUSY,), id="polycl-overwrite")
    with html.Div(classes="d-flex flex-wrap mt-1", style="gap: 6px;"):
        for label, ident, handler, icon in (
                ("Segment", "polycl-segment", app.onSegment, "mdi-auto-fix"),
                ("Refine", "polycl-refine", app.onRefine, "mdi-creation"),
                ("Paint", "polycl-paint", app.onPaint, "mdi-brush"),
                ("Propagate", "polycl-propagate", app.onPropagate, "mdi-layers-triple"),
                ("Save", "polycl-save", app.onSave, "mdi-content-save")):
            _button(label, ident, handler, icon)
        _button("Undo", "polycl-undo", app.onUndo, "mdi-undo", disabled="!polycl_can_undo || polycl_busy")
        v.VBtn("Box", id="polycl-box", click=app.tools.onBoxTool, disabled=(NO_CT,), size="small",
               variant=("polycl_tool == 'refine-box' ? 'flat' : 'tonal'",),
               color=("polycl_tool == 'refine-box' ? 'primary' : undefined",), prepend_icon="mdi-vector-square")
        _button("Clear box", "polycl-clear-box", app.tools.onClearBox, "mdi-vector-square-remove",
                disabled="!polycl_has_box || polycl_busy")


def _interact(app):
    """The Interact toolbar: include / exclude points and boxes on the red view, answered at once."""
    from trame.widgets import html
    from trame.widgets import vuetify3 as v

    html.Div("Interact on the red view: click = include, Shift+click = exclude, drag = box; "
             "Correct slice after painting one", classes="text-caption mt-1")
    with v.VBtnToggle(v_model=("polycl_tool",), density="compact", divided=True, variant="outlined",
                      id="polycl-interact", disabled=(NO_CT,), classes="mt-1"):
        v.VBtn("Include", value="include", id="polycl-include", size="small", prepend_icon="mdi-plus-circle")
        v.VBtn("Exclude", value="exclude", id="polycl-exclude", size="small", prepend_icon="mdi-minus-circle")
        v.VBtn("Box", value="box", id="polycl-prompt-box", size="small", prepend_icon="mdi-selection-drag")
    v.VCheckbox(label="Propagate from clicks", v_model=("polycl_propagateFromClicks",), density="compact",
                hide_details=True, disabled=(BUSY,), id="polycl-propagate-clicks")
    with html.Div(classes="d-flex flex-wrap", style="gap: 6px;"):
        _button("Correct slice", "polycl-correct", app.interaction.correct, "mdi-pencil-box-outline")
        _button("Propagate from clicks", "polycl-propagate-prompts", app.interaction.propagate, "mdi-layers-plus")
        _button("Clear prompts", "polycl-clear-prompts", app.interaction.clear, "mdi-eraser",
                disabled="!polycl_prompts || polycl_busy")
        _button("Finish segment", "polycl-finish", app.interaction.finish, "mdi-check", disabled=NO_CT)


def _slice(app):
    from trame.widgets import html
    from trame.widgets import vuetify3 as v

    with html.Div(classes="d-flex align-center mt-2"):
        v.VTextField(label="Red slice (k)", v_model=("polycl_goto",), density="compact", hide_details=True,
                     id="polycl-slice", disabled=(NO_CT,), placeholder=("`${polycl_slice}`",), style="max-width: 130px;")
        html.Span("{{ polycl_slice }} / {{ polycl_nslices - 1 }}", id="polycl-slice-now", classes="ml-2 text-caption")
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
    with html.Div(classes="d-flex mt-2", style="gap: 6px;"):
        for label, model, ident, width in (("New model name", "polycl_finetuneName", "polycl-ft-name", None),
                                           ("Target", "polycl_finetuneTarget", "polycl-ft-target", 90),
                                           ("Epochs", "polycl_finetuneEpochs", "polycl-ft-epochs", 70)):
            v.VTextField(label=label, v_model=(model,), density="compact", hide_details=True, disabled=(BUSY,),
                         id=ident, style=f"max-width: {width}px;" if width else None)
    _button("Fine-tune", "polycl-finetune", app.onFinetune, "mdi-school", disabled="!polycl_ft_folder || polycl_busy",
            classes="mt-2")


def _status(app):
    from trame.widgets import html
    from trame.widgets import vuetify3 as v

    with html.Div(v_show=(BUSY,), classes="mt-2", id="polycl-busy"):
        v.VProgressLinear(model_value=("polycl_progress",), height=10, color="primary", id="polycl-progress")
        v.VBtn("Cancel", id="polycl-cancel", click=app.onCancel, size="small", color="warning", variant="tonal",
               classes="mt-1", prepend_icon="mdi-cancel")
    html.Span("{{ polycl_done_count }}", id="polycl-done", style="display: none;")
    html.Div("{{ polycl_message }}", id="polycl-message", classes="text-caption mt-2", style="white-space: pre-wrap;")
    v.VAlert(v_if=("polycl_error",), text=("polycl_error",), type="error", density="compact", classes="mt-2",
             id="polycl-error", closable=True, click_close="polycl_error = ''")
    with v.VAlert(v_if=("polycl_confirm",), type="warning", density="compact", classes="mt-2", id="polycl-confirm"):
        html.Div("{{ polycl_confirm }}", id="polycl-confirm-text")
        v.VBtn("Discard and continue", id="polycl-confirm-yes", click=(app.onConfirm, "[true]"), size="small",
               color="error", variant="tonal", classes="mt-1 mr-2")
        v.VBtn("Keep my work", id="polycl-confirm-no", click=(app.onConfirm, "[false]"), size="small",
               color="primary", variant="tonal", classes="mt-1")


def build(app):
    """Build the page for ``app`` (a :class:`PolyCLSegmentWeb.app.PolyCLWebApp`); returns the Segment Editor UI."""
    from trame.widgets import html
    from trame.widgets import vuetify3 as v
    from trame_slicer.app.ui import SegmentEditorToolbarUI, SegmentEditorUI, SegmentEditorUndoRedoUI, ViewerLayout

    with ViewerLayout(app.server, title="PolyCL Segment", is_drawer_visible=True) as app.ui:
        app.ui.title.set_text("PolyCL Segment")
        with app.ui.drawer:
            with v.VCard(variant="flat", classes="pa-2", id="polycl-panel"):
                with html.Div(classes="d-flex align-center"):
                    _select("CT (data folder)", "polycl_files", "polycl_file", "polycl-ct")
                    _button("Load", "polycl-load", app.onLoad, None, disabled=BUSY, classes="ml-2")
                if app.uploads.maxMb > 0:
                    _uploadInput(app)
                _operations(app)
                v.VDivider(classes="my-2")
                _interact(app)
                _slice(app)
                v.VDivider(classes="my-2")
                _finetune(app)
                _status(app)
            v.VDivider()
            editorUi = SegmentEditorUI()
        with app.ui.toolbar:
            SegmentEditorToolbarUI(editor_ui=editorUi)
        with app.ui.undo_redo:
            SegmentEditorUndoRedoUI(editor_ui=editorUi)
        with app.ui.content:
            app.layoutManager.initialize_layout_grid(app.ui)
    return editorUi
