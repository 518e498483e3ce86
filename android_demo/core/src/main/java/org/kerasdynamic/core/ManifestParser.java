package org.kerasdynamic.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

/**
 * Turns a parsed manifest.json into a {@link Manifest}, refusing what the Python reader ({@code
 * validate_manifest} in keras_dynamic/runtime/manifest.py) refuses: wrong format or version,
 * missing keys and wrong types, features this reader does not implement, unsafe file paths,
 * malformed hashes, tensor shapes and dtypes, duplicate names, unknown references, malformed
 * edges and decision tables. Cross references between stages and exits are checked by {@link
 * GraphCheck}, the gate and route tables by {@link DecisionTables}.
 *
 * <p>Versions 1 (linear chains) and 2 (gates and routes: conditional edges, stages listed in run
 * order) are read. Where Python would accept a value only by accident of its types it is refused
 * here: a batch dimension of {@code true} or {@code 1.0} (Python compares them equal to 1),
 * integers outside 64 bits, dimensions outside 32 bits.
 */
public final class ManifestParser {
  public static final String FORMAT = "keras_dynamic.stages";
  /** The linear chains' version, still written for models without gates or routers. */
  public static final long LINEAR_VERSION = 1;
  /** The newest version: gates and routes. */
  public static final long VERSION = 2;

  /** The features this reader implements. */
  public static final Set<String> FEATURES =
      Collections.unmodifiableSet(new TreeSet<>(Arrays.asList("exits", "gates", "routes")));

  private ManifestParser() {}

  /** Parses and validates the JSON of a manifest ({@link StrictJson#parse} output). */
  public static Manifest parse(Object json) {
    if (!(json instanceof Map)) {
      throw new ManifestException("manifest: the top level must be a JSON object.");
    }
    Map<String, Object> top = Fields.object(json, "manifest");
    if (!FORMAT.equals(top.get("format"))) {
      throw new ManifestException(
          "manifest: 'format' must be '" + FORMAT + "'. Received: " + Fields.show(top.get("format")));
    }
    Object versionValue = top.get("version");
    if (!(versionValue instanceof Long)
        || ((Long) versionValue != LINEAR_VERSION && (Long) versionValue != VERSION)) {
      throw new ManifestException(
          "manifest: unsupported version " + Fields.show(versionValue) + "; this runtime reads "
              + "versions [" + LINEAR_VERSION + ", " + VERSION + "].");
    }
    int version = (int) (long) (Long) versionValue;
    String where = "manifest";
    Fields.string(top, "format", where);
    List<String> features = features(Fields.list(top, "features", where), top, version);
    List<Object> inputList = Fields.list(top, "inputs", where);
    List<Object> fileList = Fields.list(top, "files", where);
    String entry = Fields.string(top, "entry", where);
    List<Object> stageList = Fields.list(top, "stages", where);
    List<Object> exitList = Fields.list(top, "exits", where);
    for (String key : new String[] {"inputs", "files", "stages", "exits"}) {
      if (((List<?>) top.get(key)).isEmpty()) {
        throw new ManifestException("manifest: '" + key + "' must not be empty.");
      }
    }
    Map<String, FileEntry> files = files(fileList);
    // Tensor names are blackboard keys: each has exactly one producer.
    Map<String, String> producers = new HashMap<>();
    List<TensorSpec> inputs = new ArrayList<>();
    for (Object value : inputList) {
      TensorSpec spec = tensor(value, "manifest: model input");
      if (producers.containsKey(spec.name())) {
        throw new ManifestException(
            "manifest: model input '" + spec.name() + "' is listed twice.");
      }
      producers.put(spec.name(), "model input");
      inputs.add(spec);
    }
    Map<String, StageSpec> stages = new LinkedHashMap<>();
    Map<String, List<Map<String, Object>>> edgeValues = new HashMap<>();
    for (int i = 0; i < stageList.size(); i++) {
      Map<String, Object> value = Fields.object(stageList.get(i), "manifest: stages[" + i + "]");
      StageSpec stage = stage(value, i, files, producers);
      if (stages.containsKey(stage.name())) {
        throw new ManifestException(
            "manifest: stage '" + stage.name() + "': the stage name is used twice.");
      }
      stages.put(stage.name(), stage);
      edgeValues.put(stage.name(), edgeObjects(value, stage.name()));
    }
    List<ExitSpec> exits = new ArrayList<>();
    for (int i = 0; i < exitList.size(); i++) {
      exits.add(exit(exitList.get(i), i));
    }
    if (!stages.containsKey(entry)) {
      throw new ManifestException("manifest: entry '" + entry + "' is not a stage name.");
    }
    DecisionTables tables = null;
    if (version == VERSION) {
      String first = stages.keySet().iterator().next();
      if (!entry.equals(first)) {
        throw new ManifestException(
            "manifest: entry '" + entry + "' must be the first stage listed ('" + first
                + "'); version " + VERSION + " lists stages in run order.");
      }
      tables = DecisionTables.parse(top, stages);
    }
    Map<String, StageSpec> linked = new LinkedHashMap<>();
    List<String> names = new ArrayList<>(stages.keySet());
    for (StageSpec stage : stages.values()) {
      linked.put(stage.name(), stage.withEdges(
          edges(stage.name(), edgeValues.get(stage.name()), names, tables)));
    }
    List<String> order = GraphCheck.check(version, inputs, entry, linked, exits);
    return new Manifest(
        version, features, inputs, new ArrayList<>(files.values()), entry, linked, exits, order,
        tables == null ? DecisionTables.NONE : tables);
  }

