"""The node's HTTP side: nnunet_serve's API, node endpoints for operators, a dashboard and metrics,
served by uvicorn in the node's process beside the DICOM SCP (``http:`` section of the config).

``app.create_app(context)`` builds the FastAPI application from a :class:`context.HttpContext` (the
running node's journal, rules, executor, metrics...); ``server.HttpServer`` runs it. Routes are
grouped by concern (``routes_*``); unpacking uploads safely is :mod:`dicom_node.http.uploads`.
"""
