package org.kerasdynamic.core;

import java.util.Map;

/**
 * The condition on an edge of the stage graph: when an edge from a stage that ran for a sample
 * fires for it. Every kind of condition is parsed here and evaluated by its subclass.
 *
 * <p>Manifest version 1 has one kind, {@code "always"}. Version 2 adds {@code {"gate": g,
 * "index": j}} ({@link GateCondition}: column j of gate g is on) and {@code {"route": r,
 * "index": k}} ({@link RouteCondition}: route r chooses expert k), each reading the decision
 * tensor of the stage the edge leaves through {@link DecisionTensors}, as the Python runtime's
 * walk ({@code keras_dynamic/runtime/walk.py}) reads it.
 */
public abstract class Condition {
  /** The unconditional edge. */
  public static final Condition ALWAYS =
      new Condition() {
        @Override
        public boolean holds(DecisionTensors tensors) {
          return true;
        }

        @Override
        public String toString() {
          return "always";
        }
      };

  Condition() {}

  /**
   * Whether the edge fires for a sample whose decision tensors are {@code tensors}; only asked
   * when the edge's source stage ran for the sample.
   */
  public abstract boolean holds(DecisionTensors tensors);

  /**
   * Parses an edge's {@code "when"} value ({@code null} where the key is absent), refusing what
   * the Python reader refuses.
   *
   * @param source the stage the edge leaves (a gate or route edge must leave the stage that
   *     computes its decision)
   * @param tables the manifest's gates and routes; null for version 1, which has only "always"
   * @param where names the stage (version 1) or the stage and edge (version 2) in the message
   */
  static Condition parse(
      Object when, String target, String source, DecisionTables tables, String where) {
    if ("always".equals(when)) {
      return ALWAYS;
    }
    if (tables == null) {
      throw new ManifestException(
          where + ": edge to '" + target + "' has condition " + Fields.show(when)
              + "; version 1 supports only \"when\": \"always\" (gated and routed edges need "
              + "version 2 and the 'gates' / 'routes' features).");
    }
    DecisionSpec.Kind kind = kindOf(when);
    if (kind == null) {
      throw new ManifestException(
          where + ": 'when' must be \"always\", {\"gate\": name, \"index\": j} or {\"route\": "
              + "name, \"index\": k}. Received: " + Fields.show(when));
    }
    Map<?, ?> condition = (Map<?, ?>) when;
    Object name = condition.get(kind.jsonName());
    DecisionSpec decision =
        name instanceof String ? tables.find(kind, (String) name) : null;
    if (decision == null) {
      throw new ManifestException(
          where + ": names unknown " + kind.jsonName() + " " + Fields.show(name) + ".");
    }
    if (!decision.stage().equals(source)) {
      throw new ManifestException(
          where + ": a " + kind.jsonName() + " edge must leave the stage that computes "
              + kind.jsonName() + " '" + decision.name() + "' ('" + decision.stage() + "').");
    }
    Object index = condition.get("index");
    if (!(index instanceof Long) || (Long) index < 0 || (Long) index >= decision.width()) {
      throw new ManifestException(
          where + ": 'index' must be an int in [0, " + (decision.width() - 1) + "] for "
              + kind.jsonName() + " '" + decision.name() + "'. Received: " + Fields.show(index));
    }
    int column = (int) (long) (Long) index;
    return kind == DecisionSpec.Kind.GATE
        ? new GateCondition(decision, column)
        : new RouteCondition(decision, column);
  }

  /** The kind of a {@code {"gate" | "route": name, "index": i}} object, or null if malformed. */
  private static DecisionSpec.Kind kindOf(Object when) {
    if (!(when instanceof Map) || ((Map<?, ?>) when).size() != 2
        || !((Map<?, ?>) when).containsKey("index")) {
      return null;
    }
    DecisionSpec.Kind found = null;
    for (DecisionSpec.Kind kind : DecisionSpec.Kind.values()) {
      if (((Map<?, ?>) when).containsKey(kind.jsonName())) {
        found = kind;
      }
    }
    return found;
  }
}
