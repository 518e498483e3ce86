package org.kerasdynamic.core;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;

/**
 * Runs an export one sample at a time: the walk of the stage graph, with the decisions of the
 * Python runtime's sample mode ({@code walk_samples} in keras_dynamic/runtime/walk.py, and the
 * linear loop of chain.py that it equals on a version-1 chain).
 *
 * <p>Stages are visited in run order. The entry runs; a later stage runs when an edge into it
 * fires from a stage that ran for the sample ({@link Condition}: "always", a gate column on, a
 * route choosing it); a stage that does not run is never invoked, and its outputs are the
 * runner's {@link StageRunner#zeros} for the stages that read them. After a stage runs, its
 * outputs join the sample's blackboard (a tensor that a later stage reads, such as a residual
 * crossing an exit, stays there) and its gates and routes are read. If an exit lives in the
 * stage, the sample leaves when the stage is the last one (its exit answers whatever the rule
 * says) or when the exit's rule fires; an exit without a rule is not evaluated, except that
 * under a patience rule every exit's top class counts towards the agreement streak (as
 * chain.py's sample loops do).
 *
 * <p>Not thread-safe when the runner is not: use one chain per thread.
 *
 * @param <T> the runner's tensor type
 */
public final class Chain<T> {
  private final Manifest manifest;
  private final Map<String, ExitRule> rules;
  private final StageRunner<T> runner;
  private final boolean patience;

  /**
   * @param rules a rule for every exit of the manifest (null: never leave early there), e.g.
   *     {@code Policies.merge(Policies.defaults(manifest), overrides)}
   */
  public Chain(Manifest manifest, Map<String, ExitRule> rules, StageRunner<T> runner) {
    this.manifest = Objects.requireNonNull(manifest, "manifest");
    this.runner = Objects.requireNonNull(runner, "runner");
    Set<String> names = new HashSet<>();
    for (ExitSpec exit : manifest.exits()) {
      names.add(exit.name());
    }
    if (!names.equals(rules.keySet())) {
      throw new IllegalArgumentException(
          "rules must name exactly the manifest's exits " + names + ". Received: "
              + rules.keySet());
    }
    this.rules = new HashMap<>(rules);
    boolean anyPatience = false;
    for (ExitRule rule : rules.values()) {
      anyPatience |= rule != null && rule.kind() == ExitRule.Kind.PATIENCE;
    }
    this.patience = anyPatience;
    if (patience && !(manifest.gates().isEmpty() && manifest.routes().isEmpty())) {
      throw new IllegalArgumentException(
          "patience rules apply to linear chains (exits, no gates or routes); this export has "
              + "gates or routes. Use max_softmax or entropy thresholds.");
    }
  }

  public Manifest manifest() {
    return manifest;
  }

