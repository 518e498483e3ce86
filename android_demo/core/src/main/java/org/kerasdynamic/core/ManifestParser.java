package org.kerasdynamic.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

/**
 * Turns a parsed manifest.json into a {@link Manifest}, refusing what the Python reader ({@code
 * validate_manifest} in keras_dynamic/runtime/manifest.py) refuses: wrong format or version,
 * missing keys and wrong types, features this reader does not implement, unsafe file paths,
 * malformed hashes, tensor shapes and dtypes, duplicate names, unknown references. Cross
 * references between stages and exits are checked by {@link GraphCheck}.
 *
 * <p>Where Python would accept a value only by accident of its types it is refused here: a
 * batch dimension of {@code true} or {@code 1.0} (Python compares them equal to 1), integers
 * outside 64 bits, dimensions outside 32 bits.
 */
public final class ManifestParser {
  public static final String FORMAT = "keras_dynamic.stages";
  public static final long VERSION = 1;

  /** The features this reader implements. */
  public static final Set<String> FEATURES =
      Collections.unmodifiableSet(new TreeSet<>(Collections.singleton("exits")));

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
    Object version = top.get("version");
    if (!(version instanceof Long) || (Long) version != VERSION) {
      throw new ManifestException(
          "manifest: unsupported version " + Fields.show(version) + "; this runtime reads version "
              + VERSION + ".");
    }
    String where = "manifest";
    Fields.string(top, "format", where);
    List<String> features = features(Fields.list(top, "features", where), top.get("gates"));
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
    for (int i = 0; i < stageList.size(); i++) {
      StageSpec stage = stage(stageList.get(i), i, files, producers);
      if (stages.containsKey(stage.name())) {
        throw new ManifestException(
            "manifest: stage '" + stage.name() + "': the stage name is used twice.");
      }
      stages.put(stage.name(), stage);
    }
    List<ExitSpec> exits = new ArrayList<>();
    for (int i = 0; i < exitList.size(); i++) {
      exits.add(exit(exitList.get(i), i));
    }
    GraphCheck.check(inputs, entry, stages, exits);
    return new Manifest(
        features, inputs, new ArrayList<>(files.values()), entry, stages, exits);
  }

  private static List<String> features(List<Object> values, Object gates) {
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
    if (truthy(gates)) {
      throw new ManifestException(
          "manifest: 'gates' is non-empty but the feature 'gates' is not declared (and is not "
              + "implemented by this runtime).");
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

  private static StageSpec stage(
      Object value, int index, Map<String, FileEntry> files, Map<String, String> producers) {
    Map<String, Object> stage = Fields.object(value, "manifest: stages[" + index + "]");
    String at = "manifest: stages[" + index + "]";
    String name = Fields.string(stage, "name", at);
    String file = Fields.string(stage, "file", at);
    String signature = Fields.string(stage, "signature", at);
    List<Object> inputValues = Fields.list(stage, "inputs", at);
    List<Object> outputValues = Fields.list(stage, "outputs", at);
    long macs = Fields.integer(stage, "macs", at);
    List<Object> edgeValues = Fields.list(stage, "next", at);
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
    List<Edge> edges = new ArrayList<>();
    for (Object edgeValue : edgeValues) {
      Map<String, Object> edge = Fields.object(edgeValue, where + " edge");
      String target = Fields.string(edge, "stage", where + " edge");
      edges.add(new Edge(target, Condition.parse(edge.get("when"), target, where)));
    }
    return new StageSpec(name, file, signature, inputs, outputs, macs, edges);
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
    return new ExitSpec(name, stage, tensor, ExitRule.parse(exit.get("policy"), where));
  }
}
