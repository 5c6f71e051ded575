"""One sub-model behind gRPC: `edgevit serve BUNDLE --port P` on each device.

The bundle is read like any other (`converters.bundle`: the manifest validated, the artifact's size and sha256
checked before its runtime opens it) and its one unit runs through the target's runner; nothing of the model's
code is imported. Requests run on a small thread pool (the runtimes' sessions are thread-safe); a request of the
wrong shape or type is answered INVALID_ARGUMENT, not run.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import numpy as np

from edgevit.compress.split.fusion import manifest_sha256
from edgevit.compress.split.wire import INFER, MANIFEST_KEY, MAX_MESSAGE_BYTES, SERVICE, from_npy, to_npy
from edgevit.errors import EdgevitError

WORKERS = 4


class SubModel:
    """A bundle's single unit, loaded through its runner: `1x3xHxW` float32 in, logits out."""

    def __init__(self, bundle: Path, target: str | None = None, threads: int | None = None) -> None:
        from converters.bundle import artifact_for, read_manifest, unit_runner

        manifest = read_manifest(bundle)
        if len(manifest["units"]) != 1:
            names = ", ".join(u["name"] for u in manifest["units"])
            raise EdgevitError(f"{bundle} has {len(manifest['units'])} units ({names}); serve serves one-unit bundles")
        unit = manifest["units"][0]
        self.artifact = artifact_for(manifest, unit["name"], target)
        self.shape = tuple(unit["inputs"][0]["shape"])
        self.manifest_sha256 = manifest_sha256(bundle)
        self._run = unit_runner(bundle, self.artifact, threads)

    def problem(self, image: np.ndarray) -> str | None:
        """Why `image` cannot be run, or None."""
        if image.dtype != np.float32 or image.shape != self.shape:
            return f"expected a float32 tensor of shape {list(self.shape)}, got {image.dtype} {list(image.shape)}"
        return None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        import torch

        return self._run(torch.from_numpy(image))[0].numpy()


def start(model: SubModel, host: str, port: int):
    """A started gRPC server for `model` and the port it listens on (`port` 0: a free one)."""
    import grpc

    def infer(image: np.ndarray, context: grpc.ServicerContext) -> np.ndarray:
        why = model.problem(image)
        if why is not None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, why)
        context.set_trailing_metadata(((MANIFEST_KEY, model.manifest_sha256),))
        return model(image)

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {INFER: grpc.unary_unary_rpc_method_handler(infer, request_deserializer=from_npy, response_serializer=to_npy)},
    )
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.so_reuseport", 0)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS), handlers=(handler,), options=options)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise EdgevitError(
            f"cannot listen on {host}:{port} (in use, or not an address of this machine); try another --port"
        )
    server.start()
    return server, bound


def serve(
    bundle: Path, target: str | None, host: str, port: int, threads: int | None, ready: Callable[[SubModel, int], None]
) -> None:
    """Serve `bundle` until the process is stopped; `ready(model, port)` is told once it listens."""
    model = SubModel(bundle, target, threads)
    server, bound = start(model, host, port)
    try:
        ready(model, bound)
        server.wait_for_termination()
    finally:
        server.stop(grace=None)
