"""Interactive segmentation: include/exclude clicks, boxes and painted corrections on the axial
slices of a CT, each answered at once, carried through the volume and re-propagated locally.

>>> from polycl.interact import InteractiveSession
>>> s = InteractiveSession(volume)                  # polycl.volume.Volume, CT in HU
>>> a = s.add_point((z, y, x), include=True)        # voxel indices of volume.array
>>> r = s.propagate()                               # fill the volume (later: local re-propagation)
>>> s.mask                                          # (z, y, x) uint8 on the input grid

See :mod:`polycl.interact.session` (coordinates, behaviour) and :mod:`polycl.interact.robot`
(the simulated user that measures it: NoC90 / NoC95).
"""

from polycl.interact.session import InteractiveSession, Prompt, SliceAnswer, VolumeAnswer

__all__ = ["InteractiveSession", "Prompt", "SliceAnswer", "VolumeAnswer"]
