package org.kerasdynamic.core;

/**
 * A route edge, {@code {"route": r, "index": k}}: fires when route r chooses expert k.
 *
 * <p>The expert chosen is the arg max of the route tensor's real values, ties and NaN resolved
 * as NumPy's {@code argmax} resolves them (the first largest value; the first NaN, which NumPy
 * treats as the largest). The exporter writes the router's probabilities times its top-1 mask,
 * so the choice is the router's own.
 */
public final class RouteCondition extends Condition {
  private final DecisionSpec route;
  private final int index;

  RouteCondition(DecisionSpec route, int index) {
    this.route = route;
    this.index = index;
  }

  /** The expert a route tensor's real values choose: NumPy's arg max. */
  public static int chosen(double[] real) {
    int best = 0;
    for (int i = 0; i < real.length; i++) {
      if (Double.isNaN(real[i])) {
        return i;
      }
      if (real[i] > real[best]) {
        best = i;
      }
    }
    return best;
  }

  public DecisionSpec route() {
    return route;
  }

  /** The expert the edge leads to. */
  public int index() {
    return index;
  }

  @Override
  public boolean holds(DecisionTensors tensors) {
    return chosen(tensors.values(route.tensor())) == index;
  }

  @Override
  public String toString() {
    return "{\"route\": \"" + route.name() + "\", \"index\": " + index + "}";
  }
}
