package org.kerasdynamic.core;

import java.util.Arrays;

/**
 * A named tensor of the manifest: batch dimension (null for any batch, or 1), the fixed other
 * dimensions, dtype and optional quantization.
 */
public final class TensorSpec {
  private final String name;
  private final Integer batch;
  private final int[] dims;
  private final DType dtype;
  private final Quantization quantization;

  TensorSpec(String name, Integer batch, int[] dims, DType dtype, Quantization quantization) {
    this.name = name;
    this.batch = batch;
    this.dims = dims.clone();
    this.dtype = dtype;
    this.quantization = quantization;
  }

  public String name() {
    return name;
  }

  /** The batch dimension: null (any batch size) or 1 (a stage exported with a static batch). */
  public Integer batch() {
    return batch;
  }

  /** The dimensions after the batch dimension. */
  public int[] dims() {
    return dims.clone();
  }

  /** Elements of one sample: the product of {@link #dims()}. */
  public long elementsPerSample() {
    long n = 1;
    for (int d : dims) {
      n *= d;
    }
    return n;
  }

  public DType dtype() {
    return dtype;
  }

  /** Null where the tensor is not quantized. */
  public Quantization quantization() {
    return quantization;
  }

  /** Same shape and dtype (what a consumer's spec must share with its producer's). */
  boolean sameShapeAndType(TensorSpec other) {
    return dtype == other.dtype
        && java.util.Objects.equals(batch, other.batch)
        && Arrays.equals(dims, other.dims);
  }

  /** The shape as the manifest writes it, e.g. {@code [null, 8, 8, 1]}. */
  public String shapeText() {
    StringBuilder text = new StringBuilder("[").append(batch == null ? "null" : batch);
    for (int d : dims) {
      text.append(", ").append(d);
    }
    return text.append(']').toString();
  }
}
