package org.kerasdynamic.core;

/**
 * An edge of the stage graph: from the stage that lists it to a later stage, under a {@link
 * Condition}. The target runs for a sample when any edge into it fires from a stage that ran.
 */
public final class Edge {
  private final String source;
  private final String target;
  private final Condition condition;

  Edge(String source, String target, Condition condition) {
    this.source = source;
    this.target = target;
    this.condition = condition;
  }

  /** The name of the stage the edge leaves. */
  public String source() {
    return source;
  }

  /** The name of the stage the edge leads to. */
  public String target() {
    return target;
  }

  public Condition condition() {
    return condition;
  }
}
