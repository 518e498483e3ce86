package org.kerasdynamic.core;

import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * A golden trace written by the Python runtime ({@code keras_dynamic/runtime/trace.py}, which
 * documents the format): the decision tensors it computed for each sample, optionally the
 * inputs, and per run (one policy each) the decisions it took. Version 2 (exports with gates and
 * routes) adds the gate and route tensors, the stages the recording walk ran, and per run the
 * gates, routes and stages run of every sample. Read it with {@link TraceParser}.
 */
public final class Trace {
  /** A recorded array: one row of values per sample. */
  public static final class Samples {
    private final String stage;
    private final DType dtype;
    private final int[] sampleShape;
    private final double[][] rows;

    Samples(String stage, DType dtype, int[] sampleShape, double[][] rows) {
      this.stage = stage;
      this.dtype = dtype;
      this.sampleShape = sampleShape;
      this.rows = rows;
    }

    /** The stage that produced the tensor (null for model inputs). */
    public String stage() {
      return stage;
    }

    public DType dtype() {
      return dtype;
    }

    /** The shape of one sample (the recorded shape without its first dimension). */
    public int[] sampleShape() {
      return sampleShape.clone();
    }

    /** The values of sample {@code index}, flattened in C order. */
    public double[] row(int index) {
      return rows[index].clone();
    }
  }

  /** One policy's decisions. */
  public static final class Run {
    private final String name;
    private final Map<String, ExitRule> policy;
    private final int[] exit;
    private final int[] label;
    private final Map<String, Double[]> scores;
    private final Map<String, boolean[][]> gates;
    private final Map<String, int[]> routes;
    private final boolean[][] stagesRun;

    Run(
        String name,
        Map<String, ExitRule> policy,
        int[] exit,
        int[] label,
        Map<String, Double[]> scores,
        Map<String, boolean[][]> gates,
        Map<String, int[]> routes,
        boolean[][] stagesRun) {
      this.name = name;
      this.policy = Collections.unmodifiableMap(policy);
      this.exit = exit;
      this.label = label;
      this.scores = Collections.unmodifiableMap(scores);
      this.gates = gates == null ? null : Collections.unmodifiableMap(gates);
      this.routes = routes == null ? null : Collections.unmodifiableMap(routes);
      this.stagesRun = stagesRun;
    }

    /** The gate names the run records (version 2), or null for a version-1 trace. */
    public java.util.Set<String> gateNames() {
      return gates == null ? null : gates.keySet();
    }

    /** The route names the run records (version 2), or null for a version-1 trace. */
    public java.util.Set<String> routeNames() {
      return routes == null ? null : routes.keySet();
    }

    /** The Python runtime's columns of gate {@code gateName} for a sample (all off: unreached). */
    public boolean[] gate(String gateName, int index) {
      return gates.get(gateName)[index].clone();
    }

    /** The expert route {@code routeName} chose for a sample, -1 where not reached. */
    public int route(String routeName, int index) {
      return routes.get(routeName)[index];
    }

    /**
     * Which stages the Python runtime ran for a sample, indexed as {@link Trace#stages()}
     * (version 2), or null for a version-1 trace.
     */
    public boolean[] stagesRun(int index) {
      return stagesRun == null ? null : stagesRun[index].clone();
    }

    public String name() {
      return name;
    }

    /** The complete rule set of the run (null rules never leave early). */
    public Map<String, ExitRule> policy() {
      return policy;
    }

    /** The exit taken by sample {@code index}: an index into {@link Trace#exits()}. */
    public int exit(int index) {
      return exit[index];
    }

    public int label(int index) {
      return label[index];
    }

    /** The Python runtime's score of {@code exitName} for a sample, or null if not evaluated. */
    public Double score(String exitName, int index) {
      return scores.get(exitName)[index];
    }
  }

  private final int version;
  private final String manifestSha256;
  private final int samples;
  private final List<String> stages;
  private final boolean[][] recordedStages;
  private final List<String> exits;
  private final Map<String, Samples> tensors;
  private final Map<String, Samples> inputs;
  private final int[] targets;
  private final List<Run> runs;

  Trace(
      int version,
      String manifestSha256,
      int samples,
      List<String> stages,
      boolean[][] recordedStages,
      List<String> exits,
      Map<String, Samples> tensors,
      Map<String, Samples> inputs,
      int[] targets,
      List<Run> runs) {
    this.version = version;
    this.manifestSha256 = manifestSha256;
    this.samples = samples;
    this.stages = stages == null ? null : Collections.unmodifiableList(stages);
    this.recordedStages = recordedStages;
    this.exits = Collections.unmodifiableList(exits);
    this.tensors = Collections.unmodifiableMap(tensors);
    this.inputs = inputs == null ? null : Collections.unmodifiableMap(inputs);
    this.targets = targets;
    this.runs = Collections.unmodifiableList(runs);
  }

  /** 1 (a linear chain's trace) or 2 (gates and routes recorded too). */
  public int version() {
    return version;
  }

  /** The stage names in the Python chain's run order (version 2), or null. */
  public List<String> stages() {
    return stages;
  }

  /**
   * Which stages the recording walk (every exit's logits, no early exit) ran for a sample,
   * indexed as {@link #stages()} (version 2), or null. A recorded gate or route tensor holds
   * that stage's output for these samples and zeros for the others.
   */
  public boolean[] recordedStages(int index) {
    return recordedStages == null ? null : recordedStages[index].clone();
  }

  /** Hex sha256 of the manifest.json the trace was recorded with. */
  public String manifestSha256() {
    return manifestSha256;
  }

  public int samples() {
    return samples;
  }

  /** The exits in the Python chain's run order (what {@link Run#exit} indexes). */
  public List<String> exits() {
    return exits;
  }

  /** Recorded decision tensors (exit logits; version 2: gate and route outputs) by name. */
  public Map<String, Samples> tensors() {
    return tensors;
  }

  /** Recorded model inputs by name, or null where the trace holds none. */
  public Map<String, Samples> inputs() {
    return inputs;
  }

  /** True labels, or null. */
  public int[] targets() {
    return targets == null ? null : targets.clone();
  }

  public List<Run> runs() {
    return runs;
  }
}
