"""A transport and a model registered from the test suite alone, as a user's plugin would
be: `WIREMARK_PLUGINS=tests.plugins.plugin_json` imports this module in every wiremark
process (servers, load generators, bench), and no module of the package is edited.

- `plugin-json`: TF Serving's REST bodies as JSON under a media type of its own, served by
  the FastAPI server kind and driven by the HTTP/1.1 load driver.
- `fake_iris`: a tabular model in numpy (no TensorFlow), so servers start in about a
  second: a fixed linear map and a softmax, deterministic to the last bit.
"""

from __future__ import annotations

import numpy as np

from wiremark.payloads import samples
from wiremark.payloads.contract import Classes, Family
from wiremark.payloads.errors import InvalidInput
from wiremark.payloads.transport import WIRE_HTTP1, RestCodec, Transport, register
from wiremark.servers import runner

MEDIA = "application/vnd.wiremark-plugin+json"
TRANSPORT = "plugin-json"
MODEL = "fake_iris"


class FakeIris(runner.Runner):
    name = MODEL
    family = Family.TABULAR
    input_spec = "rows of 4 float32 features"
    output_spec = "class_id and 3 float32 probabilities"
    runtime_package = "numpy"
    uses_tensorflow = False
    WEIGHTS = np.array(
        [[0.4, 0.1, -0.3], [0.9, -0.2, -0.6], [-1.2, 0.3, 0.9], [-1.1, 0.1, 1.2]],
        dtype=np.float32,
    )

    def predict(self, batch):
        if not isinstance(batch, np.ndarray) or batch.ndim != 2 or batch.shape[1] != 4:
            raise InvalidInput("expected rows of 4 features", "instances")
        logits = batch.astype(np.float32) @ self.WEIGHTS
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
        return Classes(probabilities.argmax(axis=1), probabilities)

    def sample(self):
        return samples.iris_rows(2)[0]


CODEC = RestCodec(MEDIA)  # JSON bodies under a media type of the plugin's own
register(Transport(TRANSPORT, "Plugin JSON", "PlugJSON", WIRE_HTTP1, CODEC, "fastapi"))
runner.register(MODEL, Family.TABULAR, lambda: FakeIris)
