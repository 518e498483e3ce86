package org.kerasdynamic.core;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.json.JsonWriteFeature;
import java.io.IOException;
import java.io.StringWriter;
import java.io.UncheckedIOException;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Manifests for the tests, as mutable JSON trees: three stages, the first stage's feature map
 * read again by the third (a skip across exit 2), an exit on each stage.
 */
final class Fixtures {
  static final String FILE = "stages.tflite";

  private Fixtures() {}

  static Map<String, Object> object(Object... keysAndValues) {
    Map<String, Object> object = new LinkedHashMap<>();
    for (int i = 0; i < keysAndValues.length; i += 2) {
      object.put((String) keysAndValues[i], keysAndValues[i + 1]);
    }
    return object;
  }

  static List<Object> list(Object... values) {
    return new ArrayList<>(Arrays.asList(values));
  }

  static Map<String, Object> tensor(String name, Object... dims) {
    List<Object> shape = list((Object) null);
    for (Object dim : dims) {
      shape.add(((Number) dim).longValue());
    }
    return object("name", name, "shape", shape, "dtype", "float32", "quantization", null);
  }

  static Map<String, Object> rule(String kind, double threshold) {
    return object("kind", kind, "threshold", threshold);
  }

  /** A valid manifest whose single file is {@code fileBytes} long with hash {@code sha256}. */
  static Map<String, Object> manifest(String sha256, long fileBytes) {
    return object(
        "format", "keras_dynamic.stages",
        "version", 1L,
        "features", list("exits"),
        "producer", object("keras_dynamic", "0.1.0"),
        "inputs", list(tensor("image", 8, 8, 1)),
        "files", list(object("path", FILE, "sha256", sha256, "bytes", fileBytes)),
        "entry", "stage_1",
        "stages", list(
            stage("stage_1", list(tensor("image", 8, 8, 1)),
                list(tensor("exit_1", 10), tensor("conv_1", 8, 8, 16)), 100, "stage_2"),
            stage("stage_2", list(tensor("conv_1", 8, 8, 16)),
                list(tensor("exit_2", 10), tensor("conv_2", 8, 8, 16)), 200, "stage_3"),
            stage("stage_3", list(tensor("conv_2", 8, 8, 16), tensor("conv_1", 8, 8, 16)),
                list(tensor("final", 10)), 300, null)),
        "exits", list(
            object("name", "exit_1", "stage", "stage_1", "tensor", "exit_1", "kind", "classifier",
                "policy", rule("max_softmax", 0.9)),
            object("name", "exit_2", "stage", "stage_2", "tensor", "exit_2", "kind", "classifier",
                "policy", rule("entropy", 0.5)),
            object("name", "final", "stage", "stage_3", "tensor", "final", "kind", "classifier",
                "policy", null)),
        "gates", list());
  }

  static Map<String, Object> manifest() {
    return manifest(repeat('a', 64), 4);
  }

  private static Map<String, Object> stage(
      String name, List<Object> inputs, List<Object> outputs, long macs, String next) {
    return object(
        "name", name, "file", FILE, "signature", name, "inputs", inputs, "outputs", outputs,
        "macs", macs, "next", next == null ? list() : list(object("stage", next, "when", "always")));
  }

  @SuppressWarnings("unchecked")
  static Map<String, Object> at(Map<String, Object> tree, Object... path) {
    Object node = tree;
    for (Object step : path) {
      node = step instanceof Integer
          ? ((List<Object>) node).get((Integer) step)
          : ((Map<String, Object>) node).get(step);
    }
    return (Map<String, Object>) node;
  }

  static String repeat(char c, int n) {
    char[] chars = new char[n];
    Arrays.fill(chars, c);
    return new String(chars);
  }

  /** The tree as JSON text, written by Jackson. */
  static String json(Object tree) {
    StringWriter out = new StringWriter();
    // Escaped non-ASCII keeps unpaired surrogates intact through the UTF-8 bytes.
    JsonFactory factory = JsonFactory.builder().enable(JsonWriteFeature.ESCAPE_NON_ASCII).build();
    try (JsonGenerator generator = factory.createGenerator(out)) {
      write(generator, tree);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    return out.toString();
  }

  static byte[] bytes(Object tree) {
    return json(tree).getBytes(StandardCharsets.UTF_8);
  }

  private static void write(JsonGenerator generator, Object value) throws IOException {
    if (value instanceof Map) {
      generator.writeStartObject();
      for (Map.Entry<?, ?> entry : ((Map<?, ?>) value).entrySet()) {
        generator.writeFieldName((String) entry.getKey());
        write(generator, entry.getValue());
      }
      generator.writeEndObject();
    } else if (value instanceof List) {
      generator.writeStartArray();
      for (Object item : (List<?>) value) {
        write(generator, item);
      }
      generator.writeEndArray();
    } else if (value == null) {
      generator.writeNull();
    } else if (value instanceof String) {
      generator.writeString((String) value);
    } else if (value instanceof Boolean) {
      generator.writeBoolean((Boolean) value);
    } else if (value instanceof BigDecimal) {
      generator.writeNumber((BigDecimal) value);
    } else if (value instanceof BigInteger) {
      generator.writeNumber((BigInteger) value);
    } else if (value instanceof Long || value instanceof Integer) {
      generator.writeNumber(((Number) value).longValue());
    } else {
      generator.writeNumber(((Number) value).doubleValue());
    }
  }
}
