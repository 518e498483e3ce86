package org.kerasdynamic.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertSame;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;
import static org.kerasdynamic.core.Fixtures.at;
import static org.kerasdynamic.core.Fixtures.list;
import static org.kerasdynamic.core.Fixtures.object;
import static org.kerasdynamic.core.Fixtures.tensor;

import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import org.junit.Test;

/** The refusals of the Python reader's validate_manifest, one by one. */
public class ManifestParserTest {
  /** Parses the fixture after {@code change}; returns the refusal message. */
  private static String refusal(Consumer<Map<String, Object>> change) {
    Map<String, Object> manifest = Fixtures.manifest();
    change.accept(manifest);
    // Through the JSON text, as a reader sees it.
    Object json = StrictJson.parse(Fixtures.bytes(manifest), "manifest.json");
    return assertThrows(ManifestException.class, () -> ManifestParser.parse(json)).getMessage();
  }

  private static void assertRefused(String expected, Consumer<Map<String, Object>> change) {
    String message = refusal(change);
    assertTrue("'" + message + "' should contain '" + expected + "'", message.contains(expected));
  }

  @SuppressWarnings("unchecked")
  private static List<Object> listAt(Map<String, Object> tree, String key) {
    return (List<Object>) tree.get(key);
  }

  @Test
  public void parsesTheFixture() {
    Manifest manifest = ManifestParser.parse(Fixtures.manifest());
    assertEquals("stage_1", manifest.entry());
    assertEquals(List.of("stage_1", "stage_2", "stage_3"), List.copyOf(manifest.stages().keySet()));
    assertEquals(10, manifest.numClasses());
    assertEquals("exit_2", manifest.exitAt("stage_2").name());
    assertEquals(ExitRule.Kind.ENTROPY, manifest.exitAt("stage_2").policy().kind());
    assertNull(manifest.exitAt("stage_3").policy());
    assertSame(Condition.ALWAYS, manifest.stage("stage_1").edges().get(0).condition());
    assertEquals("stage_3", manifest.terminal().name());
    assertEquals(1, manifest.version());
    assertEquals("[null, 8, 8, 16]", manifest.tensor("conv_1").shapeText());
    assertEquals(600, manifest.stages().values().stream().mapToLong(StageSpec::macs).sum());
  }

  @Test
  public void refusesOtherFormatsAndVersions() {
    assertRefused("'format' must be 'keras_dynamic.stages'", m -> m.put("format", "other"));
    assertRefused("unsupported version 3", m -> m.put("version", 3L));
    assertRefused("reads versions [1, 2]", m -> m.put("version", 0L));
    assertRefused("unsupported version 1.0", m -> m.put("version", 1.0));
    assertRefused("unsupported version true", m -> m.put("version", true));
  }

  @Test
  public void refusesMissingKeysAndWrongTypes() {
    assertRefused("missing required key 'entry'", m -> m.remove("entry"));
    assertRefused("'stages' must be of type list", m -> m.put("stages", "stage_1"));
    assertRefused("'macs' must be of type int", m -> at(m, "stages", 0).put("macs", 1.5));
    assertRefused("'macs' must be of type int", m -> at(m, "stages", 0).put("macs", true));
    assertRefused("'macs' must be of type int", m -> at(m, "stages", 0).put("macs", "100"));
    assertRefused("out of the 64-bit integer range",
        m -> at(m, "stages", 0).put("macs", new java.math.BigInteger("99999999999999999999")));
    assertRefused("must not be empty", m -> m.put("exits", list()));
    assertRefused("expected a JSON object", m -> listAt(m, "stages").set(0, "stage_1"));
  }

  @Test
  public void refusesFeaturesItDoesNotImplement() {
    assertRefused("feature(s) [probability_exits]",
        m -> listAt(m, "features").add("probability_exits"));
    assertRefused("the feature 'gates' needs version 2; version 1 chains are linear",
        m -> listAt(m, "features").add("gates"));
    assertRefused("the feature 'routes' needs version 2",
        m -> listAt(m, "features").add("routes"));
    assertRefused("'routes' is non-empty", m -> m.put("routes", list(object("name", "r"))));
    assertRefused("'features' must be strings", m -> listAt(m, "features").add(1L));
    assertRefused("'gates' is non-empty", m -> m.put("gates", list(object("name", "g"))));
    ManifestParser.parse(StrictJson.parse(Fixtures.bytes(withGates(0L)), "m"));
  }

