package org.kerasdynamic.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotEquals;
import static org.junit.Assert.assertTrue;

import org.junit.Test;

/** Exit rules and the numerics under them, as keras_dynamic/runtime/policy.py defines them. */
public class ExitRuleTest {
  private static final ExitRule.Kind MAX = ExitRule.Kind.MAX_SOFTMAX;
  private static final ExitRule.Kind ENTROPY = ExitRule.Kind.ENTROPY;

  @Test
  public void sumsInNumpysPairwiseOrder() {
    // Left to right, 1 + 1e-16 + ... stays 1; NumPy's pairwise order adds the small terms
    // together first, so they survive. 10 values: 8 partial sums, then the last two.
    double[] values = {1.0, 1e-16, 1e-16, 1e-16, 1e-16, 1e-16, 1e-16, 1e-16, 1e-16, 1e-16};
    double partial = ((1.0 + 1e-16) + (1e-16 + 1e-16)) + ((1e-16 + 1e-16) + (1e-16 + 1e-16));
    double expected = (partial + 1e-16) + 1e-16;
    assertEquals(expected, PairwiseSum.sum(values), 0.0);
    double leftToRight = 0.0;
    for (double v : values) {
      leftToRight += v;
    }
    assertNotEquals(leftToRight, PairwiseSum.sum(values), 0.0);
    // Under 8 values NumPy sums left to right.
    assertEquals(leftToRight(3), PairwiseSum.sum(new double[] {1.0, 1e-16, 1e-16}), 0.0);
  }

  private static double leftToRight(int n) {
    double sum = 0.0 + 1.0;
    for (int i = 1; i < n; i++) {
      sum += 1e-16;
    }
    return sum;
  }

  @Test
  public void splitsLongRowsLikeNumpy() {
    double[] values = new double[300];
    for (int i = 0; i < values.length; i++) {
      values[i] = 1.0 / (i + 1);
    }
    // Over 128 values a row is halved, the first half rounded down to a multiple of 8:
    // 300 -> 144 + 156 -> (72 + 72) + (72 + 84); blocks of at most 128 are summed as above.
    double expected = (part(values, 0, 72) + part(values, 72, 144))
        + (part(values, 144, 216) + part(values, 216, 300));
    assertEquals(expected, PairwiseSum.sum(values), 0.0);
  }

  private static double part(double[] values, int from, int to) {
    return PairwiseSum.sum(java.util.Arrays.copyOfRange(values, from, to));
  }

  @Test
  public void maxSoftmaxIsOneOverTheShiftedSum() {
    double[] logits = {2.0, 0.5, -1.0};
    double sum = 0.0 + StrictMath.exp(0.0) + StrictMath.exp(-1.5) + StrictMath.exp(-3.0);
    assertEquals(1.0 / sum, Softmax.maxProbability(logits), 0.0);
    // Shifting every logit changes nothing: the row maximum is subtracted first.
    assertEquals(1.0 / sum, Softmax.maxProbability(new double[] {1002.0, 1000.5, 999.0}), 0.0);
  }

  @Test
  public void firesAtEqualityAndOnTheRightSide() {
    double[] logits = {3.0, 1.0, 0.0, -2.0};
    double top = Softmax.maxProbability(logits);
    assertTrue(new ExitRule(MAX, top).fires(logits));
    assertFalse(new ExitRule(MAX, Math.nextUp(top)).fires(logits));
    assertTrue(new ExitRule(MAX, 0.0).fires(logits));
    assertFalse(new ExitRule(MAX, 1.0000001).fires(logits));
    double h = Softmax.entropy(logits);
    assertTrue(new ExitRule(ENTROPY, h).fires(logits));
    assertFalse(new ExitRule(ENTROPY, Math.nextDown(h)).fires(logits));
  }

  @Test
  public void entropyOfExtremeRowsIsFinite() {
    // exp(-1000) underflows to 0: a zero probability contributes 0, not 0 * log 0 = NaN.
    assertEquals(0.0, Softmax.entropy(new double[] {0.0, -1000.0, -2000.0}), 0.0);
    assertTrue(new ExitRule(ENTROPY, 0.0).fires(new double[] {0.0, -1000.0}));
    assertEquals(StrictMath.log(4), Softmax.entropy(new double[] {5, 5, 5, 5}), 1e-15);
  }

  @Test
  public void nanRowsDecideAsNumpyDoes() {
    // A NaN logit makes the whole row NaN. NaN >= t is false: max_softmax never leaves. The
    // entropy of keras_dynamic's policy.py counts only p > 0 terms, none for NaN, so a NaN row
    // has entropy -0.0 and leaves at any threshold >= 0: same decision here.
    double[] logits = {1.0, Double.NaN, 3.0};
    assertFalse(new ExitRule(MAX, 0.0).fires(logits));
    assertEquals(-0.0, Softmax.entropy(logits), 0.0);
    assertTrue(new ExitRule(ENTROPY, 0.0).fires(logits));
    assertEquals(0, Softmax.label(Softmax.probabilities32(logits)));
  }

  @Test
  public void labelsTheFirstLargestFloat32Probability() {
    assertEquals(2, Softmax.label(Softmax.probabilities32(new double[] {0.0, 1.0, 3.0, 3.0 - 1e-6})));
    // Two classes 1e-9 apart share a float32 probability: the first index wins, as with numpy.
    assertEquals(0, Softmax.label(Softmax.probabilities32(new double[] {0.0, 1e-9})));
    assertArrayEquals(new float[] {0.5f, 0.5f}, Softmax.probabilities32(new double[] {0.0, 1e-9}), 0f);
  }

  @Test
  public void dequantizesInFloat32() {
    Quantization q = new Quantization(0.1, 1);
    double[] real = q.dequantize(new double[] {3, -128});
    assertEquals((double) ((3f - 1f) * 0.1f), real[0], 0.0);
    assertEquals((double) ((-128f - 1f) * 0.1f), real[1], 0.0);
  }
}
