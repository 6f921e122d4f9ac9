"""The gRPC wire contract: the .proto files and the modules protoc generates from them.

Generated, never edited: ``make proto`` rewrites them and ``tests/unit/test_proto.py``
fails when they fall behind the .proto files. Both the server (``api/grpc/``) and the
client SDK import them, so this package imports nothing of ours.
"""
