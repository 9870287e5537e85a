"""Serving: predictors over MXNet or ONNX Runtime, input decoding, response payloads, micro-batching, the HTTP
app with its metrics, and the web page."""
