package org.kerasdynamic.core;

/**
 * Sums doubles in exactly the order NumPy sums a float64 array along its last axis, so that sums
 * are bit-identical to the Python runtime's.
 *
 * <p>NumPy starts from the identity 0.0 and adds the pairwise sum of the row: rows under 8
 * values are summed left to right; up to 128 values go into 8 interleaved partial sums combined
 * as {@code ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))}, then the remainder is added left
 * to right; longer rows are split in two halves (the first a multiple of 8 long) summed
 * recursively (numpy/_core/src/umath/loops_utils.h.src, {@code pairwise_sum}).
 */
final class PairwiseSum {
  private static final int BLOCK = 128;

  private PairwiseSum() {}

  static double sum(double[] values) {
    return 0.0 + pairwise(values, 0, values.length);
  }

  private static double pairwise(double[] a, int from, int n) {
    if (n < 8) {
      double sum = 0.0;
      for (int i = 0; i < n; i++) {
        sum += a[from + i];
      }
      return sum;
    }
    if (n <= BLOCK) {
      double[] r = new double[8];
      System.arraycopy(a, from, r, 0, 8);
      int i = 8;
      for (; i < n - (n % 8); i += 8) {
        for (int j = 0; j < 8; j++) {
          r[j] += a[from + i + j];
        }
      }
      double sum = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
      for (; i < n; i++) {
        sum += a[from + i];
      }
      return sum;
    }
    int half = n / 2;
    half -= half % 8;
    return pairwise(a, from, half) + pairwise(a, from + half, n - half);
  }
}