  /** A stage's {@code next} entries: objects naming a target stage. */
  private static List<Map<String, Object>> edgeObjects(Map<String, Object> stage, String name) {
    String where = "manifest: stage '" + name + "' edge";
    List<Map<String, Object>> edges = new ArrayList<>();
    for (Object value : Fields.list(stage, "next", "manifest: stage '" + name + "'")) {
      Map<String, Object> edge = Fields.object(value, where);
      Fields.string(edge, "stage", where);
      edges.add(edge);
    }
    return edges;
  }

  /**
   * The edges of {@code source}, in the Python reader's order of checks: version 1 refuses any
   * condition but "always", then unknown targets; version 2 refuses unknown targets, edges that
   * do not point to a stage listed later, two edges to one stage, then malformed conditions.
   */
  private static List<Edge> edges(
      String source, List<Map<String, Object>> values, List<String> names, DecisionTables tables) {
    List<Edge> edges = new ArrayList<>();
    Set<String> targets = new HashSet<>();
    for (Map<String, Object> value : values) {
      String target = (String) value.get("stage");
      if (tables == null) {
        String where = "manifest: stage '" + source + "'";
        Condition condition = Condition.parse(value.get("when"), target, source, null, where);
        if (!names.contains(target)) {
          throw new ManifestException(where + ": 'next' names unknown stage '" + target + "'.");
        }
        edges.add(new Edge(source, target, condition));
        continue;
      }
      String where = "manifest: stage '" + source + "' edge to '" + target + "'";
      if (!names.contains(target)) {
        throw new ManifestException(where + ": 'next' names an unknown stage.");
      }
      if (names.indexOf(target) <= names.indexOf(source)) {
        throw new ManifestException(
            where + ": edges must point to a stage listed later (stages are listed in run "
                + "order).");
      }
      if (!targets.add(target)) {
        throw new ManifestException(where + ": the stage has two edges to it.");
      }
      edges.add(new Edge(source, target,
          Condition.parse(value.get("when"), target, source, tables, where)));
    }
    return edges;
  }

