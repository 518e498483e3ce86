package org.kerasdynamic.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A {@link StageRunner} that replays a trace: a stage "run" returns the outputs the Python
 * runtime recorded for the current sample. Outputs the trace does not hold (feature maps,
 * skip tensors) are placeholders that remember which stage made them for which sample; every
 * stage call checks that its inputs are the placeholders or recordings made for this sample by
 * the stage that produces them, so a walk that routed a tensor wrongly (a residual crossing an
 * exit taken from the wrong stage or sample) fails here.
 */
final class ReplayRunner implements StageRunner<ReplayRunner.Tensor> {
  /** A replayed tensor: its name, the sample and stage it belongs to, its values if recorded. */
  static final class Tensor {
    final String name;
    final int sample;
    final String producer;
    final double[] values;

    Tensor(String name, int sample, String producer, double[] values) {
      this.name = name;
      this.sample = sample;
      this.producer = producer;
      this.values = values;
    }
  }

  private final Manifest manifest;
  private final Trace trace;
  private final Map<String, String> producers = new HashMap<>();
  private final List<String> invoked = new ArrayList<>();
  private int sample = -1;

  ReplayRunner(Manifest manifest, Trace trace) {
    this.manifest = manifest;
    this.trace = trace;
    for (StageSpec stage : manifest.stages().values()) {
      for (TensorSpec spec : stage.outputs()) {
        producers.put(spec.name(), stage.name());
      }
    }
    for (Map.Entry<String, Trace.Samples> recorded : trace.tensors().entrySet()) {
      String producer = producers.get(recorded.getKey());
      if (producer == null || !producer.equals(recorded.getValue().stage())) {
        throw new ManifestException(
            "trace tensor '" + recorded.getKey() + "' is not an output of stage '"
                + recorded.getValue().stage() + "' in the manifest.");
      }
    }
  }

  /** Starts sample {@code index}: returns its model inputs (placeholders) and clears the log. */
  Map<String, Tensor> start(int index) {
    sample = index;
    invoked.clear();
    Map<String, Tensor> inputs = new LinkedHashMap<>();
    for (TensorSpec spec : manifest.inputs()) {
      inputs.put(spec.name(), new Tensor(spec.name(), index, null, null));
    }
    return inputs;
  }

  /** The stages run for the current sample, in order. */
  List<String> invoked() {
    return Collections.unmodifiableList(invoked);
  }

  @Override
  public Map<String, Tensor> run(StageSpec stage, Map<String, Tensor> inputs) {
    invoked.add(stage.name());
    for (TensorSpec spec : stage.inputs()) {
      Tensor tensor = inputs.get(spec.name());
      String producer = producers.get(spec.name());
      if (tensor == null
          || !tensor.name.equals(spec.name())
          || tensor.sample != sample
          || (producer == null ? tensor.producer != null : !producer.equals(tensor.producer))) {
        throw new IllegalStateException(
            "stage '" + stage.name() + "' received a wrong tensor for input '" + spec.name()
                + "' of sample " + sample);
      }
    }
    Map<String, Tensor> outputs = new LinkedHashMap<>();
    for (TensorSpec spec : stage.outputs()) {
      Trace.Samples recorded = trace.tensors().get(spec.name());
      outputs.put(
          spec.name(),
          new Tensor(spec.name(), sample, stage.name(), recorded == null ? null : recorded.row(sample)));
    }
    return outputs;
  }

  @Override
  public double[] read(Tensor tensor, TensorSpec spec) {
    if (tensor.values == null) {
      throw new IllegalStateException(
          "the walk read tensor '" + spec.name() + "', which the trace does not record");
    }
    return tensor.values;
  }
}
