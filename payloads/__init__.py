"""The wire contract: protobuf messages, REST bodies, codecs and sample inputs.

Nothing here knows about servers or load generation; servers and clients both import it,
so an encoding is written once and read back by the same code.
"""
