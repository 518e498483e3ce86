package org.kerasdynamic.core;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The {@code gates} and {@code routes} tables of a version-2 manifest, checked as the Python
 * reader's {@code _check_decisions} checks them: each entry names a known stage and one of its
 * outputs of shape (batch, width), names are unique per kind, and widths lie in range (a route
 * chooses among at least two experts). Version-1 manifests have empty tables.
 */
final class DecisionTables {
  static final DecisionTables NONE =
      new DecisionTables(Collections.emptyMap(), Collections.emptyMap());

  private final Map<String, DecisionSpec> gates;
  private final Map<String, DecisionSpec> routes;

  private DecisionTables(Map<String, DecisionSpec> gates, Map<String, DecisionSpec> routes) {
    this.gates = Collections.unmodifiableMap(gates);
    this.routes = Collections.unmodifiableMap(routes);
  }

  /** Reads both tables of {@code top} (an absent table is empty). */
  static DecisionTables parse(Map<String, Object> top, Map<String, StageSpec> stages) {
    return new DecisionTables(
        table(top, DecisionSpec.Kind.GATE, stages), table(top, DecisionSpec.Kind.ROUTE, stages));
  }

  private static Map<String, DecisionSpec> table(
      Map<String, Object> top, DecisionSpec.Kind kind, Map<String, StageSpec> stages) {
    Object value = top.containsKey(kind.table()) ? top.get(kind.table()) : Collections.emptyList();
    if (!(value instanceof List)) {
      throw new ManifestException(
          "manifest: '" + kind.table() + "' must be a list. Received: " + Fields.show(value));
    }
    List<?> entries = (List<?>) value;
    Map<String, DecisionSpec> specs = new LinkedHashMap<>();
    for (int i = 0; i < entries.size(); i++) {
      String at = "manifest: " + kind.table() + "[" + i + "]";
      Map<String, Object> entry = Fields.object(entries.get(i), at);
      String name = Fields.string(entry, "name", at);
      String stageName = Fields.string(entry, "stage", at);
      String tensor = Fields.string(entry, "tensor", at);
      long width = Fields.integer(entry, kind.widthKey(), at);
      String where = "manifest: " + kind.jsonName() + " '" + name + "'";
      if (specs.containsKey(name)) {
        throw new ManifestException(where + ": the " + kind.jsonName() + " name is used twice.");
      }
      StageSpec stage = stages.get(stageName);
      if (stage == null) {
        throw new ManifestException(where + ": unknown stage '" + stageName + "'.");
      }
      TensorSpec output = stage.output(tensor);
      if (output == null) {
        throw new ManifestException(
            where + ": tensor '" + tensor + "' is not an output of stage '" + stageName + "'.");
      }
      if (width < kind.minWidth() || width > Integer.MAX_VALUE) {
        throw new ManifestException(
            where + ": '" + kind.widthKey() + "' must lie in [" + kind.minWidth() + ", "
                + Integer.MAX_VALUE + "]. Received: " + width);
      }
      int[] dims = output.dims();
      if (dims.length != 1 || dims[0] != width) {
        throw new ManifestException(
            where + ": tensor '" + tensor + "' must have shape (batch, " + width + ") for "
                + kind.widthKey() + "=" + width + ". Received: " + output.shapeText());
      }
      specs.put(name, new DecisionSpec(kind, name, stageName, tensor, (int) width));
    }
    return specs;
  }

  /** The decision of {@code kind} named {@code name}, or null. */
  DecisionSpec find(DecisionSpec.Kind kind, String name) {
    return (kind == DecisionSpec.Kind.GATE ? gates : routes).get(name);
  }

  /** Gates by name, in manifest order. */
  Map<String, DecisionSpec> gates() {
    return gates;
  }

  /** Routes by name, in manifest order. */
  Map<String, DecisionSpec> routes() {
    return routes;
  }
}
