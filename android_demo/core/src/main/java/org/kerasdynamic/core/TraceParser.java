package org.kerasdynamic.core;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Reads a trace file (format in {@code keras_dynamic/runtime/trace.py}, versions 1 and 2) into a
 * {@link Trace}. Whether the names it records (exits, stages, gates, routes) are the manifest's
 * is for the replay to check, which has the manifest.
 */
public final class TraceParser {
  public static final String FORMAT = "keras_dynamic.trace";
  /** The version of traces of linear chains (manifest version 1). */
  public static final long LINEAR_VERSION = 1;
  /** The newest version: traces of chains with gates and routes (manifest version 2). */
  public static final long VERSION = 2;

  private TraceParser() {}

  /** Parses and checks a trace: sizes agree with the sample count, indexes are in range. */
  public static Trace parse(byte[] bytes, String source) {
    Map<String, Object> top = Fields.object(StrictJson.parse(bytes, source), source);
    if (!FORMAT.equals(top.get("format"))) {
      throw new ManifestException(source + ": not a trace ('format' must be '" + FORMAT + "').");
    }
    Object versionValue = top.get("version");
    if (!(versionValue instanceof Long)
        || ((Long) versionValue != LINEAR_VERSION && (Long) versionValue != VERSION)) {
      throw new ManifestException(
          source + ": unsupported trace version " + Fields.show(versionValue)
              + "; this reader reads versions [" + LINEAR_VERSION + ", " + VERSION + "].");
    }
    boolean graph = (Long) versionValue == VERSION;
    String sha = Fields.string(top, "manifest_sha256", source);
    long count = Fields.integer(top, "samples", source);
    if (count < 0 || count > Integer.MAX_VALUE) {
      throw new ManifestException(source + ": 'samples' out of range: " + count);
    }
    int samples = (int) count;
    List<String> stages = graph ? names(top, "stages", source) : null;
    boolean[][] recorded =
        graph ? bools(Fields.list(top, "recorded_stages", source), samples, stages.size(),
            source + ": 'recorded_stages'") : null;
    List<String> exits = new ArrayList<>();
    exits.addAll(names(top, "exits", source));
    Map<String, Trace.Samples> tensors =
        arrays(Fields.child(top, "tensors", source), samples, true, source + ": tensor");
    Map<String, Trace.Samples> inputs =
        top.get("inputs") == null
            ? null
            : arrays(Fields.child(top, "inputs", source), samples, false, source + ": input");
    int[] targets = top.get("targets") == null ? null : ints(top, "targets", samples, source);
    List<Trace.Run> runs = new ArrayList<>();
    for (Object value : Fields.list(top, "runs", source)) {
      runs.add(run(Fields.object(value, source + ": run"), samples, exits, stages, source));
    }
    return new Trace(
        (int) (long) (Long) versionValue, sha, samples, stages, recorded, exits, tensors, inputs,
        targets, runs);
  }

  /** A non-empty list of distinct strings. */
  private static List<String> names(Map<String, Object> top, String key, String source) {
    List<String> names = new ArrayList<>();
    for (Object name : Fields.list(top, key, source)) {
      if (!(name instanceof String) || names.contains(name)) {
        throw new ManifestException(source + ": '" + key + "' must be distinct strings.");
      }
      names.add((String) name);
    }
    if (names.isEmpty()) {
      throw new ManifestException(source + ": '" + key + "' must not be empty.");
    }
    return names;
  }

  /**
   * {@code samples} rows of JSON booleans, each {@code width} long ({@code width < 0}: any
   * length at least 1, the same for every row).
   */
  private static boolean[][] bools(List<Object> rows, int samples, int width, String where) {
    if (rows.size() != samples) {
      throw new ManifestException(where + " needs " + samples + " rows.");
    }
    boolean[][] values = new boolean[samples][];
    for (int j = 0; j < samples; j++) {
      Object row = rows.get(j);
      int expected = width >= 0 ? width : j > 0 ? values[0].length : -1;
      if (!(row instanceof List) || ((List<?>) row).isEmpty()
          || (expected >= 0 && ((List<?>) row).size() != expected)) {
        throw new ManifestException(
            where + ": row " + j + " must be a list of " + (expected >= 0 ? expected + " " : "")
                + "booleans.");
      }
      List<?> items = (List<?>) row;
      values[j] = new boolean[items.size()];
      for (int i = 0; i < items.size(); i++) {
        if (!(items.get(i) instanceof Boolean)) {
          throw new ManifestException(where + ": row " + j + " must hold booleans only.");
        }
        values[j][i] = (Boolean) items.get(i);
      }
    }
    return values;
  }