  /**
   * Runs one sample.
   *
   * @param inputs one tensor per model input, by name
   * @throws StageException if a stage fails or returns other tensors than it declares
   */
  public SampleResult run(Map<String, T> inputs) {
    Set<String> expected = new HashSet<>();
    for (TensorSpec spec : manifest.inputs()) {
      expected.add(spec.name());
    }
    if (!expected.equals(inputs.keySet())) {
      throw new IllegalArgumentException(
          "inputs must be exactly " + expected + ". Received: " + inputs.keySet());
    }
    Map<String, T> board = new HashMap<>(inputs);
    DecisionTensors tensors = name -> values(board, name);
    SampleDecisions decisions = new SampleDecisions(manifest);
    Set<String> ran = new HashSet<>();
    List<String> stages = new ArrayList<>();
    List<Long> nanos = new ArrayList<>();
    Map<String, Double> scores = new LinkedHashMap<>();
    long macs = 0;
    int streak = 0;
    int previous = -1;
    StageSpec terminal = manifest.terminal();
    for (StageSpec stage : manifest.runOrder()) {
      if (!stage.name().equals(manifest.entry()) && !fires(stage, ran, tensors)) {
        skip(stage, board);
        continue;
      }
      long start = System.nanoTime();
      Map<String, T> outputs = call(stage, board);
      nanos.add(System.nanoTime() - start);
      ran.add(stage.name());
      stages.add(stage.name());
      macs += stage.macs();
      board.putAll(outputs);
      for (DecisionSpec decision : manifest.decisionsOf(stage.name())) {
        decisions.read(decision, tensors);
      }
      ExitSpec exit = manifest.exitAt(stage.name());
      ExitRule rule = exit == null ? null : rules.get(exit.name());
      boolean last = stage == terminal;
      if (exit != null && (rule != null || last || patience)) {
        double[] logits = tensors.values(exit.tensor());
        if (patience) {
          int label = Softmax.topClass(logits);
          streak = label == previous ? streak + 1 : 0;
          previous = label;
        }
        boolean leaves = last;
        if (rule != null) {
          double score = rule.kind() == ExitRule.Kind.PATIENCE ? streak : rule.score(logits);
          scores.put(exit.name(), score);
          leaves |= rule.firesAt(score);
        }
        if (leaves) {
          long[] stageNanos = new long[nanos.size()];
          for (int i = 0; i < stageNanos.length; i++) {
            stageNanos[i] = nanos.get(i);
          }
          float[] probabilities = Softmax.probabilities32(logits);
          return new SampleResult(
              exit.name(), Softmax.label(probabilities), probabilities, stages, stageNanos,
              scores, macs, decisions);
        }
      }
    }
    // Unreachable: the last stage always runs and carries an exit (GraphCheck).
    throw new StageException(terminal.name(), "the walk ended without an exit.", null);
  }

  /** Whether an edge into {@code stage} fires from a stage that ran for this sample. */
  private boolean fires(StageSpec stage, Set<String> ran, DecisionTensors tensors) {
    for (Edge edge : manifest.incoming(stage.name())) {
      if (ran.contains(edge.source()) && edge.condition().holds(tensors)) {
        return true;
      }
    }
    return false;
  }

  private void skip(StageSpec stage, Map<String, T> board) {
    for (TensorSpec spec : stage.outputs()) {
      try {
        board.put(spec.name(), runner.zeros(spec));
      } catch (Exception e) {
        throw new StageException(
            stage.name(), "cannot make zeros for skipped output '" + spec.name() + "': " + e, e);
      }
    }
  }

  private Map<String, T> call(StageSpec stage, Map<String, T> board) {
    Map<String, T> inputs = new LinkedHashMap<>();
    for (TensorSpec spec : stage.inputs()) {
      T tensor = board.get(spec.name());
      if (tensor == null) {
        throw new StageException(
            stage.name(), "input '" + spec.name() + "' was not produced for this sample.", null);
      }
      inputs.put(spec.name(), tensor);
    }
    Map<String, T> outputs;
    try {
      outputs = runner.run(stage, inputs);
    } catch (Exception e) {
      throw new StageException(stage.name(), "failed to run: " + e, e);
    }
    for (TensorSpec spec : stage.outputs()) {
      if (outputs == null || outputs.get(spec.name()) == null) {
        throw new StageException(
            stage.name(), "the runner returned no output '" + spec.name() + "'.", null);
      }
    }
    return outputs;
  }

  private double[] values(Map<String, T> board, String name) {
    TensorSpec spec = manifest.tensor(name);
    String producer = manifest.producer(name);
    double[] raw;
    try {
      raw = runner.read(board.get(name), spec);
    } catch (Exception e) {
      throw new StageException(producer, "cannot read tensor '" + name + "': " + e, e);
    }
    if (raw.length != spec.elementsPerSample()) {
      throw new StageException(
          producer,
          "tensor '" + name + "' has " + raw.length + " values; the manifest says "
              + spec.elementsPerSample() + " per sample.",
          null);
    }
    return spec.quantization() == null ? raw : spec.quantization().dequantize(raw);
  }
}
