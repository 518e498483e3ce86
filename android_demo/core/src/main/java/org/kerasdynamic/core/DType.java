package org.kerasdynamic.core;

/** The tensor element types a manifest may name (numpy dtype names). */
public enum DType {
  FLOAT32("float32", 4),
  FLOAT16("float16", 2),
  INT8("int8", 1),
  UINT8("uint8", 1),
  INT16("int16", 2),
  INT32("int32", 4),
  INT64("int64", 8);

  private final String jsonName;
  private final int bytes;

  DType(String jsonName, int bytes) {
    this.jsonName = jsonName;
    this.bytes = bytes;
  }

  /** The numpy name used in manifests and traces. */
  public String jsonName() {
    return jsonName;
  }

  /** Bytes per element. */
  public int bytes() {
    return bytes;
  }

  static DType parse(String name, String where) {
    for (DType type : values()) {
      if (type.jsonName.equals(name)) {
        return type;
      }
    }
    throw new ManifestException(
        where + ": unsupported dtype '" + name + "'; supported: "
            + "float16, float32, int16, int32, int64, int8, uint8.");
  }
}
