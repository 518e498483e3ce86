package org.kerasdynamic.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertSame;
import static org.junit.Assert.assertTrue;
import static org.kerasdynamic.core.Fixtures.at;

import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/**
 * The per-sample walk of a version-2 manifest ({@link Fixtures#gatedManifest()}), as the Python
 * runtime's sample mode walks it: which stages run, what the merges receive for a skipped
 * stage, and the gates and routes recorded.
 */
public class GatedChainTest {
  /** A zeros tensor of the runner: the output of a stage that did not run. */
  private static final class Zeros {
    final String name;

    Zeros(String name) {
      this.name = name;
    }
  }

  /** Runs stages on Object tensors; decision tensors and exits return the values set. */
  private static final class FakeRunner implements StageRunner<Object> {
    final Map<String, double[]> values = new HashMap<>();
    final List<String> calls = new ArrayList<>();
    final Map<String, Map<String, Object>> received = new HashMap<>();
    final Map<String, Object> produced = new HashMap<>();

    @Override
    public Map<String, Object> run(StageSpec stage, Map<String, Object> inputs) {
      calls.add(stage.name());
      received.put(stage.name(), inputs);
      Map<String, Object> outputs = new LinkedHashMap<>();
      for (TensorSpec spec : stage.outputs()) {
        Object tensor = values.containsKey(spec.name()) ? values.get(spec.name()) : new Object();
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
      return new Zeros(spec.name());
    }
  }

  private static final double[] UNSURE = new double[10];

  private final FakeRunner runner = new FakeRunner();

  private SampleResult run(Manifest manifest, double[] gate, double[] route, double[] exit1) {
    runner.values.put("g", gate);
    runner.values.put("r", route);
    runner.values.put("exit_1", exit1);
    runner.values.put("final", UNSURE);
    return new Chain<>(manifest, Policies.defaults(manifest), runner)
        .run(Collections.singletonMap("image", new Object()));
  }

  private SampleResult run(double[] gate, double[] route, double[] exit1) {
    return run(ManifestParser.parse(Fixtures.gatedManifest()), gate, route, exit1);
  }

  private static double[] confident() {
    double[] logits = new double[10];
    logits[4] = 20;
    return logits;
  }

  private void assertZeros(String stage, String input) {
    Object tensor = runner.received.get(stage).get(input);
    assertTrue(stage + " should read zeros for " + input, tensor instanceof Zeros);
    assertEquals(input, ((Zeros) tensor).name);
  }

  @Test
  public void runsOnlyTheBranchesTheGateAndRouteChoose() {
    SampleResult result = run(new double[] {1, 0}, new double[] {0, 0.7, 0}, UNSURE);
    assertEquals(List.of("stage_1", "stage_2", "stage_4", "stage_6", "stage_8"), runner.calls);
    assertEquals(runner.calls, result.stages());
    assertEquals("final", result.exit());
    assertEquals(10 + 20 + 40 + 60 + 80, result.macs());
    assertEquals(5, result.stageNanos().length);
    assertArrayEquals(new boolean[] {true, false}, result.gates().get("g"));
    assertEquals(Integer.valueOf(1), result.routes().get("r"));
    // The merges read the branch that ran and zeros for the ones that did not.
    assertSame(runner.produced.get("group_a"), runner.received.get("stage_4").get("group_a"));
    assertZeros("stage_4", "group_b");
    assertZeros("stage_8", "expert_0");
    assertSame(runner.produced.get("expert_1"), runner.received.get("stage_8").get("expert_1"));
    assertZeros("stage_8", "expert_2");
    assertSame(runner.produced.get("r"), runner.received.get("stage_8").get("r"));
  }

  @Test
  public void aGateColumnIsOnAboveOneHalfOnly() {
    SampleResult result = run(new double[] {0.5, Math.nextUp(0.5)}, new double[] {1, 0, 0}, UNSURE);
    assertEquals(List.of("stage_1", "stage_3", "stage_4", "stage_5", "stage_8"), result.stages());
    assertArrayEquals(new boolean[] {false, true}, result.gates().get("g"));
    assertArrayEquals(new boolean[] {false, false},
        GateCondition.columns(new double[] {Double.NaN, -1}));
    assertZeros("stage_4", "group_a");
  }

