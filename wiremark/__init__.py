"""wiremark: what the transport costs when you serve a model.

The code lives in the top-level folders of the repository, installed as subpackages:
`wiremark.payloads` (the wire contract), `wiremark.servers` (models and servers),
`wiremark.harness` (clients, load, conformance), `wiremark.reports` (results to HTML).
"""

__version__ = "0.1.0"
