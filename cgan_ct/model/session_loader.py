"""A SavedModel loaded the way TensorFlow Serving's C++ server loads one: a TF1 session, not the TF2 object graph.

``tf.saved_model.load`` restores variables through the object graph, so it
runs models that a server cannot (tensorflow/serving #2250). ``SessionModel``
loads with ``tf.compat.v1.saved_model.loader.load``: the graph's restore op
fills the variables it knows, and every signature is a graph fed by name.
Calls go through a callable of the C++ session, so, as in TF Serving, nothing
in Python checks the fed shapes before the model's own graph sees them.
"""

from __future__ import annotations

import pathlib

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2

SERVE_TAG = "serve"


class SessionModel:
    """``model_dir`` (a SavedModel folder) loaded into a session of its own graph; ``run(signature, **inputs)``."""

    def __init__(self, model_dir):
        self.model_dir = pathlib.Path(model_dir)
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta_graph = tf.compat.v1.saved_model.loader.load(self.session, [SERVE_TAG], str(self.model_dir))
        self.signatures = dict(meta_graph.signature_def)
        self._callables = {}

    def uninitialized_variables(self) -> list[str]:
        """Names of the graph's variable handles that the restore left without a value (a server's
        FailedPreconditionError "Could not find variable" at the first call that reads one)."""
        handles = [op for op in self.graph.get_operations() if op.type == "VarHandleOp"]
        with self.graph.as_default():
            checks = [tf.raw_ops.VarIsInitializedOp(resource=op.outputs[0]) for op in handles]
        ready = self.session.run(checks) if checks else []
        return sorted(op.name for op, ok in zip(handles, ready, strict=True) if not ok)

    def input_names(self, signature: str) -> list[str]:
        return sorted(self.signatures[signature].inputs)

    def run(self, signature: str, **inputs) -> dict[str, np.ndarray]:
        """The signature's outputs by name for numpy ``inputs`` by name; the runtime's errors pass unchanged."""
        names = sorted(inputs)
        call, outputs = self._callable(signature, tuple(names))
        return dict(zip(outputs, call(*(np.asarray(inputs[n]) for n in names)), strict=True))

    def _callable(self, signature: str, names: tuple[str, ...]):
        key = (signature, names)
        if key not in self._callables:
            spec = self.signatures[signature]
            if sorted(spec.inputs) != list(names):
                raise ValueError(f"signature {signature!r} takes {sorted(spec.inputs)}, got {list(names)}")
            outputs = sorted(spec.outputs)
            options = config_pb2.CallableOptions(
                feed=[spec.inputs[n].name for n in names], fetch=[spec.outputs[n].name for n in outputs]
            )
            # Session.run and make_callable check feed shapes in Python; the C++ server does not.
            self._callables[key] = (self.session._make_callable_from_options(options), outputs)
        return self._callables[key]

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> SessionModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
