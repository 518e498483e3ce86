package org.kerasdynamic.core;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A parsed and validated manifest.json (docs/MANIFEST.md): model inputs, files, stages with
 * their edges, and exits. Build it with {@link ManifestParser} (or {@link ExportLoader}, which
 * also verifies the files).
 */
public final class Manifest {
  private final List<String> features;
  private final List<TensorSpec> inputs;
  private final List<FileEntry> files;
  private final String entry;
  private final Map<String, StageSpec> stages;
  private final List<ExitSpec> exits;
  private final Map<String, ExitSpec> exitByStage = new LinkedHashMap<>();
  private final Map<String, TensorSpec> tensors = new LinkedHashMap<>();

  Manifest(
      List<String> features,
      List<TensorSpec> inputs,
      List<FileEntry> files,
      String entry,
      Map<String, StageSpec> stages,
      List<ExitSpec> exits) {
    this.features = Collections.unmodifiableList(features);
    this.inputs = Collections.unmodifiableList(inputs);
    this.files = Collections.unmodifiableList(files);
    this.entry = entry;
    this.stages = Collections.unmodifiableMap(stages);
    this.exits = Collections.unmodifiableList(exits);
    for (ExitSpec exit : exits) {
      exitByStage.put(exit.stage(), exit);
    }
    for (TensorSpec spec : inputs) {
      tensors.put(spec.name(), spec);
    }
    for (StageSpec stage : stages.values()) {
      for (TensorSpec spec : stage.outputs()) {
        tensors.put(spec.name(), spec);
      }
    }
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

  /** Exits in manifest order. */
  public List<ExitSpec> exits() {
    return exits;
  }

  /** The exit living in {@code stage}, or null. */
  public ExitSpec exitAt(String stage) {
    return exitByStage.get(stage);
  }

  /** The spec of a model input or stage output by tensor name, or null. */
  public TensorSpec tensor(String name) {
    return tensors.get(name);
  }

  /** The number of classes every exit outputs. */
  public int numClasses() {
    return tensor(exits.get(0).tensor()).dims()[0];
  }
}