  @Test
  public void bothGroupsOffRunsNeitherBranch() {
    SampleResult result = run(new double[] {0, 0}, new double[] {0, 0, 1}, UNSURE);
    assertEquals(List.of("stage_1", "stage_4", "stage_7", "stage_8"), result.stages());
    assertZeros("stage_4", "group_a");
    assertZeros("stage_4", "group_b");
  }

  @Test
  public void aRouteChoosesNumPysArgMax() {
    // Ties go to the first largest value, as np.argmax.
    assertEquals(List.of("stage_1", "stage_4", "stage_6", "stage_8"),
        run(new double[] {0, 0}, new double[] {0.1, 0.45, 0.45}, UNSURE).stages());
    assertEquals(0, RouteCondition.chosen(new double[] {0, 0, 0}));
    assertEquals(2, RouteCondition.chosen(new double[] {-3, -2, -1}));
    // NumPy treats NaN as the largest: the first NaN wins.
    assertEquals(1, RouteCondition.chosen(new double[] {5, Double.NaN, Double.NaN}));
    assertEquals(0, RouteCondition.chosen(new double[] {Double.NaN, 5, 9}));
  }

  @Test
  public void aSampleLeavingEarlyKeepsTheDecisionsOfTheStagesItRan() {
    SampleResult result = run(new double[] {1, 1}, new double[] {0, 0, 1}, confident());
    assertEquals("exit_1", result.exit());
    assertEquals(4, result.label());
    assertEquals(List.of("stage_1", "stage_2", "stage_3", "stage_4"), result.stages());
    assertArrayEquals(new boolean[] {true, true}, result.gates().get("g"));
    // The route is read as stage_4 runs, before its exit takes the sample (as in Python).
    assertEquals(Integer.valueOf(2), result.routes().get("r"));
  }

  @Test
  @SuppressWarnings("unchecked")
  public void aRouteNotReachedIsMinusOne() {
    // exit_1 moved onto the entry stage: a sample leaving there never reaches the route.
    Map<String, Object> tree = Fixtures.gatedManifest();
    ((List<Object>) at(tree, "stages", 0).get("outputs")).add(Fixtures.tensor("early", 10));
    at(tree, "exits", 0).put("stage", "stage_1");
    at(tree, "exits", 0).put("tensor", "early");
    Manifest manifest = ManifestParser.parse(tree);
    runner.values.put("early", confident());
    SampleResult result = run(manifest, new double[] {0, 1}, new double[] {0, 1, 0}, UNSURE);
    assertEquals("exit_1", result.exit());
    assertEquals(List.of("stage_1"), result.stages());
    assertEquals(Integer.valueOf(-1), result.routes().get("r"));
    assertArrayEquals(new boolean[] {false, true}, result.gates().get("g"));
  }

  @Test
  public void readsQuantizedGatesDequantized() {
    Map<String, Object> tree = Fixtures.gatedManifest();
    // The gate's tensor, as its producer and its consumer declare it.
    for (Map<String, Object> spec
        : List.of(at(tree, "stages", 0, "outputs", 1), at(tree, "stages", 3, "inputs", 0))) {
      spec.put("dtype", "int8");
      spec.put("quantization", Fixtures.object("scale", 0.01, "zero_point", -100L));
    }
    Manifest quantized = ManifestParser.parse(tree);
    // (q - zero_point) * scale in float32: 51 * 0.01f = 0.51 is on; 50 * 0.01f < 0.5 is off.
    SampleResult result =
        run(quantized, new double[] {-49, -50}, new double[] {0, 0, 1}, UNSURE);
    assertArrayEquals(new boolean[] {true, false}, result.gates().get("g"));
    assertTrue(result.stages().contains("stage_2"));
    assertFalse(result.stages().contains("stage_3"));
  }
}
