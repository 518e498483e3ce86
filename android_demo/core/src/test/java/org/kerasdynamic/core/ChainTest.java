package org.kerasdynamic.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertSame;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;
import static org.kerasdynamic.core.Fixtures.at;

import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/** The per-sample walk: which stages run, what they receive, and where the sample leaves. */
public class ChainTest {
  /** Logits with a chosen top probability: class 0 gets log(odds) over nine zeros. */
  private static double[] confident(double top) {
    double[] logits = new double[10];
    logits[3] = Math.log(9 * top / (1 - top));
    return logits;
  }

  /** Runs stages on Object tensors; each output is a fresh object, exits return set logits. */
  private static final class FakeRunner implements StageRunner<Object> {
    final Map<String, double[]> logits = new HashMap<>();
    final List<String> calls = new ArrayList<>();
    final Map<String, Map<String, Object>> received = new HashMap<>();
    final Map<String, Object> produced = new HashMap<>();
    String failing;

    @Override
    public Map<String, Object> run(StageSpec stage, Map<String, Object> inputs) {
      calls.add(stage.name());
      received.put(stage.name(), inputs);
      if (stage.name().equals(failing)) {
        throw new IllegalStateException("delegate refused");
      }
      Map<String, Object> outputs = new LinkedHashMap<>();
      for (TensorSpec spec : stage.outputs()) {
        Object tensor = logits.containsKey(spec.name()) ? logits.get(spec.name()) : new Object();
        outputs.put(spec.name(), tensor);
        produced.put(spec.name(), tensor);
      }
      return outputs;
    }

    @Override
    public double[] read(Object tensor, TensorSpec spec) {
      return (double[]) tensor;
    }

    @Override
    public Object zeros(TensorSpec spec) {
      throw new AssertionError("a linear chain never skips a stage");
    }
  }

  private final Manifest manifest = ManifestParser.parse(Fixtures.manifest());
  private final FakeRunner runner = new FakeRunner();
  private final Object image = new Object();

  private SampleResult run(Map<String, ExitRule> overrides) {
    Map<String, ExitRule> rules = Policies.merge(Policies.defaults(manifest), overrides);
    return new Chain<>(manifest, rules, runner).run(Collections.singletonMap("image", image));
  }

  private void setLogits(double exit1, double exit2, double fin) {
    runner.logits.put("exit_1", confident(exit1));
    runner.logits.put("exit_2", confident(exit2));
    runner.logits.put("final", confident(fin));
  }

  @Test
  public void leavesAtTheFirstExitThatFiresAndSkipsTheRest() {
    setLogits(0.95, 0.99, 0.99);
    SampleResult result = run(Collections.emptyMap());
    assertEquals("exit_1", result.exit());
    assertEquals(List.of("stage_1"), runner.calls);
    assertEquals(List.of("stage_1"), result.stages());
    assertEquals(100, result.macs());
    assertEquals(3, result.label());
    assertEquals(0.95, result.scores().get("exit_1"), 1e-12);
    assertEquals(1, result.stageNanos().length);
  }

  @Test
  public void passesTheSkipTensorAcrossTheExitItCrosses() {
    setLogits(0.5, 0.5, 0.6);
    SampleResult result = run(Collections.emptyMap());
    assertEquals("final", result.exit());
    assertEquals(List.of("stage_1", "stage_2", "stage_3"), runner.calls);
    assertSame(image, runner.received.get("stage_1").get("image"));
    assertSame(runner.produced.get("conv_1"), runner.received.get("stage_3").get("conv_1"));
    assertSame(runner.produced.get("conv_2"), runner.received.get("stage_3").get("conv_2"));
    assertEquals(2, runner.received.get("stage_3").size());
    assertEquals(600, result.macs());
    // The terminal exit has no rule: it answers without a score.
    assertEquals(List.of("exit_1", "exit_2"), List.copyOf(result.scores().keySet()));
  }

  @Test
  public void anExitWithoutARuleIsNotEvaluated() {
    setLogits(0.999, 0.999, 0.6);
    Map<String, ExitRule> overrides = new HashMap<>();
    overrides.put("exit_1", null);
    SampleResult result = run(overrides);
    assertEquals("exit_2", result.exit());
    assertFalse(result.scores().containsKey("exit_1"));
  }

  @Test
  public void theTerminalExitAnswersWhateverItsRuleSays() {
    setLogits(0.2, 0.2, 0.2);
    Map<String, ExitRule> overrides = new HashMap<>();
    overrides.put("final", new ExitRule(ExitRule.Kind.MAX_SOFTMAX, 0.99));
    SampleResult result = run(overrides);
    assertEquals("final", result.exit());
    assertTrue(result.scores().containsKey("final"));
  }

  /** Logits whose top class is {@code label}. */
  private static double[] top(int label) {
    double[] logits = new double[10];
    logits[label] = 1.0;
    return logits;
  }

  private Map<String, ExitRule> patience(double first, double second) {
    Map<String, ExitRule> overrides = new HashMap<>();
    overrides.put("exit_1", new ExitRule(ExitRule.Kind.PATIENCE, first));
    overrides.put("exit_2", new ExitRule(ExitRule.Kind.PATIENCE, second));
    return overrides;
  }

