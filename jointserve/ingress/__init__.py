"""The front door: one public port for every model, HAProxy programmed from the listener
registry, and the server-wide OIP routes behind it (the server application's deployment).

    OipServer / build_app   the server application: FrontDoor + the /v2 routes' listener
    FrontDoor               HAProxy kept equal to the registry's table (runtime API, no reloads)
    Haproxy                 the HAProxy process and its runtime API
"""

from ._front_door import FrontDoor
from ._haproxy import Haproxy, HaproxyCapacityError, HaproxyError, HaproxySettings
from ._server import OipServer, build_app

__all__ = ["FrontDoor", "Haproxy", "HaproxyCapacityError", "HaproxyError", "HaproxySettings",
           "OipServer", "build_app"]
