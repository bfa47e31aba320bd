"""``upr-faces serve``: the engine as a service (HTTP API v1 and one event websocket).

* :mod:`.config`: the configuration clients push, checked field by field;
* :mod:`.store`: events, alerts, audit and small state in one SQLite file;
* :mod:`.engine`: the engine's whole job for one client configuration;
* :mod:`.app`: the HTTP API and the event websocket;
* :mod:`.main`: the command and the process (token file, signals, TLS).
"""
