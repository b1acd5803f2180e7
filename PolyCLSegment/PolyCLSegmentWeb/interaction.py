"""Interact: include / exclude points and box prompts on the red view (issue 18), shown as markups.

The page keeps no segmentation logic of its own: each prompt goes to the module's controller, which
answers it on that slice (and, with "propagate from clicks", through the volume).
"""

from __future__ import annotations


class Interaction:
    def __init__(self, app):
        self.app = app

    def point(self, ras, include: bool = True):
        self.app.say(error="Interact is not available yet")

    def box(self, a, b, k: int):
        self.app.say(error="Interact is not available yet")

    def clear(self):
        self.reset()

    def finish(self):
        self.reset()

    def reset(self):
        with self.app.state:
            self.app.state.polycl_prompts = 0
