"""``POLYCL_BUNDLED_ATLAS=off`` leaves the bundled atlas out (the liver leave-one-scan-out study
segments the bundled atlas's own scan, so that fold must use another scan's atlas only)."""

from __future__ import annotations

import pytest


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYCL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_bundled_atlas_can_be_left_out(home, monkeypatch):
    from polycl.atlas.prior import compute_prior
    from polycl.atlas.store import BUNDLED_NAME, atlas_organs, load_atlases
    from polycl.errors import InputError

    assert [a.name for a in load_atlases()] == [BUNDLED_NAME]  # default: the bundled atlas votes
    assert "liver" in atlas_organs()
    monkeypatch.setenv("POLYCL_BUNDLED_ATLAS", "off")
    assert load_atlases() == [] and atlas_organs() == []
    with pytest.raises(InputError, match="no atlas has liver"):  # refused before any registration
        compute_prior(None, ("liver",))
    monkeypatch.setenv("POLYCL_BUNDLED_ATLAS", "maybe")
    with pytest.raises(InputError, match="POLYCL_BUNDLED_ATLAS"):
        load_atlases()
