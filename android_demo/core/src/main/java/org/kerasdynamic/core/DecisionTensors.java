package org.kerasdynamic.core;

/**
 * Read access to the decision tensors (exit logits, gate and route outputs) a sample has
 * produced so far, as real values (dequantized where the manifest says so).
 */
public interface DecisionTensors {
  /** The values of the named tensor for the current sample. */
  double[] values(String tensorName);
}
