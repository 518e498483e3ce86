package org.kerasdynamic.core;

/** An edge of the stage graph: the stage a sample goes to next, under a {@link Condition}. */
public final class Edge {
  private final String target;
  private final Condition condition;

  Edge(String target, Condition condition) {
    this.target = target;
    this.condition = condition;
  }

  /** The name of the stage the edge leads to. */
  public String target() {
    return target;
  }

  public Condition condition() {
    return condition;
  }
}
