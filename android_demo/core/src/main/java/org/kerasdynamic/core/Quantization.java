package org.kerasdynamic.core;

/** Affine quantization of a tensor: {@code real = (q - zeroPoint) * scale}. */
public final class Quantization {
  private final double scale;
  private final long zeroPoint;

  Quantization(double scale, long zeroPoint) {
    this.scale = scale;
    this.zeroPoint = zeroPoint;
  }

  public double scale() {
    return scale;
  }

  public long zeroPoint() {
    return zeroPoint;
  }

  /**
   * Real values of raw quantized values, in float32 arithmetic as the Python runtime computes
   * them ({@code (q.astype(float32) - zero_point) * float32(scale)}), widened to double.
   */
  double[] dequantize(double[] raw) {
    float zero = (float) zeroPoint;
    float step = (float) scale;
    double[] real = new double[raw.length];
    for (int i = 0; i < raw.length; i++) {
      real[i] = ((float) raw[i] - zero) * step;
    }
    return real;
  }
}