  private static Map<String, Trace.Samples> arrays(
      Map<String, Object> entries, int samples, boolean withStage, String where) {
    Map<String, Trace.Samples> arrays = new LinkedHashMap<>();
    for (Map.Entry<String, Object> named : entries.entrySet()) {
      String at = where + " '" + named.getKey() + "'";
      Map<String, Object> entry = Fields.object(named.getValue(), at);
      String stage = withStage ? Fields.string(entry, "stage", at) : null;
      DType dtype = DType.parse(Fields.string(entry, "dtype", at), at);
      if (dtype == DType.FLOAT16) {
        throw new ManifestException(at + ": float16 arrays are not supported in traces.");
      }
      List<Object> shape = Fields.list(entry, "shape", at);
      if (shape.isEmpty() || !Long.valueOf(samples).equals(shape.get(0))) {
        throw new ManifestException(
            at + ": the shape must start with the sample count " + samples + ". Received: "
                + Fields.show(shape));
      }
      int[] sampleShape = new int[shape.size() - 1];
      long perSample = 1;
      for (int i = 1; i < shape.size(); i++) {
        long dim = Fields.longValue(shape.get(i), at + " dimension");
        if (dim < 1 || dim > Integer.MAX_VALUE) {
          throw new ManifestException(at + ": dimensions must be positive: " + Fields.show(shape));
        }
        sampleShape[i - 1] = (int) dim;
        perSample *= dim;
      }
      byte[] data;
      try {
        data = Base64.getDecoder().decode(Fields.string(entry, "data", at));
      } catch (IllegalArgumentException e) {
        throw new ManifestException(at + ": 'data' is not base64 (" + e.getMessage() + ").");
      }
      if (data.length != samples * perSample * dtype.bytes()) {
        throw new ManifestException(
            at + ": " + data.length + " bytes of data for shape " + Fields.show(shape) + " "
                + dtype.jsonName() + ".");
      }
      arrays.put(named.getKey(), new Trace.Samples(stage, dtype, sampleShape,
          rows(data, dtype, samples, (int) perSample)));
    }
    return arrays;
  }

  private static double[][] rows(byte[] data, DType dtype, int samples, int perSample) {
    ByteBuffer buffer = ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN);
    double[][] rows = new double[samples][perSample];
    for (double[] row : rows) {
      for (int i = 0; i < perSample; i++) {
        row[i] = element(buffer, dtype);
      }
    }
    return rows;
  }

  private static double element(ByteBuffer buffer, DType dtype) {
    switch (dtype) {
      case FLOAT32:
        return buffer.getFloat();
      case INT8:
        return buffer.get();
      case UINT8:
        return buffer.get() & 0xFF;
      case INT16:
        return buffer.getShort();
      case INT32:
        return buffer.getInt();
      case INT64:
        return (double) buffer.getLong();
      default:
        throw new IllegalStateException("unreachable: " + dtype);
    }
  }

  private static Trace.Run run(
      Map<String, Object> run, int samples, List<String> exits, List<String> stages,
      String source) {
    String name = Fields.string(run, "name", source + ": run");
    String where = source + ": run '" + name + "'";
    Map<String, ExitRule> policy = Policies.parseRules(Fields.required(run, "policy", where), where);
    if (!policy.keySet().equals(new java.util.HashSet<>(exits))) {
      throw new ManifestException(where + ": 'policy' must give a rule for every exit " + exits);
    }
    int[] exit = ints(run, "exit", samples, where);
    for (int index : exit) {
      if (index < 0 || index >= exits.size()) {
        throw new ManifestException(where + ": exit index " + index + " out of range.");
      }
    }
    int[] label = ints(run, "label", samples, where);
    Map<String, Double[]> scores = new LinkedHashMap<>();
    Map<String, Object> recorded = Fields.child(run, "scores", where);
    for (String exitName : exits) {
      List<Object> values = Fields.list(recorded, exitName, where + " scores");
      if (values.size() != samples) {
        throw new ManifestException(where + ": scores of '" + exitName + "' need " + samples + " values.");
      }
      Double[] row = new Double[samples];
      for (int i = 0; i < samples; i++) {
        Object value = values.get(i);
        if (value != null && !Fields.isNumber(value)) {
          throw new ManifestException(where + ": scores must be numbers or null.");
        }
        row[i] = value == null ? null : Fields.doubleValue(value);
      }
      scores.put(exitName, row);
    }
    if (stages == null) {
      return new Trace.Run(name, policy, exit, label, scores, null, null, null);
    }
    Map<String, boolean[][]> gates = new LinkedHashMap<>();
    for (Map.Entry<String, Object> gate : Fields.child(run, "gates", where).entrySet()) {
      String at = where + ": gate '" + gate.getKey() + "'";
      if (!(gate.getValue() instanceof List)) {
        throw new ManifestException(at + " must be a list of rows.");
      }
      gates.put(gate.getKey(), bools(castList(gate.getValue()), samples, -1, at));
    }
    Map<String, int[]> routes = new LinkedHashMap<>();
    Map<String, Object> recordedRoutes = Fields.child(run, "routes", where);
    for (String route : recordedRoutes.keySet()) {
      int[] chosen = ints(recordedRoutes, route, samples, where + ": route");
      for (int index : chosen) {
        if (index < -1) {
          throw new ManifestException(
              where + ": route '" + route + "' has expert " + index + " (-1: not reached).");
        }
      }
      routes.put(route, chosen);
    }
    boolean[][] stagesRun =
        bools(Fields.list(run, "stages_run", where), samples, stages.size(),
            where + ": 'stages_run'");
    return new Trace.Run(name, policy, exit, label, scores, gates, routes, stagesRun);
  }

  @SuppressWarnings("unchecked")
  private static List<Object> castList(Object value) {
    return (List<Object>) value;
  }

  private static int[] ints(Map<String, Object> object, String key, int samples, String where) {
    List<Object> values = Fields.list(object, key, where);
    if (values.size() != samples) {
      throw new ManifestException(where + ": '" + key + "' needs " + samples + " values.");
    }
    int[] ints = new int[samples];
    for (int i = 0; i < samples; i++) {
      long value = Fields.longValue(values.get(i), where + ": '" + key + "'");
      if (value < Integer.MIN_VALUE || value > Integer.MAX_VALUE) {
        throw new ManifestException(where + ": '" + key + "' value out of range: " + value);
      }
      ints[i] = (int) value;
    }
    return ints;
  }
}
