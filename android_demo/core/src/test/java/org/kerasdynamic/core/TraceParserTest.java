package org.kerasdynamic.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;
import static org.kerasdynamic.core.Fixtures.list;
import static org.kerasdynamic.core.Fixtures.object;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Base64;
import java.util.Map;
import java.util.function.Consumer;
import org.junit.Test;

public class TraceParserTest {
  private static String floats(float... values) {
    ByteBuffer buffer = ByteBuffer.allocate(4 * values.length).order(ByteOrder.LITTLE_ENDIAN);
    for (float v : values) {
      buffer.putFloat(v);
    }
    return Base64.getEncoder().encodeToString(buffer.array());
  }

  private static Map<String, Object> trace() {
    return object(
        "format", "keras_dynamic.trace", "version", 1L, "manifest_sha256", "ab", "mode", "sample",
        "samples", 2L, "exits", list("exit_1", "final"),
        "tensors", object("exit_1", object("stage", "stage_1", "dtype", "float32",
            "shape", list(2L, 2L), "data", floats(1f, 2f, 3.5f, -4f))),
        "inputs", object("image", object("dtype", "uint8", "shape", list(2L, 1L),
            "data", Base64.getEncoder().encodeToString(new byte[] {(byte) 255, 7}))),
        "runs", list(object("name", "r", "policy",
            object("exit_1", Fixtures.rule("max_softmax", 0.5), "final", null),
            "exit", list(0L, 1L), "label", list(1L, 0L),
            "scores", object("exit_1", list(0.7, 0.2), "final", list(null, null)))));
  }

  /** A version-2 trace: two stages, gate {@code g} (two groups) and route {@code r}. */
  private static Map<String, Object> gatedTrace() {
    Map<String, Object> trace = trace();
    trace.put("version", 2L);
    trace.put("stages", list("stage_1", "stage_2"));
    trace.put("recorded_stages", list(list(true, true), list(true, false)));
    Map<String, Object> run = Fixtures.at(trace, "runs", 0);
    run.put("gates", object("g", list(list(true, false), list(false, false))));
    run.put("routes", object("r", list(1L, -1L)));
    run.put("stages_run", list(list(true, true), list(true, false)));
    return trace;
  }

  private static String refusal(Consumer<Map<String, Object>> change) {
    return refusal(trace(), change);
  }

  private static String gatedRefusal(Consumer<Map<String, Object>> change) {
    return refusal(gatedTrace(), change);
  }

  private static String refusal(Map<String, Object> trace, Consumer<Map<String, Object>> change) {
    change.accept(trace);
    return assertThrows(ManifestException.class,
        () -> TraceParser.parse(Fixtures.bytes(trace), "t.json")).getMessage();
  }

  @Test
  public void readsTensorsInputsAndRuns() {
    Trace trace = TraceParser.parse(Fixtures.bytes(trace()), "t.json");
    assertArrayEquals(new double[] {3.5, -4.0}, trace.tensors().get("exit_1").row(1), 0.0);
    assertEquals("stage_1", trace.tensors().get("exit_1").stage());
    assertArrayEquals(new double[] {255.0}, trace.inputs().get("image").row(0), 0.0);
    Trace.Run run = trace.runs().get(0);
    assertEquals(1, run.exit(1));
    assertEquals(0.7, run.score("exit_1", 0), 0.0);
    assertNull(run.score("final", 1));
    assertNull(run.policy().get("final"));
    assertNull(trace.targets());
  }

  @Test
  public void refusesInconsistentTraces() {
    assertTrue(refusal(t -> t.put("format", "x")).contains("not a trace"));
    assertTrue(refusal(t -> t.put("samples", 3L)).contains("must start with the sample count 3"));
    assertTrue(refusal(t -> Fixtures.at(t, "tensors", "exit_1").put("data", floats(1f))).contains("bytes of data"));
    assertTrue(refusal(t -> Fixtures.at(t, "tensors", "exit_1").put("data", "not base64!")).contains("not base64"));
    assertTrue(refusal(t -> Fixtures.at(t, "runs", 0).put("exit", list(0L, 2L))).contains("out of range"));
    assertTrue(refusal(t -> Fixtures.at(t, "runs", 0).put("policy",
        object("exit_1", null))).contains("a rule for every exit"));
  }

  @Test
  public void readsGatesRoutesAndStagesOfVersion2() {
    Trace trace = TraceParser.parse(Fixtures.bytes(gatedTrace()), "t.json");
    assertEquals(2, trace.version());
    assertEquals(java.util.List.of("stage_1", "stage_2"), trace.stages());
    assertArrayEquals(new boolean[] {true, false}, trace.recordedStages(1));
    Trace.Run run = trace.runs().get(0);
    assertArrayEquals(new boolean[] {true, false}, run.gate("g", 0));
    assertEquals(1, run.route("r", 0));
    assertEquals(-1, run.route("r", 1));
    assertArrayEquals(new boolean[] {true, false}, run.stagesRun(1));
    assertEquals(java.util.Set.of("g"), run.gateNames());
    // Version 1 has none of them.
    Trace linear = TraceParser.parse(Fixtures.bytes(trace()), "t.json");
    assertNull(linear.stages());
    assertNull(linear.runs().get(0).stagesRun(0));
  }

  @Test
  public void refusesInconsistentVersion2Traces() {
    assertTrue(refusal(t -> t.put("version", 3L)).contains("reads versions [1, 2]"));
    assertTrue(gatedRefusal(t -> t.remove("stages")).contains("missing required key 'stages'"));
    assertTrue(gatedRefusal(t -> t.put("stages", list("stage_1", "stage_1")))
        .contains("'stages' must be distinct strings"));
    assertTrue(gatedRefusal(t -> t.put("recorded_stages", list(list(true, true))))
        .contains("'recorded_stages' needs 2 rows"));
    assertTrue(gatedRefusal(t -> Fixtures.at(t, "runs", 0).put("stages_run",
        list(list(true, true), list(true)))).contains("row 1 must be a list of 2 booleans"));
    assertTrue(gatedRefusal(t -> Fixtures.at(t, "runs", 0).put("stages_run",
        list(list(true, true), list(true, 0L)))).contains("row 1 must hold booleans only"));
    assertTrue(gatedRefusal(t -> Fixtures.at(t, "runs", 0, "gates").put("g",
        list(list(true, false), list(false)))).contains("gate 'g': row 1 must be a list of 2"));
    assertTrue(gatedRefusal(t -> Fixtures.at(t, "runs", 0, "routes").put("r", list(1L, -2L)))
        .contains("route 'r' has expert -2"));
    assertTrue(gatedRefusal(t -> Fixtures.at(t, "runs", 0).remove("routes"))
        .contains("missing required key 'routes'"));
  }
}
