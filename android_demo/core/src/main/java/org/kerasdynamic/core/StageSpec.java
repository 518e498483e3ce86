package org.kerasdynamic.core;

import java.util.Collections;
import java.util.List;

/**
 * One stage of the manifest: the signature of a model file it runs, its named input and output
 * tensors, its multiply-accumulates per sample and its outgoing edges. A stage without edges is
 * the last one (version 1) or, in version 2, also a gated or routed branch whose outputs a later
 * stage merges; {@link Manifest#terminal()} names the stage whose exit answers unconditionally.
 */
public final class StageSpec {
  private final String name;
  private final String file;
  private final String signature;
  private final List<TensorSpec> inputs;
  private final List<TensorSpec> outputs;
  private final long macs;
  private final List<Edge> edges;

  StageSpec(
      String name,
      String file,
      String signature,
      List<TensorSpec> inputs,
      List<TensorSpec> outputs,
      long macs,
      List<Edge> edges) {
    this.name = name;
    this.file = file;
    this.signature = signature;
    this.inputs = Collections.unmodifiableList(inputs);
    this.outputs = Collections.unmodifiableList(outputs);
    this.macs = macs;
    this.edges = Collections.unmodifiableList(edges);
  }

  public String name() {
    return name;
  }

  /** The model file, relative to the export folder. */
  public String file() {
    return file;
  }

  /** The signature of {@link #file()} that runs this stage. */
  public String signature() {
    return signature;
  }

  public List<TensorSpec> inputs() {
    return inputs;
  }

  public List<TensorSpec> outputs() {
    return outputs;
  }

  /** The output named {@code tensor}, or null. */
  public TensorSpec output(String tensor) {
    for (TensorSpec spec : outputs) {
      if (spec.name().equals(tensor)) {
        return spec;
      }
    }
    return null;
  }

  public long macs() {
    return macs;
  }

  public List<Edge> edges() {
    return edges;
  }

  /** This stage with {@code edges} (parsed once the manifest's gates and routes are known). */
  StageSpec withEdges(List<Edge> edges) {
    return new StageSpec(name, file, signature, inputs, outputs, macs, edges);
  }
}
