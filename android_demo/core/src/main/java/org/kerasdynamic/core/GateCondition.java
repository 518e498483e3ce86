package org.kerasdynamic.core;

/**
 * A gate edge, {@code {"gate": g, "index": j}}: fires when column j of gate g's tensor is on.
 *
 * <p>A column is on when its real (dequantized) value is {@code > 0.5}, as in the Python
 * runtime. The exporter writes the gate's own hard 0/1 there, so Keras, Python and this core
 * decide alike without a threshold of their own; a NaN is off, as NumPy compares it.
 */
public final class GateCondition extends Condition {
  private final DecisionSpec gate;
  private final int index;

  GateCondition(DecisionSpec gate, int index) {
    this.gate = gate;
    this.index = index;
  }

  /** Which columns of a gate tensor's real values are on. */
  public static boolean[] columns(double[] real) {
    boolean[] on = new boolean[real.length];
    for (int i = 0; i < real.length; i++) {
      on[i] = real[i] > 0.5;
    }
    return on;
  }

  public DecisionSpec gate() {
    return gate;
  }

  /** The column (channel group, or 0 for a block gate) the edge tests. */
  public int index() {
    return index;
  }

  @Override
  public boolean holds(DecisionTensors tensors) {
    return columns(tensors.values(gate.tensor()))[index];
  }

  @Override
  public String toString() {
    return "{\"gate\": \"" + gate.name() + "\", \"index\": " + index + "}";
  }
}
