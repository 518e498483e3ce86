package org.kerasdynamic.core;

import java.util.Map;

/**
 * One exit's decision rule, as in {@code keras_dynamic/runtime/policy.py}.
 *
 * <ul>
 *   <li>{@code max_softmax}: the sample leaves when its top softmax probability is {@code >=}
 *       the threshold (0 sends every sample out, above 1 none).
 *   <li>{@code entropy}: the sample leaves when its softmax entropy in nats is {@code <=} the
 *       threshold.
 *   <li>{@code patience} (PABEE): the sample leaves when this exit's top class equals that of
 *       each of the {@code threshold} exits before it (a whole number {@code >= 1}); its score is
 *       that streak, which {@link Chain} counts over every exit the sample passes. Linear chains
 *       only.
 * </ul>
 *
 * <p>A missing rule (null) means "never leave early here". A row of logits holding NaN never
 * leaves under max_softmax (its score is NaN); under entropy it counts no {@code p > 0} term,
 * so its entropy is 0 and it leaves, exactly as in the Python runtime.
 */
public final class ExitRule {
  /** The rule kinds, by their manifest names. */
  public enum Kind {
    MAX_SOFTMAX("max_softmax"),
    ENTROPY("entropy"),
    PATIENCE("patience");

    private final String jsonName;

    Kind(String jsonName) {
      this.jsonName = jsonName;
    }

    public String jsonName() {
      return jsonName;
    }
  }

  private final Kind kind;
  private final double threshold;

  public ExitRule(Kind kind, double threshold) {
    if (kind == null || !Double.isFinite(threshold)) {
      throw new IllegalArgumentException(
          "An exit rule needs a kind and a finite threshold. Received: " + kind + ", " + threshold);
    }
    if (kind == Kind.PATIENCE && (threshold < 1 || threshold != Math.rint(threshold))) {
      throw new IllegalArgumentException(
          "A patience threshold is the number of earlier exits that must agree, a whole number "
              + ">= 1. Received: " + threshold);
    }
    this.kind = kind;
    this.threshold = threshold;
  }

  public Kind kind() {
    return kind;
  }

  public double threshold() {
    return threshold;
  }

  /**
   * The quantity the rule compares with its threshold: the top softmax probability or the
   * softmax entropy in nats.
   */
  public double score(double[] logits) {
    if (kind == Kind.PATIENCE) {
      throw new IllegalStateException("a patience rule is scored by the agreement streak");
    }
    return kind == Kind.MAX_SOFTMAX ? Softmax.maxProbability(logits) : Softmax.entropy(logits);
  }

  /** Whether a sample with these exit logits leaves under this rule. */
  public boolean fires(double[] logits) {
    return firesAt(score(logits));
  }

  /** Whether a sample with this {@link #score} (for patience, the streak) leaves. */
  public boolean firesAt(double score) {
    return kind == Kind.ENTROPY ? score <= threshold : score >= threshold;
  }

  /**
   * Parses a rule: JSON null (no rule) or an object with exactly the keys {@code kind} and
   * {@code threshold}, the threshold a finite number (not a boolean).
   */
  static ExitRule parse(Object value, String where) {
    if (value == null) {
      return null;
    }
    if (!(value instanceof Map)
        || ((Map<?, ?>) value).size() != 2
        || !((Map<?, ?>) value).containsKey("kind")
        || !((Map<?, ?>) value).containsKey("threshold")) {
      throw new ManifestException(
          where + ": a policy must be null or an object with exactly the keys 'kind' and "
              + "'threshold'. Received: " + Fields.show(value));
    }
    Map<?, ?> rule = (Map<?, ?>) value;
    Object kindName = rule.get("kind");
    Kind kind = null;
    for (Kind k : Kind.values()) {
      if (k.jsonName.equals(kindName)) {
        kind = k;
      }
    }
    if (kind == null) {
      throw new ManifestException(
          where + ": unknown policy kind " + Fields.show(kindName)
              + "; known kinds: ('max_softmax', 'entropy', 'patience').");
    }
    Object threshold = rule.get("threshold");
    if (!Fields.isNumber(threshold) || !Double.isFinite(Fields.doubleValue(threshold))) {
      throw new ManifestException(
          where + ": the threshold must be a finite number. Received: " + Fields.show(threshold));
    }
    double number = Fields.doubleValue(threshold);
    if (kind == Kind.PATIENCE && (number < 1 || number != Math.rint(number))) {
      throw new ManifestException(
          where + ": a patience threshold is the number of earlier exits that must agree, a "
              + "whole number >= 1. Received: " + Fields.show(threshold));
    }
    return new ExitRule(kind, number);
  }

  @Override
  public String toString() {
    return "{\"kind\": \"" + kind.jsonName + "\", \"threshold\": " + threshold + "}";
  }
}
