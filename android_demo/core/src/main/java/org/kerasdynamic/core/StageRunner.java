package org.kerasdynamic.core;

import java.util.Map;

/**
 * Runs the stages of an export for one sample. {@link Chain} decides which stages run; an
 * implementation only runs them: LiteRT on the phone, a replay of recorded outputs in the tests.
 *
 * @param <T> the implementation's tensor type (e.g. a LiteRT {@code TensorBuffer})
 */
public interface StageRunner<T> {
  /**
   * Runs {@code stage} on one sample.
   *
   * @param inputs each of the stage's input tensors by name
   * @return every output the manifest declares for the stage, by name
   * @throws Exception anything the backend throws; {@link Chain} reports it with the stage name
   */
  Map<String, T> run(StageSpec stage, Map<String, T> inputs) throws Exception;

  /**
   * The values of a tensor this runner produced, as stored (quantized tensors: the raw integer
   * values; {@link Chain} dequantizes them with the manifest's parameters).
   *
   * @throws Exception anything the backend throws while reading
   */
  double[] read(T tensor, TensorSpec spec) throws Exception;
}
