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

  /**
   * One sample of output {@code spec} of a stage that did not run for the sample (a gate or
   * route switched it off): the real value 0 everywhere, i.e. the zero point of a quantized
   * tensor. Later stages read it where they would read the output; the merge reading it
   * multiplies it by the decision that switched the stage off, so zeros are exact (see
   * docs/MANIFEST.md, version 2). Never asked for version-1 manifests.
   *
   * @throws Exception anything the backend throws while making it
   */
  T zeros(TensorSpec spec) throws Exception;
}
