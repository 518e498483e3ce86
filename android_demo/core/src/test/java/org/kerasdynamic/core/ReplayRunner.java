package org.kerasdynamic.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A {@link StageRunner} that replays a trace: a stage "run" returns the outputs the Python
 * runtime recorded for the current sample. Outputs the trace does not hold (feature maps,
 * skip tensors) are placeholders that remember which stage made them for which sample; every
 * stage call checks that its inputs are the placeholders or recordings made for this sample by
 * the stage that produces them, so a walk that routed a tensor wrongly (a residual crossing an
 * exit taken from the wrong stage or sample) fails here.
 *
 * <p>With gates and routes (trace version 2), an input whose producer did not run for the
 * sample must be that producer's {@link #zeros}, and one whose producer ran must not be; a
 * stage the recording walk did not run for the sample (its outputs were never recorded) and a
 * read of zeros (a decision taken from a stage that did not run) fail too.
 */
final class ReplayRunner implements StageRunner<ReplayRunner.Tensor> {
  /** A replayed tensor: its name, the sample and stage it belongs to, its values if recorded. */
  static final class Tensor {
    final String name;
    final int sample;
    final String producer;
    final double[] values;
    /** Made by {@link #zeros}: the output of a stage that did not run for the sample. */
    final boolean zeros;

    Tensor(String name, int sample, String producer, double[] values, boolean zeros) {
      this.name = name;
      this.sample = sample;
      this.producer = producer;
      this.values = values;
      this.zeros = zeros;
    }
  }

  private final Manifest manifest;
  private final Trace trace;
  private final Map<String, Integer> position = new HashMap<>();
  private final List<String> invoked = new ArrayList<>();
  private final Set<String> ran = new HashSet<>();
  private int sample = -1;

  ReplayRunner(Manifest manifest, Trace trace) {
    this.manifest = manifest;
    this.trace = trace;
    List<String> order = new ArrayList<>();
    for (StageSpec stage : manifest.runOrder()) {
      position.put(stage.name(), order.size());
      order.add(stage.name());
    }
    for (Map.Entry<String, Trace.Samples> recorded : trace.tensors().entrySet()) {
      String producer = manifest.producer(recorded.getKey());
      if (producer == null || !producer.equals(recorded.getValue().stage())) {
        throw new ManifestException(
            "trace tensor '" + recorded.getKey() + "' is not an output of stage '"
                + recorded.getValue().stage() + "' in the manifest.");
      }
      TensorSpec spec = manifest.tensor(recorded.getKey());
      if (recorded.getValue().dtype() != spec.dtype()) {
        throw new ManifestException(
            "trace tensor '" + recorded.getKey() + "' is " + recorded.getValue().dtype().jsonName()
                + " but the manifest says " + spec.dtype().jsonName() + ".");
      }
    }
    if ((trace.version() == 2) != (manifest.version() == 2)) {
      throw new ManifestException(
          "a version-" + trace.version() + " trace cannot replay a version-" + manifest.version()
              + " manifest.");
    }
    if (trace.stages() != null && !trace.stages().equals(order)) {
      throw new ManifestException(
          "trace 'stages' " + trace.stages() + " are not the manifest's run order " + order + ".");
    }
  }

  /** Starts sample {@code index}: returns its model inputs (placeholders) and clears the log. */
  Map<String, Tensor> start(int index) {
    sample = index;
    invoked.clear();
    ran.clear();
    Map<String, Tensor> inputs = new LinkedHashMap<>();
    for (TensorSpec spec : manifest.inputs()) {
      inputs.put(spec.name(), new Tensor(spec.name(), index, null, null, false));
    }
    return inputs;
  }

  /** The stages run for the current sample, in order. */
  List<String> invoked() {
    return Collections.unmodifiableList(invoked);
  }

  @Override
  public Map<String, Tensor> run(StageSpec stage, Map<String, Tensor> inputs) {
    if (trace.stages() != null && !trace.recordedStages(sample)[position.get(stage.name())]) {
      throw new IllegalStateException(
          "stage '" + stage.name() + "' runs for sample " + sample + " but did not run when the "
              + "trace was recorded: its outputs are not in the trace");
    }
    invoked.add(stage.name());
    for (TensorSpec spec : stage.inputs()) {
      Tensor tensor = inputs.get(spec.name());
      String producer = manifest.producer(spec.name());
      if (tensor == null
          || !tensor.name.equals(spec.name())
          || tensor.sample != sample
          || (producer == null ? tensor.producer != null : !producer.equals(tensor.producer))
          || tensor.zeros != (producer != null && !ran.contains(producer))) {
        throw new IllegalStateException(
            "stage '" + stage.name() + "' received a wrong tensor for input '" + spec.name()
                + "' of sample " + sample
                + (tensor != null && tensor.zeros ? " (zeros of a stage that ran)" : ""));
      }
    }
    ran.add(stage.name());
    Map<String, Tensor> outputs = new LinkedHashMap<>();
    for (TensorSpec spec : stage.outputs()) {
      Trace.Samples recorded = trace.tensors().get(spec.name());
      outputs.put(
          spec.name(),
          new Tensor(spec.name(), sample, stage.name(),
              recorded == null ? null : recorded.row(sample), false));
    }
    return outputs;
  }

  @Override
  public double[] read(Tensor tensor, TensorSpec spec) {
    if (tensor.zeros) {
      throw new IllegalStateException(
          "the walk read tensor '" + spec.name() + "' of stage '" + tensor.producer
              + "', which did not run for sample " + sample);
    }
    if (tensor.values == null) {
      throw new IllegalStateException(
          "the walk read tensor '" + spec.name() + "', which the trace does not record");
    }
    return tensor.values;
  }

  @Override
  public Tensor zeros(TensorSpec spec) {
    return new Tensor(spec.name(), sample, manifest.producer(spec.name()), null, true);
  }
}