  @Test
  public void patienceLeavesWhenTheExitsBeforeAgree() {
    runner.logits.put("exit_1", top(4));
    runner.logits.put("exit_2", top(4));
    runner.logits.put("final", top(7));
    SampleResult result = run(patience(1, 1));
    assertEquals("exit_2", result.exit());
    assertEquals(4, result.label());
    // The first exit has nothing before it to agree with.
    assertEquals(0.0, result.scores().get("exit_1"), 0.0);
    assertEquals(1.0, result.scores().get("exit_2"), 0.0);
  }

  @Test
  public void patienceGoesOnWhenTheExitsDisagree() {
    runner.logits.put("exit_1", top(4));
    runner.logits.put("exit_2", top(5));
    runner.logits.put("final", top(5));
    assertEquals("final", run(patience(1, 1)).exit());
    runner.logits.put("exit_2", top(4));
    // A streak of 2 needs two agreeing exits before this one.
    assertEquals("final", run(patience(2, 2)).exit());
  }

  @Test
  public void anExitWithoutARuleStillCountsTowardsTheStreak() {
    runner.logits.put("exit_1", top(4));
    runner.logits.put("exit_2", top(4));
    runner.logits.put("final", top(7));
    Map<String, ExitRule> overrides = patience(1, 1);
    overrides.put("exit_1", null);
    SampleResult result = run(overrides);
    assertEquals("exit_2", result.exit());
    assertFalse(result.scores().containsKey("exit_1"));
  }

  @Test
  public void aPatienceMustBeAWholeNumberOfExits() {
    assertThrows(IllegalArgumentException.class,
        () -> new ExitRule(ExitRule.Kind.PATIENCE, 1.5));
    assertThrows(IllegalArgumentException.class,
        () -> new ExitRule(ExitRule.Kind.PATIENCE, 0));
  }

  @Test
  public void entropyRulesLeaveAtLowEntropy() {
    setLogits(0.5, 0.999, 0.5);
    assertEquals("exit_2", run(Collections.emptyMap()).exit());
  }

  @Test
  public void dequantizesQuantizedExitTensors() {
    Map<String, Object> tree = Fixtures.manifest();
    Map<String, Object> spec = at(tree, "stages", 0, "outputs", 0);
    assertEquals("exit_1", spec.get("name"));
    spec.put("quantization", Fixtures.object("scale", 0.5, "zero_point", 2L));
    spec.put("dtype", "int8");
    Manifest quantized = ManifestParser.parse(tree);
    // Real logits (q - 2) * 0.5: zero but for class 3 (not an int8 value, but the arithmetic is
    // what is tested).
    double[] raw = new double[10];
    java.util.Arrays.fill(raw, 2);
    raw[3] = 2 + 2 * Math.log(9 * 0.95 / 0.05);
    runner.logits.put("exit_1", raw);
    Map<String, ExitRule> rules = Policies.defaults(quantized);
    SampleResult result =
        new Chain<>(quantized, rules, runner).run(Collections.singletonMap("image", image));
    assertEquals("exit_1", result.exit());
    assertEquals(0.95, result.scores().get("exit_1"), 1e-6);
  }

  @Test
  public void aFailingStageIsNamed() {
    setLogits(0.1, 0.1, 0.1);
    runner.failing = "stage_2";
    StageException e = assertThrows(StageException.class, () -> run(Collections.emptyMap()));
    assertEquals("stage_2", e.stage());
    assertTrue(e.getMessage(), e.getMessage().contains("delegate refused"));
  }

  @Test
  public void aMissingOutputIsNamed() {
    setLogits(0.1, 0.1, 0.1);
    StageRunner<Object> partial = new StageRunner<Object>() {
      @Override
      public Map<String, Object> run(StageSpec stage, Map<String, Object> inputs) {
        return Collections.singletonMap(stage.outputs().get(0).name(), runner.logits.get("exit_1"));
      }

      @Override
      public double[] read(Object tensor, TensorSpec spec) {
        return (double[]) tensor;
      }

      @Override
      public Object zeros(TensorSpec spec) {
        throw new AssertionError("a linear chain never skips a stage");
      }
    };
    StageException e = assertThrows(StageException.class,
        () -> new Chain<>(manifest, Policies.defaults(manifest), partial)
            .run(Collections.singletonMap("image", image)));
    assertTrue(e.getMessage(), e.getMessage().contains("no output 'conv_1'"));
  }

  @Test
  public void aWrongSizedDecisionTensorIsNamed() {
    setLogits(0.1, 0.1, 0.1);
    runner.logits.put("exit_1", new double[] {1, 2, 3});
    StageException e = assertThrows(StageException.class, () -> run(Collections.emptyMap()));
    assertTrue(e.getMessage(), e.getMessage().contains("tensor 'exit_1' has 3 values"));
  }

  @Test
  public void refusesRulesAndInputsThatDoNotFit() {
    Map<String, ExitRule> partialRules = new HashMap<>(Policies.defaults(manifest));
    partialRules.remove("final");
    assertThrows(IllegalArgumentException.class, () -> new Chain<>(manifest, partialRules, runner));
    Chain<Object> chain = new Chain<>(manifest, Policies.defaults(manifest), runner);
    assertThrows(IllegalArgumentException.class,
        () -> chain.run(Collections.singletonMap("pixels", image)));
  }
}
