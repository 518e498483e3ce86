package org.kerasdynamic.core;

/**
 * A gate or route of a version-2 manifest (its {@code gates} and {@code routes} tables): the
 * stage that computes it and the (batch, width) output tensor holding the decision, read after
 * that stage runs by {@link GateCondition#columns} or {@link RouteCondition#chosen}.
 */
public final class DecisionSpec {
  /** The two kinds of decision, with their manifest names (as {@code DECISION_KINDS} in Python). */
  public enum Kind {
    GATE("gate", "gates", "groups", 1),
    ROUTE("route", "routes", "experts", 2);

    private final String jsonName;
    private final String table;
    private final String widthKey;
    private final int minWidth;

    Kind(String jsonName, String table, String widthKey, int minWidth) {
      this.jsonName = jsonName;
      this.table = table;
      this.widthKey = widthKey;
      this.minWidth = minWidth;
    }

    /** The key of an edge condition: {@code "gate"} or {@code "route"}. */
    public String jsonName() {
      return jsonName;
    }

    /** The top-level table and the feature naming it: {@code "gates"} or {@code "routes"}. */
    public String table() {
      return table;
    }

    /** The key of the tensor's width: {@code "groups"} or {@code "experts"}. */
    public String widthKey() {
      return widthKey;
    }

    /** The smallest width: a gate may switch a single group, a route chooses among two or more. */
    int minWidth() {
      return minWidth;
    }
  }

  private final Kind kind;
  private final String name;
  private final String stage;
  private final String tensor;
  private final int width;

  DecisionSpec(Kind kind, String name, String stage, String tensor, int width) {
    this.kind = kind;
    this.name = name;
    this.stage = stage;
    this.tensor = tensor;
    this.width = width;
  }

  public Kind kind() {
    return kind;
  }

  public String name() {
    return name;
  }

  /** The stage that computes the decision; its conditional edges leave this stage. */
  public String stage() {
    return stage;
  }

  /** The stage output holding the decision, shape (batch, {@link #width()}). */
  public String tensor() {
    return tensor;
  }

  /** Groups of a gate, experts of a route. */
  public int width() {
    return width;
  }
}
