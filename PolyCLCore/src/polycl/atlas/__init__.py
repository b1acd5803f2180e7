"""Atlas location prior: organs located by anatomy through registration to labelled CT.

* :mod:`polycl.atlas.store`: the bundled atlas and the user's (``polycl atlas add`` / ``list``);
* :mod:`polycl.atlas.registration`: SimpleITK registration of a CT to an atlas at low resolution;
* :mod:`polycl.atlas.prior`: the warped organ masks and their use against the U-Net's components;
* :mod:`polycl.atlas.cache`: registrations kept within a process (the same CT, atlas set and options);
* :mod:`polycl.atlas.targets`: the hook the Segment pipeline calls.
"""

from polycl.atlas.store import atlas_organs, target_objects

__all__ = ["atlas_organs", "target_objects"]
