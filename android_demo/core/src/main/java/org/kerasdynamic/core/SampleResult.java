package org.kerasdynamic.core;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** What {@link Chain#run} reports for one sample. */
public final class SampleResult {
  private final String exit;
  private final int label;
  private final float[] probabilities;
  private final List<String> stages;
  private final long[] stageNanos;
  private final Map<String, Double> scores;
  private final long macs;
  private final SampleDecisions decisions;

  SampleResult(
      String exit,
      int label,
      float[] probabilities,
      List<String> stages,
      long[] stageNanos,
      Map<String, Double> scores,
      long macs,
      SampleDecisions decisions) {
    this.exit = exit;
    this.label = label;
    this.probabilities = probabilities;
    this.stages = Collections.unmodifiableList(stages);
    this.stageNanos = stageNanos;
    this.scores = Collections.unmodifiableMap(scores);
    this.macs = macs;
    this.decisions = decisions;
  }

  /** The name of the exit the sample left at. */
  public String exit() {
    return exit;
  }

  /** The predicted class (first largest float32 probability, as the Python runtime reports it). */
  public int label() {
    return label;
  }

  /** Softmax of the exit taken, rounded to float32. */
  public float[] probabilities() {
    return probabilities.clone();
  }

  /**
   * The stages that ran, in run order: up to the exit taken, without the stages a gate or route
   * switched off.
   */
  public List<String> stages() {
    return stages;
  }

  /** Wall time of each stage call in {@link #stages()}, in nanoseconds. */
  public long[] stageNanos() {
    return stageNanos.clone();
  }

  /** Sum of {@link #stageNanos()}. */
  public long totalNanos() {
    long total = 0;
    for (long nanos : stageNanos) {
      total += nanos;
    }
    return total;
  }

  /**
   * The score of every exit whose rule was evaluated for the sample, in walk order: the top
   * probability (max_softmax) or the entropy in nats (entropy).
   */
  public Map<String, Double> scores() {
    return scores;
  }

  /** Multiply-accumulates of the stages that ran. */
  public long macs() {
    return macs;
  }

  /**
   * Each gate's columns by gate name (version 2; empty for linear chains): which groups were on,
   * all off where the sample left before the stage computing the gate, or never ran it.
   */
  public Map<String, boolean[]> gates() {
    Map<String, boolean[]> copy = new LinkedHashMap<>();
    for (Map.Entry<String, boolean[]> gate : decisions.gates().entrySet()) {
      copy.put(gate.getKey(), gate.getValue().clone());
    }
    return copy;
  }

  /**
   * The expert each route chose by route name (version 2; empty for linear chains), -1 where
   * the sample left before the stage computing the route, or never ran it.
   */
  public Map<String, Integer> routes() {
    return decisions.routes();
  }
}
