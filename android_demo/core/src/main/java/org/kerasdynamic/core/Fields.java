package org.kerasdynamic.core;

import java.math.BigInteger;
import java.util.List;
import java.util.Map;

/**
 * Typed access to parsed JSON values, with the Python reader's refusals and messages.
 *
 * <p>As in {@code keras_dynamic/runtime/manifest.py}'s {@code _require}: a key must be present
 * and of the stated type, and a boolean is never a number. Integers must be JSON integer literals
 * (no fraction or exponent) that fit in a {@code long}.
 */
final class Fields {
  /** Longest rendering of a received value in a message. */
  private static final int MAX_SHOWN = 80;

  private Fields() {}

  @SuppressWarnings("unchecked")
  static Map<String, Object> object(Object value, String where) {
    if (!(value instanceof Map)) {
      throw new ManifestException(where + ": expected a JSON object. Received: " + show(value));
    }
    return (Map<String, Object>) value;
  }

  static Object required(Map<String, Object> object, String key, String where) {
    if (!object.containsKey(key)) {
      throw new ManifestException(where + ": missing required key '" + key + "'.");
    }
    return object.get(key);
  }

  static String string(Map<String, Object> object, String key, String where) {
    Object value = required(object, key, where);
    if (!(value instanceof String)) {
      throw wrongType(where, key, "str", value);
    }
    return (String) value;
  }

  static long integer(Map<String, Object> object, String key, String where) {
    Object value = required(object, key, where);
    if (!(value instanceof Long) && !(value instanceof BigInteger)) {
      throw wrongType(where, key, "int", value);
    }
    return longValue(value, where + ": '" + key + "'");
  }

  @SuppressWarnings("unchecked")
  static List<Object> list(Map<String, Object> object, String key, String where) {
    Object value = required(object, key, where);
    if (!(value instanceof List)) {
      throw wrongType(where, key, "list", value);
    }
    return (List<Object>) value;
  }

  static Map<String, Object> child(Map<String, Object> object, String key, String where) {
    Object value = required(object, key, where);
    if (!(value instanceof Map)) {
      throw wrongType(where, key, "dict", value);
    }
    return object(value, where);
  }

  /** A JSON integer that fits in a long; {@code what} names it in the message. */
  static long longValue(Object value, String what) {
    if (value instanceof Long) {
      return (Long) value;
    }
    if (value instanceof BigInteger) {
      throw new ManifestException(what + " is out of the 64-bit integer range: " + show(value));
    }
    throw new ManifestException(what + " must be an integer. Received: " + show(value));
  }

  /** Whether {@code value} is a JSON number (booleans are not). */
  static boolean isNumber(Object value) {
    return value instanceof Long || value instanceof BigInteger || value instanceof Double;
  }

  /** A JSON number as a double, rounded as Python's {@code float(...)} rounds it. */
  static double doubleValue(Object value) {
    if (value instanceof Long) {
      return (double) (Long) value;
    }
    if (value instanceof BigInteger) {
      return ((BigInteger) value).doubleValue();
    }
    return (Double) value;
  }

  /** A received value for a message, cut to {@value #MAX_SHOWN} characters. */
  static String show(Object value) {
    String text;
    if (value == null) {
      text = "None";
    } else if (value instanceof String) {
      text = "'" + value + "'";
    } else {
      text = String.valueOf(value);
    }
    return text.length() <= MAX_SHOWN ? text : text.substring(0, MAX_SHOWN) + "...";
  }

  private static ManifestException wrongType(String where, String key, String type, Object value) {
    return new ManifestException(
        where + ": '" + key + "' must be of type " + type + ". Received: " + show(value));
  }
}
