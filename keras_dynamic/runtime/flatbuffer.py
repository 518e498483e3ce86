"""The TFLite flatbuffer schema, to read and rewrite ``.tflite`` files without TensorFlow.

``ai-edge-litert`` ships the generated schema (``schema_py_generated``) and
``flatbuffers``; TensorFlow ships the same schema, used where LiteRT is not
installed. Rewrites go through the schema's object API: unpack with
``schema.ModelT.InitFromPackedBuf``, change the objects, `pack` them again.
"""

import functools


@functools.cache
def tflite_schema():
    """The generated TFLite schema module.

    Example:

    >>> schema = tflite_schema()
    >>> schema.BuiltinOperator.QUANTIZE
    114
    """
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        try:
            from tensorflow.lite.python import schema_py_generated
        except ImportError:
            raise ImportError(
                "Reading a TFLite flatbuffer needs the schema that `ai-edge-litert` "
                "ships; install it (pip install ai-edge-litert)."
            ) from None
    return schema_py_generated


def pack(model, size_hint: int = 0) -> bytes:
    """The bytes of an unpacked ``ModelT``, with the ``TFL3`` file identifier."""
    import flatbuffers

    builder = flatbuffers.Builder(size_hint + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


__all__ = ["tflite_schema", "pack"]