  private static Map<String, Object> withGates(Object gates) {
    Map<String, Object> manifest = Fixtures.manifest();
    manifest.put("gates", gates);
    return manifest;
  }

  @Test
  @SuppressWarnings("unchecked")
  public void refusesUnsafeOrMalformedFiles() {
    for (String path : new String[] {
        "/etc/passwd", "../stages.tflite", "a/../stages.tflite", "./stages.tflite", "a//b",
        "a/", "c:stages.tflite", "a\\b", "", "nul\u0000.tflite", "\ud800.tflite"}) {
      String message = refusal(m -> {
        at(m, "files", 0).put("path", path);
        for (Object stage : listAt(m, "stages")) {
          ((Map<String, Object>) stage).put("file", path);
        }
      });
      assertTrue(path + ": " + message, message.contains("file path"));
    }
    assertRefused("listed twice", m -> listAt(m, "files").add(at(m, "files", 0)));
    assertRefused("sha256 must be 64 lowercase hex digits",
        m -> at(m, "files", 0).put("sha256", Fixtures.repeat('A', 64)));
    assertRefused("sha256 must be 64 lowercase hex digits",
        m -> at(m, "files", 0).put("sha256", "abc"));
    assertRefused("'bytes' must be >= 0", m -> at(m, "files", 0).put("bytes", -1L));
    assertRefused("is not listed in 'files'", m -> at(m, "stages", 1).put("file", "other.tflite"));
  }

  @Test
  public void refusesBadTensors() {
    assertRefused("tensor names must be non-empty",
        m -> listAt(m, "inputs").set(0, tensor("", 8, 8, 1)));
    assertRefused("shape must start with the batch dimension",
        m -> at(m, "inputs", 0).put("shape", list(2L, 8L, 8L, 1L)));
    // Python takes true and 1.0 for 1 (they compare equal); a batch dimension is an int here.
    assertRefused("shape must start with the batch dimension",
        m -> at(m, "inputs", 0).put("shape", list(true, 8L, 8L, 1L)));
    assertRefused("shape must start with the batch dimension",
        m -> at(m, "inputs", 0).put("shape", list(1.0, 8L, 8L, 1L)));
    assertRefused("shape must start with the batch dimension", m -> at(m, "inputs", 0).put("shape", list()));
    assertRefused("non-batch dimensions must be positive ints",
        m -> at(m, "inputs", 0).put("shape", list(null, 0L, 8L, 1L)));
    assertRefused("non-batch dimensions must be positive ints",
        m -> at(m, "inputs", 0).put("shape", list(null, 8.0, 8L, 1L)));
    assertRefused("unsupported dtype 'float64'", m -> at(m, "inputs", 0).put("dtype", "float64"));
    assertRefused("quantization scale must be a positive finite number",
        m -> at(m, "inputs", 0).put("quantization", object("scale", 0L, "zero_point", 0L)));
    assertRefused("quantization scale must be a positive finite number",
        m -> at(m, "inputs", 0).put("quantization", object("scale", new java.math.BigDecimal("1e400"), "zero_point", 0L)));
    assertRefused("'zero_point' must be of type int",
        m -> at(m, "inputs", 0).put("quantization", object("scale", 0.5, "zero_point", 0.5)));
    assertRefused("'scale' must be of type int or float",
        m -> at(m, "inputs", 0).put("quantization", object("scale", true, "zero_point", 0L)));
    assertRefused("model input 'image' is listed twice",
        m -> listAt(m, "inputs").add(tensor("image", 8, 8, 1)));
  }

  @Test
  public void refusesBadStagesAndEdges() {
    assertRefused("the stage name is used twice", m -> at(m, "stages", 1).put("name", "stage_1"));
    assertRefused("'macs' must be >= 0", m -> at(m, "stages", 0).put("macs", -5L));
    assertRefused("needs at least one input and output", m -> at(m, "stages", 0).put("outputs", list()));
    assertRefused("already produced by stage 'stage_1'",
        m -> at(m, "stages", 1).put("outputs", list(tensor("exit_2", 10), tensor("conv_1", 8, 8, 16))));
    assertRefused("has condition None", m -> at(m, "stages", 0, "next", 0).remove("when"));
    assertRefused("has condition 'sometimes'", m -> at(m, "stages", 0, "next", 0).put("when", "sometimes"));
    assertRefused("supports only \"when\": \"always\"",
        m -> at(m, "stages", 0, "next", 0).put("when", object("gate", "g", "is", "on")));
    assertRefused("'next' names unknown stage 'stage_9'", m -> at(m, "stages", 0, "next", 0).put("stage", "stage_9"));
    assertRefused("chains are linear",
        m -> listAt(at(m, "stages", 0), "next").add(object("stage", "stage_3", "when", "always")));
    assertRefused("entry 'stage_9' is not a stage name", m -> m.put("entry", "stage_9"));
    assertRefused("form a cycle", m -> at(m, "stages", 2).put("next", list(object("stage", "stage_1", "when", "always"))));
    assertRefused("not reachable from entry", m -> at(m, "stages", 0).put("next", list()));
  }

