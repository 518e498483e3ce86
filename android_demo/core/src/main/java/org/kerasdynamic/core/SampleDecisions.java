package org.kerasdynamic.core;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The gates and routes of one sample's walk, as the Python runtime records them: a gate's
 * columns (all off where the sample never ran the stage computing it) and the expert a route
 * chose (-1 where not reached). Read right after the computing stage runs, before its exit, so
 * a sample leaving at that stage still has them.
 */
final class SampleDecisions {
  private final Map<String, boolean[]> gates = new LinkedHashMap<>();
  private final Map<String, Integer> routes = new LinkedHashMap<>();

  SampleDecisions(Manifest manifest) {
    for (DecisionSpec gate : manifest.gates()) {
      gates.put(gate.name(), new boolean[gate.width()]);
    }
    for (DecisionSpec route : manifest.routes()) {
      routes.put(route.name(), -1);
    }
  }

  /** Records {@code decision} from the tensor its stage just produced. */
  void read(DecisionSpec decision, DecisionTensors tensors) {
    double[] real = tensors.values(decision.tensor());
    if (decision.kind() == DecisionSpec.Kind.GATE) {
      gates.put(decision.name(), GateCondition.columns(real));
    } else {
      routes.put(decision.name(), RouteCondition.chosen(real));
    }
  }

  Map<String, boolean[]> gates() {
    return Collections.unmodifiableMap(gates);
  }

  Map<String, Integer> routes() {
    return Collections.unmodifiableMap(routes);
  }
}
