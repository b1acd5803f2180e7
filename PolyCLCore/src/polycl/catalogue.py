"""Everything Segment can be given, in one list: the segmentation networks of the model registry
(:mod:`polycl.models`) and the atlas-based targets (``atlas:<organ>``, :mod:`polycl.atlas`, no
network). It sits above both, so the registry knows nothing of atlases and the atlas package nothing
of the registry.

A name is parsed here once, for the command line, the Slicer Logic, the web page and
:func:`polycl.segment.run`: ``atlas:<organ>`` is an :class:`~polycl.atlas.targets.AtlasTarget`,
anything else a registry name or a checkpoint path (:func:`polycl.inference.load_model`).
"""

from __future__ import annotations

from polycl.errors import InputError

#: Names of atlas-based targets start with this ("atlas:spleen"); ``polycl models`` lists them so.
ATLAS_PREFIX = "atlas:"


def atlas_entries():
    """One :class:`~polycl.models.ModelEntry` of kind "atlas-based" per atlas target."""
    from polycl.atlas.targets import atlas_targets
    from polycl.atlas.store import bundled_atlas_dir, user_atlas_names
    from polycl.models import ModelEntry

    n = 1 + len(user_atlas_names())
    card = bundled_atlas_dir() / "README.md"
    return [ModelEntry(name=f"{ATLAS_PREFIX}{t}", path=bundled_atlas_dir() / "atlas.json", kind="atlas-based",
                       target=t, description=f"atlas-based, no network: {t} located by registration to {n} "
                                             "atlas(es), drawn by SAM and propagation",
                       licence="CC BY 4.0 (bundled atlas)",
                       training_data="TotalSegmentator example CT (bundled atlas) + the user's atlases",
                       card=card, source="atlas") for t in atlas_targets()]


def list_targets(kind: str | None = None):
    """Bundled then user models (:func:`polycl.models.list_models`), then the atlas-based targets;
    ``kind``: only "segmentation", "encoder" or "atlas-based"."""
    from polycl.models import list_models

    entries = list_models() + atlas_entries()
    return [e for e in entries if kind is None or e.kind == kind]


def atlas_target_name(model=None, target: str | None = None) -> str | None:
    """The atlas organ asked for by ``--target ORGAN`` or by a model name ``atlas:ORGAN``; None for a
    network. Both at once is refused."""
    if target and model:
        raise InputError("--target segments an atlas organ with no network; give --target or --model, not both")
    if target:
        return target
    if isinstance(model, str) and model.startswith(ATLAS_PREFIX):
        return model[len(ATLAS_PREFIX):]
    return None


def load(model=None, device: str = "auto", *, target: str | None = None):
    """What Segment runs for ``model``: a loaded network (:class:`~polycl.inference.LoadedModel`) or an
    :class:`~polycl.atlas.targets.AtlasTarget`. ``model``: a registry name, a checkpoint path,
    ``atlas:<organ>``, None (the default model), or an already loaded one (returned as it is);
    ``target``: an atlas organ instead of a model (the command line's ``--target``)."""
    from polycl.atlas.targets import AtlasTarget
    from polycl.inference import LoadedModel, load_model

    if isinstance(model, (LoadedModel, AtlasTarget)):
        return model
    organ = atlas_target_name(model, target)
    if organ is not None:
        return AtlasTarget(organ)
    return load_model(model, device)
