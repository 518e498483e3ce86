package org.kerasdynamic.core;

/**
 * The condition on an edge of the stage graph: when a sample goes from a stage to the edge's
 * target. Every kind of condition is parsed and evaluated here and nowhere else.
 *
 * <p>Manifest version 1 has one kind, {@code "always"}. The reserved kinds, {@code {"gate": g,
 * "is": "on" | "off"}} (feature {@code "gates"}) and {@code {"route": r, "index": k}} (feature
 * {@code "routes"}), will be subclasses reading their gate or router output through {@link
 * DecisionTensors}; until the format defines them they are refused like the Python reader
 * refuses them.
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

  /** Whether a sample whose decision tensors are {@code tensors} follows the edge. */
  public abstract boolean holds(DecisionTensors tensors);

  /**
   * Parses an edge's {@code "when"} value ({@code null} where the key is absent).
   *
   * @param where names the stage and edge in the message
   */
  static Condition parse(Object when, String target, String where) {
    if ("always".equals(when)) {
      return ALWAYS;
    }
    throw new ManifestException(
        where + ": edge to '" + target + "' has condition " + Fields.show(when)
            + "; version " + ManifestParser.VERSION + " supports only \"when\": \"always\" "
            + "(gated and routed edges need the 'gates' / 'routes' features).");
  }
}