  @Test
  public void refusesInputsNobodyProduces() {
    assertRefused("input 'conv_2': no model input or earlier stage produces it",
        m -> at(m, "stages", 1).put("inputs", list(tensor("conv_2", 8, 8, 16))));
    assertRefused("declared [null, 8, 8, 8] float32 but its producer declares [null, 8, 8, 16] float32",
        m -> at(m, "stages", 2).put("inputs", list(tensor("conv_2", 8, 8, 16), tensor("conv_1", 8, 8, 8))));
  }

  @Test
  public void refusesBadExits() {
    assertRefused("the exit name is used twice", m -> at(m, "exits", 1).put("name", "exit_1"));
    assertRefused("unknown exit kind 'regressor'", m -> at(m, "exits", 0).put("kind", "regressor"));
    assertRefused("unknown stage 'stage_9'", m -> at(m, "exits", 0).put("stage", "stage_9"));
    assertRefused("already has exit 'exit_1'", m -> {
      at(m, "exits", 1).put("stage", "stage_1");
      at(m, "exits", 1).put("tensor", "exit_1");
    });
    assertRefused("is not an output of stage 'stage_1'", m -> at(m, "exits", 0).put("tensor", "conv_9"));
    assertRefused("must output (batch, classes) logits", m -> at(m, "exits", 0).put("tensor", "conv_1"));
    assertRefused("exits disagree on the number of classes", m -> {
      listAt(at(m, "stages", 0), "outputs").set(0, tensor("exit_1", 5));
    });
    assertRefused("terminal stage 'stage_3' has no exit", m -> listAt(m, "exits").remove(2));
    assertRefused("'values' must be one of ('logits', 'probabilities')",
        m -> at(m, "exits", 0).put("values", "scores"));
    assertRefused("gives probabilities but 'features' does not list 'probability_exits'",
        m -> at(m, "exits", 0).put("values", "probabilities"));
    ManifestParser.parse(withValues("logits"));
  }

  @Test
  public void refusesBadPolicies() {
    assertRefused("exactly the keys 'kind' and 'threshold'",
        m -> at(m, "exits", 0).put("policy", object("kind", "max_softmax")));
    assertRefused("exactly the keys 'kind' and 'threshold'",
        m -> at(m, "exits", 0).put("policy", object("kind", "max_softmax", "threshold", 0.5, "x", 1L)));
    assertRefused("unknown policy kind 'margin'",
        m -> at(m, "exits", 0).put("policy", object("kind", "margin", "threshold", 0.5)));
    assertRefused("the threshold must be a finite number",
        m -> at(m, "exits", 0).put("policy", object("kind", "max_softmax", "threshold", true)));
    assertRefused("the threshold must be a finite number",
        m -> at(m, "exits", 0).put("policy", object("kind", "max_softmax", "threshold", "0.9")));
    assertRefused("the threshold must be a finite number",
        m -> at(m, "exits", 0).put("policy", object("kind", "entropy", "threshold", new java.math.BigDecimal("1e400"))));
    assertEquals(1.0,
        ManifestParser.parse(withPolicy(object("kind", "max_softmax", "threshold", 1L)))
            .exitAt("stage_1").policy().threshold(), 0.0);
  }

  private static Map<String, Object> withValues(String values) {
    Map<String, Object> manifest = Fixtures.manifest();
    at(manifest, "exits", 0).put("values", values);
    return manifest;
  }

  private static Map<String, Object> withPolicy(Map<String, Object> policy) {
    Map<String, Object> manifest = Fixtures.manifest();
    at(manifest, "exits", 0).put("policy", policy);
    return manifest;
  }

  @Test
  public void ignoresKeysItDoesNotUseLikePython() {
    Map<String, Object> manifest = Fixtures.manifest();
    manifest.put("model", object("name", "x"));
    manifest.put("quantization", null);
    at(manifest, "exits", 0).remove("policy");
    assertNull(ManifestParser.parse(manifest).exitAt("stage_1").policy());
  }
}