  private static List<String> features(List<Object> values, Map<String, Object> top, int version) {
    List<String> features = new ArrayList<>();
    for (Object value : values) {
      if (!(value instanceof String)) {
        throw new ManifestException(
            "manifest: 'features' must be strings: " + Fields.show(values));
      }
      features.add((String) value);
    }
    Set<String> unknown = new TreeSet<>(features);
    unknown.removeAll(FEATURES);
    if (!unknown.isEmpty()) {
      throw new ManifestException(
          "manifest: uses feature(s) " + unknown + " that this runtime does not implement "
              + "(supported: " + new TreeSet<>(FEATURES) + "); update the app's core to run "
              + "this export.");
    }
    for (DecisionSpec.Kind kind : DecisionSpec.Kind.values()) {
      String table = kind.table();
      if (truthy(top.get(table)) && !features.contains(table)) {
        throw new ManifestException(
            "manifest: '" + table + "' is non-empty but the feature '" + table
                + "' is not declared.");
      }
      if (features.contains(table) && version == LINEAR_VERSION) {
        throw new ManifestException(
            "manifest: the feature '" + table + "' needs version " + VERSION + "; version "
                + LINEAR_VERSION + " chains are linear.");
      }
    }
    return features;
  }

  /** Python's truth value of a JSON value (the Python reader tests {@code if manifest.get("gates")}). */
  private static boolean truthy(Object value) {
    if (value == null || Boolean.FALSE.equals(value)) {
      return false;
    }
    if (value instanceof String) {
      return !((String) value).isEmpty();
    }
    if (value instanceof List) {
      return !((List<?>) value).isEmpty();
    }
    if (value instanceof Map) {
      return !((Map<?, ?>) value).isEmpty();
    }
    if (Fields.isNumber(value)) {
      return Fields.doubleValue(value) != 0.0;
    }
    return true;
  }

  private static Map<String, FileEntry> files(List<Object> values) {
    Map<String, FileEntry> files = new LinkedHashMap<>();
    for (int i = 0; i < values.size(); i++) {
      Map<String, Object> entry = Fields.object(values.get(i), "manifest: files[" + i + "]");
      String path = Fields.string(entry, "path", "manifest: files[" + i + "]");
      String sha256 = Fields.string(entry, "sha256", "manifest: files[" + i + "]");
      long bytes = Fields.integer(entry, "bytes", "manifest: files[" + i + "]");
      String where = "manifest: file '" + path + "'";
      RelativePath.check(path, where);
      if (files.containsKey(path)) {
        throw new ManifestException(where + ": listed twice in 'files'.");
      }
      if (!sha256.matches("[0-9a-f]{64}")) {
        throw new ManifestException(where + ": sha256 must be 64 lowercase hex digits.");
      }
      if (bytes < 0) {
        throw new ManifestException(where + ": 'bytes' must be >= 0.");
      }
      files.put(path, new FileEntry(path, sha256, bytes));
    }
    return files;
  }

  /** A stage without its edges (they are parsed once all stages and decisions are known). */
  private static StageSpec stage(
      Map<String, Object> stage, int index, Map<String, FileEntry> files,
      Map<String, String> producers) {
    String at = "manifest: stages[" + index + "]";
    String name = Fields.string(stage, "name", at);
    String file = Fields.string(stage, "file", at);
    String signature = Fields.string(stage, "signature", at);
    List<Object> inputValues = Fields.list(stage, "inputs", at);
    List<Object> outputValues = Fields.list(stage, "outputs", at);
    long macs = Fields.integer(stage, "macs", at);
    Fields.list(stage, "next", at);
    String where = "manifest: stage '" + name + "'";
    if (!files.containsKey(file)) {
      throw new ManifestException(where + ": file '" + file + "' is not listed in 'files'.");
    }
    if (macs < 0) {
      throw new ManifestException(where + ": 'macs' must be >= 0.");
    }
    if (inputValues.isEmpty() || outputValues.isEmpty()) {
      throw new ManifestException(where + ": needs at least one input and output.");
    }
    List<TensorSpec> inputs = new ArrayList<>();
    for (Object input : inputValues) {
      inputs.add(tensor(input, where + " input"));
    }
    List<TensorSpec> outputs = new ArrayList<>();
    for (Object output : outputValues) {
      TensorSpec spec = tensor(output, where + " output");
      if (producers.containsKey(spec.name())) {
        throw new ManifestException(
            where + ": output tensor '" + spec.name() + "' is already produced by "
                + producers.get(spec.name()) + "; tensor names must be unique.");
      }
      producers.put(spec.name(), "stage '" + name + "'");
      outputs.add(spec);
    }
    return new StageSpec(name, file, signature, inputs, outputs, macs, new ArrayList<>());
  }

