"""Model runners and the thin servers that expose them: gRPC, and HTTP speaking JSON or
MessagePack. Every server process loads each model once, at start-up, and the transports
call the same runner objects through the same codecs in `wiremark.payloads`."""
