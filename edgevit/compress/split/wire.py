"""What travels between the client and a sub-model server: gRPC's generic handlers, tensors as `.npy` bytes.

One unary method, `/edgevit.split.SubModel/Infer`: the request is a `1x3xHxW` float32 image, the reply the
sub-model's logits, both as numpy's `.npy` format (shape and dtype travel with the data; read with
`allow_pickle=False`, so a peer cannot make the other side run code). The server names the bundle it serves in
the reply's trailing metadata (`edgevit-manifest-sha256`) and the client refuses a reply from a bundle its
fusion spec does not pin. No generated code: the method is registered with explicit (de)serializers.
"""

from __future__ import annotations

import io

import numpy as np

SERVICE = "edgevit.split.SubModel"
INFER = "Infer"
INFER_PATH = f"/{SERVICE}/{INFER}"
MANIFEST_KEY = "edgevit-manifest-sha256"
MAX_MESSAGE_BYTES = 64 * 2**20  # a 1024x1024 float32 image is 12 MB; gRPC's default cap is 4 MB


def to_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def from_npy(data: bytes) -> np.ndarray:
    """A numeric array from `.npy` bytes; anything else (pickled objects, garbage) raises ValueError."""
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, EOFError) as exc:
        raise ValueError(f"not a .npy tensor ({exc})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        raise ValueError("not a numeric .npy tensor")
    return array
