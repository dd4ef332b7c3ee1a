"""The torch-free REST gateway in front of the gRPC workers."""
