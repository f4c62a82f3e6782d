"""``streamlib.run(app)`` from a script: settings from the STREAMLIB_* variables, returns after SIGTERM."""

import streamlib
from runner_app import make_app

streamlib.run(make_app(streamlib.RunSettings.load()))
print("streamlib.run returned", flush=True)
