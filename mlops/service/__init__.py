"""The parts of the prediction service that are the framework's, not the project's.

A project's ``models/service.py`` (the BentoML service definition, see
``mlops init``) builds on these: the request guard (API key, body limit), greedy
batching, the Arrow endpoint, the OpenAPI document and the shadow endpoint, all
configured by the one settings value the server is started with
(:mod:`mlops.service.settings`); :mod:`mlops.service.asgi` holds the ASGI types they and
the swap proxy share.
"""
