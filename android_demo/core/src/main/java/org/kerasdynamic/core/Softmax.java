package org.kerasdynamic.core;

/**
 * The softmax quantities exit decisions are made of, computed as the Python runtime's {@code
 * keras_dynamic/runtime/policy.py} computes them: in float64, after subtracting the row maximum,
 * with NumPy's summation order ({@link PairwiseSum}).
 *
 * <p>{@code exp} and {@code log} are {@link StrictMath}'s (fdlibm): the same bits on every JVM
 * and every Android device. NumPy's kernels (Intel SVML on AVX-512 CPUs, the C library
 * elsewhere) round some results differently in the last bit, so a score can differ from the
 * Python runtime's by a few units in the last place; a decision can then differ only where the
 * threshold lies within those few ulps of the score.
 */
public final class Softmax {
  private Softmax() {}

  /** {@code exp(z - max z)} per element. */
  private static double[] shiftedExp(double[] logits) {
    double max = Double.NEGATIVE_INFINITY;
    for (double z : logits) {
      max = Math.max(max, z);
    }
    double[] e = new double[logits.length];
    for (int i = 0; i < logits.length; i++) {
      e[i] = StrictMath.exp(logits[i] - max);
    }
    return e;
  }

  /**
   * The top softmax probability, {@code 1 / sum(exp(z - max z))}: bit-identical to the maximum of
   * the full softmax (its top term is exp(0) = 1), as in the Python runtime's {@code fires}.
   */
  public static double maxProbability(double[] logits) {
    return 1.0 / PairwiseSum.sum(shiftedExp(logits));
  }

  /** The softmax probabilities in float64. */
  public static double[] probabilities(double[] logits) {
    double[] p = shiftedExp(logits);
    double total = PairwiseSum.sum(p);
    for (int i = 0; i < p.length; i++) {
      p[i] /= total;
    }
    return p;
  }

  /** The softmax entropy in nats; a zero probability contributes 0 (not NaN). */
  public static double entropy(double[] logits) {
    double[] p = probabilities(logits);
    double[] terms = new double[p.length];
    for (int i = 0; i < p.length; i++) {
      terms[i] = p[i] > 0 ? p[i] * StrictMath.log(p[i]) : 0.0;
    }
    return -PairwiseSum.sum(terms);
  }

  /** The softmax probabilities rounded to float32, as the Python runtime reports them. */
  public static float[] probabilities32(double[] logits) {
    double[] p = probabilities(logits);
    float[] rounded = new float[p.length];
    for (int i = 0; i < p.length; i++) {
      rounded[i] = (float) p[i];
    }
    return rounded;
  }

  /**
   * The first index of the largest logit, as numpy's argmax of an exit's values: the top
   * class that patience rules compare from exit to exit (chain.py's streak).
   */
  public static int topClass(double[] logits) {
    int best = 0;
    for (int i = 1; i < logits.length; i++) {
      if (logits[i] > logits[best]) {
        best = i;
      }
    }
    return best;
  }

  /**
   * The predicted class as the Python runtime reports it: the first index of the largest of
   * the float32 probabilities ({@link #probabilities32}).
   */
  public static int label(float[] probabilities) {
    int best = 0;
    for (int i = 1; i < probabilities.length; i++) {
      // A row holding NaN is NaN throughout (its maximum is NaN) and numpy's argmax returns 0,
      // the first NaN; comparisons with NaN are false, so this loop returns 0 too.
      if (probabilities[i] > probabilities[best]) {
        best = i;
      }
    }
    return best;
  }
}
