"""The client side of a split: fan one frame out to every device, gather within a deadline, fuse.

All calls start together and share one deadline, so a frame costs the slowest answering device, never more than
the deadline. A device that is gone (connection refused), fails, or is still busy at the deadline is left out:
the prediction comes from the rest, flagged partial, with the reason per missing device. A device answering
from a bundle the spec does not pin is an error, not a partial result: its numbers would be fused as the wrong
classes. Needs grpcio and numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType

import numpy as np

from edgevit.compress.split.fusion import FusionSpec, Prediction, fuse
from edgevit.compress.split.wire import INFER_PATH, MANIFEST_KEY, MAX_MESSAGE_BYTES, from_npy, to_npy
from edgevit.errors import EdgevitError

DEFAULT_DEADLINE_S = 2.0


class SplitClient:
    """Channels to every device of `spec` (addresses from the spec, or `addresses` by device name)."""

    def __init__(
        self, spec: FusionSpec, addresses: Mapping[str, str] | None = None, deadline_s: float = DEFAULT_DEADLINE_S
    ) -> None:
        import grpc

        addresses = dict(addresses or {})
        unknown = sorted(set(addresses) - {d.name for d in spec.devices})
        if unknown:
            spec.device(unknown[0])  # raises, naming the devices there are
        if not deadline_s > 0:
            raise EdgevitError(f"the deadline must be positive, not {deadline_s} s")
        self.spec, self.deadline_s = spec, deadline_s
        self._channels, self._calls = {}, {}
        options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        for device in spec.devices:
            address = addresses.get(device.name) or device.address
            if address is None:
                raise EdgevitError(f"device {device.name!r} has no address; pass --address {device.name}=HOST:PORT")
            channel = grpc.insecure_channel(address, options=options)
            self._channels[device.name] = channel
            self._calls[device.name] = channel.unary_unary(
                INFER_PATH, request_serializer=to_npy, response_deserializer=from_npy
            )

    def gather(self, image: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """Every device's logits for one `1x3xHxW` image, and the devices that did not answer (name → why)."""
        import grpc

        image = np.ascontiguousarray(image, dtype=np.float32)
        expected = (1, 3, *self.spec.input_size)
        if image.shape != expected:
            raise EdgevitError(f"the sub-models take one {list(expected)} image, not {list(image.shape)}")
        pending = {name: call.future(image, timeout=self.deadline_s) for name, call in self._calls.items()}
        outputs, missing = {}, {}
        for name, future in pending.items():
            try:
                logits = future.result()
            except grpc.RpcError as exc:
                missing[name] = f"{exc.code().name}: {exc.details()}"
                continue
            served = dict(future.trailing_metadata() or ()).get(MANIFEST_KEY)
            expected = self.spec.device(name).manifest_sha256
            if served != expected:
                raise EdgevitError(
                    f"device {name!r} serves a bundle the fusion spec does not pin (manifest sha256 "
                    f"{(served or 'none')[:12]}…, expected {expected[:12]}…); serve this split's bundle there"
                )
            outputs[name] = logits
        return outputs, missing

    def predict(self, image: np.ndarray) -> Prediction:
        """The fused prediction for one image; partial if some devices did not answer, an error if none did."""
        outputs, missing = self.gather(image)
        if not outputs:
            reasons = "; ".join(f"{name}: {why}" for name, why in missing.items())
            raise EdgevitError(f"no device answered within {self.deadline_s:g} s ({reasons}); start `edgevit serve`")
        return fuse(self.spec, outputs, missing)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()

    def __enter__(self) -> SplitClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
