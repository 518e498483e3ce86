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
 * Runs an export one sample at a time: the walk of the stage graph from the entry stage, with
 * the exit decisions of the Python runtime's sample mode.
 *
 * <p>After a stage runs, its outputs join the sample's blackboard (a tensor that a later stage
 * reads, such as a residual crossing an exit, stays there). If an exit lives in the stage, the
 * sample leaves when the stage is terminal (no outgoing edge: its exit answers whatever the
 * rule says) or when the exit's rule fires; an exit without a rule is not evaluated. Otherwise
 * the sample follows the one outgoing edge whose {@link Condition} holds.
 *
 * <p>Not thread-safe when the runner is not: use one chain per thread.
 *
 * @param <T> the runner's tensor type
 */
public final class Chain<T> {
  private final Manifest manifest;
  private final Map<String, ExitRule> rules;
  private final StageRunner<T> runner;

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
    List<String> stages = new ArrayList<>();
    List<Long> nanos = new ArrayList<>();
    Map<String, Double> scores = new LinkedHashMap<>();
    long macs = 0;
    StageSpec stage = manifest.stage(manifest.entry());
    while (true) {
      long start = System.nanoTime();
      Map<String, T> outputs = call(stage, board);
      nanos.add(System.nanoTime() - start);
      stages.add(stage.name());
      macs += stage.macs();
      board.putAll(outputs);
      ExitSpec exit = manifest.exitAt(stage.name());
      ExitRule rule = exit == null ? null : rules.get(exit.name());
      if (exit != null && (rule != null || stage.isTerminal())) {
        double[] logits = tensors.values(exit.tensor());
        boolean leaves = stage.isTerminal();
        if (rule != null) {
          double score = rule.score(logits);
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
              scores, macs);
        }
      }
      stage = next(stage, tensors, stages.size());
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

  /** The target of the one edge of {@code stage} whose condition holds. */
  private StageSpec next(StageSpec stage, DecisionTensors tensors, int stagesRun) {
    StageSpec target = null;
    for (Edge edge : stage.edges()) {
      if (edge.condition().holds(tensors)) {
        if (target != null) {
          throw new StageException(
              stage.name(), "more than one outgoing edge holds for this sample.", null);
        }
        target = manifest.stage(edge.target());
      }
    }
    if (target == null) {
      throw new StageException(stage.name(), "no outgoing edge holds for this sample.", null);
    }
    if (stagesRun >= manifest.stages().size()) {
      throw new StageException(stage.name(), "the walk visits more stages than exist.", null);
    }
    return target;
  }

  private double[] values(Map<String, T> board, String name) {
    TensorSpec spec = manifest.tensor(name);
    double[] raw;
    try {
      raw = runner.read(board.get(name), spec);
    } catch (Exception e) {
      throw new StageException(producer(name), "cannot read tensor '" + name + "': " + e, e);
    }
    if (raw.length != spec.elementsPerSample()) {
      throw new StageException(
          producer(name),
          "tensor '" + name + "' has " + raw.length + " values; the manifest says "
              + spec.elementsPerSample() + " per sample.",
          null);
    }
    return spec.quantization() == null ? raw : spec.quantization().dequantize(raw);
  }

  private String producer(String tensor) {
    for (StageSpec stage : manifest.stages().values()) {
      if (stage.output(tensor) != null) {
        return stage.name();
      }
    }
    return "(model input)";
  }
}
