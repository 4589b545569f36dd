"""The seqserve HTTP service: ONNX Runtime sessions behind typed FastAPI endpoints.

Data flows one way: request -> schema -> task -> batcher -> session -> decode -> response.
This package never imports torch.
"""