  private static TensorSpec tensor(Object value, String at) {
    Map<String, Object> spec = Fields.object(value, at);
    String name = Fields.string(spec, "name", at);
    List<Object> shape = Fields.list(spec, "shape", at);
    String dtypeName = Fields.string(spec, "dtype", at);
    String where = at + " tensor '" + name + "'";
    if (name.isEmpty()) {
      throw new ManifestException(where + ": tensor names must be non-empty.");
    }
    Object batch = shape.isEmpty() ? null : shape.get(0);
    if (shape.isEmpty() || !(batch == null || Long.valueOf(1).equals(batch))) {
      throw new ManifestException(
          where + ": shape must start with the batch dimension: null (any batch) or 1 (a stage "
              + "that needs a static batch). Received: " + Fields.show(shape));
    }
    int[] dims = new int[shape.size() - 1];
    for (int i = 1; i < shape.size(); i++) {
      Object dim = shape.get(i);
      if (!(dim instanceof Long) || (Long) dim < 1 || (Long) dim > Integer.MAX_VALUE) {
        throw new ManifestException(
            where + ": non-batch dimensions must be positive ints (below 2^31). Received: "
                + Fields.show(shape));
      }
      dims[i - 1] = (int) (long) (Long) dim;
    }
    DType dtype = DType.parse(dtypeName, where);
    Quantization quantization = null;
    Object quant = spec.get("quantization");
    if (quant != null) {
      Map<String, Object> q = Fields.object(quant, where);
      Object scale = Fields.required(q, "scale", where);
      if (!Fields.isNumber(scale)) {
        throw new ManifestException(
            where + ": 'scale' must be of type int or float. Received: " + Fields.show(scale));
      }
      long zeroPoint = Fields.integer(q, "zero_point", where);
      double s = Fields.doubleValue(scale);
      if (!(Double.isFinite(s) && s > 0)) {
        throw new ManifestException(
            where + ": quantization scale must be a positive finite number. Received: "
                + Fields.show(scale));
      }
      quantization = new Quantization(s, zeroPoint);
    }
    return new TensorSpec(name, batch == null ? null : 1, dims, dtype, quantization);
  }

  private static ExitSpec exit(Object value, int index) {
    String at = "manifest: exits[" + index + "]";
    Map<String, Object> exit = Fields.object(value, at);
    String name = Fields.string(exit, "name", at);
    String stage = Fields.string(exit, "stage", at);
    String tensor = Fields.string(exit, "tensor", at);
    String kind = Fields.string(exit, "kind", at);
    String where = "manifest: exit '" + name + "'";
    if (!kind.equals("classifier")) {
      throw new ManifestException(
          where + ": unknown exit kind '" + kind + "'; known: ('classifier',).");
    }
    // This reader implements logits exits only: an exit giving probabilities needs the feature
    // "probability_exits", which it refuses (a softmax of probabilities would flatten them).
    Object values = exit.containsKey("values") ? exit.get("values") : "logits";
    if (!"logits".equals(values) && !"probabilities".equals(values)) {
      throw new ManifestException(
          where + ": 'values' must be one of ('logits', 'probabilities') (absent: logits). "
              + "Received: " + Fields.show(values));
    }
    if ("probabilities".equals(values)) {
      throw new ManifestException(
          where + ": gives probabilities but 'features' does not list 'probability_exits' (a "
              + "reader without it would take them for logits).");
    }
    return new ExitSpec(name, stage, tensor, ExitRule.parse(exit.get("policy"), where));
  }
}
