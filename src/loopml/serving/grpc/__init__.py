"""Open Inference Protocol V2 over gRPC: KServe's ``inference.GRPCInferenceService``.

``loopml serve --grpc-port N`` (or ``LOOPML_GRPC_PORT``) starts a ``grpc.aio`` server in each
worker's event loop, beside the HTTP app, started and stopped by the worker's
:class:`~loopml.serving.runtime.Runtime`. It answers through the same router, batchers, prediction
log, metrics and API keys as ``/v2`` over HTTP (see :mod:`loopml.serving.grpc.service`).

``grpc_predict_v2.proto`` is the service definition; ``grpc_predict_v2_pb2*.py`` are generated from
it (never edited) and imported only when the gRPC server starts, so a process that also imports
``tritonclient.grpc`` (whose descriptors declare the same ``inference.*`` messages in the default
descriptor pool) must not start one.
"""
