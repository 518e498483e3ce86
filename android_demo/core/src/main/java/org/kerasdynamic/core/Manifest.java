package org.kerasdynamic.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A parsed and validated manifest.json (docs/MANIFEST.md, versions 1 and 2): model inputs, files,
 * stages with their edges, exits, and the gates and routes of version 2. Build it with {@link
 * ManifestParser} (or {@link ExportLoader}, which also verifies the files).
 */
public final class Manifest {
  private final int version;
  private final List<String> features;
  private final List<TensorSpec> inputs;
  private final List<FileEntry> files;
  private final String entry;
  private final Map<String, StageSpec> stages;
  private final List<ExitSpec> exits;
  private final List<StageSpec> runOrder = new ArrayList<>();
  private final DecisionTables decisions;
  private final Map<String, ExitSpec> exitByStage = new LinkedHashMap<>();
  private final Map<String, TensorSpec> tensors = new LinkedHashMap<>();
  private final Map<String, String> producers = new LinkedHashMap<>();
  private final Map<String, List<Edge>> incoming = new LinkedHashMap<>();
  private final Map<String, List<DecisionSpec>> decisionsByStage = new LinkedHashMap<>();

  Manifest(
      int version,
      List<String> features,
      List<TensorSpec> inputs,
      List<FileEntry> files,
      String entry,
      Map<String, StageSpec> stages,
      List<ExitSpec> exits,
      List<String> order,
      DecisionTables decisions) {
    this.version = version;
    this.features = Collections.unmodifiableList(features);
    this.inputs = Collections.unmodifiableList(inputs);
    this.files = Collections.unmodifiableList(files);
    this.entry = entry;
    this.stages = Collections.unmodifiableMap(stages);
    this.exits = Collections.unmodifiableList(exits);
    this.decisions = decisions;
    for (ExitSpec exit : exits) {
      exitByStage.put(exit.stage(), exit);
    }
    for (TensorSpec spec : inputs) {
      tensors.put(spec.name(), spec);
    }
    for (String name : order) {
      StageSpec stage = stages.get(name);
      runOrder.add(stage);
      incoming.put(name, new ArrayList<>());
      decisionsByStage.put(name, new ArrayList<>());
      for (TensorSpec spec : stage.outputs()) {
        tensors.put(spec.name(), spec);
        producers.put(spec.name(), name);
      }
    }
    for (StageSpec stage : runOrder) {
      for (Edge edge : stage.edges()) {
        incoming.get(edge.target()).add(edge);
      }
    }
    for (DecisionSpec decision : gates()) {
      decisionsByStage.get(decision.stage()).add(decision);
    }
    for (DecisionSpec decision : routes()) {
      decisionsByStage.get(decision.stage()).add(decision);
    }
  }

  /** The manifest version: 1 (a linear chain) or 2 (gates and routes). */
  public int version() {
    return version;
  }

  public List<String> features() {
    return features;
  }

  /** The model inputs, fed to the entry stage and to any later stage that reads them. */
  public List<TensorSpec> inputs() {
    return inputs;
  }

  public List<FileEntry> files() {
    return files;
  }

  /** The name of the stage every sample starts at. */
  public String entry() {
    return entry;
  }

  /** Stages by name, in manifest order. */
  public Map<String, StageSpec> stages() {
    return stages;
  }

  public StageSpec stage(String name) {
    return stages.get(name);
  }

  /**
   * The stages in run order: the walk from the entry (version 1) or the listed order (version
   * 2, where every edge points to a later stage). A stage runs only after every stage it may
   * read from.
   */
  public List<StageSpec> runOrder() {
    return Collections.unmodifiableList(runOrder);
  }

  /** The last stage in run order: its exit answers for every sample that reaches it. */
  public StageSpec terminal() {
    return runOrder.get(runOrder.size() - 1);
  }

  /** The edges leading into {@code stage}, from stages earlier in run order. */
  public List<Edge> incoming(String stage) {
    return Collections.unmodifiableList(incoming.get(stage));
  }

  /** Exits in manifest order. */
  public List<ExitSpec> exits() {
    return exits;
  }

  /** The exit living in {@code stage}, or null. */
  public ExitSpec exitAt(String stage) {
    return exitByStage.get(stage);
  }

  /** The gates (version 2), in manifest order; empty for linear chains. */
  public List<DecisionSpec> gates() {
    return Collections.unmodifiableList(new ArrayList<>(decisions.gates().values()));
  }

  /** The routes (version 2), in manifest order; empty for linear chains. */
  public List<DecisionSpec> routes() {
    return Collections.unmodifiableList(new ArrayList<>(decisions.routes().values()));
  }

  /** The gates and routes {@code stage} computes (gates first), read after it runs. */
  public List<DecisionSpec> decisionsOf(String stage) {
    return Collections.unmodifiableList(decisionsByStage.get(stage));
  }

  /** The spec of a model input or stage output by tensor name, or null. */
  public TensorSpec tensor(String name) {
    return tensors.get(name);
  }

  /** The stage producing tensor {@code name}, or null for a model input. */
  public String producer(String name) {
    return producers.get(name);
  }

  /** The number of classes every exit outputs. */
  public int numClasses() {
    return tensor(exits.get(0).tensor()).dims()[0];
  }
}
