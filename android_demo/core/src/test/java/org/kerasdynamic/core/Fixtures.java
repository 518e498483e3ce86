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
 * Manifests for the tests, as mutable JSON trees. {@link #manifest()} (version 1): three stages,
 * the first stage's feature map read again by the third (a skip across exit 2), an exit on each
 * stage. {@link #gatedManifest()} (version 2): a two-group gate, an exit, and a route over three
 * experts, laid out as the exporter lays them out.
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

  /**
   * A version-2 manifest as the exporter writes one: {@code stage_1} computes gate {@code g}
   * (two groups), whose columns switch {@code stage_2} and {@code stage_3}; {@code stage_4}
   * merges them, holds {@code exit_1} and computes route {@code r}, which chooses one of the
   * experts {@code stage_5..7}; {@code stage_8} merges the experts and holds {@code final}.
   * Stage i has {@code 10 * i} MACs.
   */
  static Map<String, Object> gatedManifest() {
    Map<String, Object> manifest = manifest();
    manifest.put("version", 2L);
    manifest.put("features", list("exits", "gates", "routes"));
    manifest.put("stages", list(
        gatedStage(1, list(tensor("image", 8, 8, 1)), list(tensor("stem", 8, 8, 4), tensor("g", 2)),
            always("stage_4"), gate("stage_2", "g", 0), gate("stage_3", "g", 1)),
        gatedStage(2, list(tensor("stem", 8, 8, 4)), list(tensor("group_a", 8, 8, 2))),
        gatedStage(3, list(tensor("stem", 8, 8, 4)), list(tensor("group_b", 8, 8, 2))),
        gatedStage(4,
            list(tensor("g", 2), tensor("group_a", 8, 8, 2), tensor("group_b", 8, 8, 2)),
            list(tensor("exit_1", 10), tensor("merged", 8, 8, 4), tensor("r", 3)),
            always("stage_8"), route("stage_5", "r", 0), route("stage_6", "r", 1),
            route("stage_7", "r", 2)),
        gatedStage(5, list(tensor("merged", 8, 8, 4)), list(tensor("expert_0", 8, 8, 4))),
        gatedStage(6, list(tensor("merged", 8, 8, 4)), list(tensor("expert_1", 8, 8, 4))),
        gatedStage(7, list(tensor("merged", 8, 8, 4)), list(tensor("expert_2", 8, 8, 4))),
        gatedStage(8,
            list(tensor("r", 3), tensor("expert_0", 8, 8, 4), tensor("expert_1", 8, 8, 4),
                tensor("expert_2", 8, 8, 4)),
            list(tensor("final", 10)))));
    manifest.put("exits", list(
        object("name", "exit_1", "stage", "stage_4", "tensor", "exit_1", "kind", "classifier",
            "values", "logits", "policy", rule("max_softmax", 0.9)),
        object("name", "final", "stage", "stage_8", "tensor", "final", "kind", "classifier",
            "values", "logits", "policy", null)));
    manifest.put("gates", list(object("name", "g", "stage", "stage_1", "tensor", "g", "groups", 2L)));
    manifest.put("routes",
        list(object("name", "r", "stage", "stage_4", "tensor", "r", "experts", 3L)));
    return manifest;
  }

  static Map<String, Object> always(String target) {
    return object("stage", target, "when", "always");
  }

  static Map<String, Object> gate(String target, String gate, long index) {
    return object("stage", target, "when", object("gate", gate, "index", index));
  }

  static Map<String, Object> route(String target, String route, long index) {
    return object("stage", target, "when", object("route", route, "index", index));
  }

  private static Map<String, Object> gatedStage(
      int number, List<Object> inputs, List<Object> outputs, Object... edges) {
    String name = "stage_" + number;
    return object(
        "name", name, "file", FILE, "signature", name, "inputs", inputs, "outputs", outputs,
        "macs", 10L * number, "next", list(edges));
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
