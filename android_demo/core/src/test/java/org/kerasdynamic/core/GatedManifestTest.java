package org.kerasdynamic.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertSame;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;
import static org.kerasdynamic.core.Fixtures.always;
import static org.kerasdynamic.core.Fixtures.at;
import static org.kerasdynamic.core.Fixtures.gate;
import static org.kerasdynamic.core.Fixtures.list;
import static org.kerasdynamic.core.Fixtures.object;
import static org.kerasdynamic.core.Fixtures.route;
import static org.kerasdynamic.core.Fixtures.tensor;

import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import java.util.stream.Collectors;
import org.junit.Test;

/** Version 2 (gates and routes): the Python reader's refusals of _check_graph and friends. */
public class GatedManifestTest {
  private static String refusal(Consumer<Map<String, Object>> change) {
    Map<String, Object> manifest = Fixtures.gatedManifest();
    change.accept(manifest);
    Object json = StrictJson.parse(Fixtures.bytes(manifest), "manifest.json");
    return assertThrows(ManifestException.class, () -> ManifestParser.parse(json)).getMessage();
  }

  private static void assertRefused(String expected, Consumer<Map<String, Object>> change) {
    String message = refusal(change);
    assertTrue("'" + message + "' should contain '" + expected + "'", message.contains(expected));
  }

  @SuppressWarnings("unchecked")
  private static List<Object> listAt(Map<String, Object> tree, Object... path) {
    Object node = tree;
    for (Object step : path) {
      node = step instanceof Integer
          ? ((List<Object>) node).get((Integer) step)
          : ((Map<String, Object>) node).get(step);
    }
    return (List<Object>) node;
  }

  private static Map<String, Object> when(Map<String, Object> m, int stage, int edge) {
    return at(m, "stages", stage, "next", edge);
  }

  @Test
  public void parsesGatesRoutesAndConditionalEdges() {
    Manifest manifest =
        ManifestParser.parse(StrictJson.parse(Fixtures.bytes(Fixtures.gatedManifest()), "m"));
    assertEquals(2, manifest.version());
    assertEquals("stage_8", manifest.terminal().name());
    assertEquals(8, manifest.runOrder().size());
    DecisionSpec g = manifest.gates().get(0);
    assertEquals(DecisionSpec.Kind.GATE, g.kind());
    assertEquals(2, g.width());
    assertEquals("stage_1", g.stage());
    DecisionSpec r = manifest.routes().get(0);
    assertEquals(3, r.width());
    assertEquals(List.of(r), manifest.decisionsOf("stage_4"));
    List<Edge> edges = manifest.stage("stage_1").edges();
    assertSame(Condition.ALWAYS, edges.get(0).condition());
    GateCondition second = (GateCondition) edges.get(2).condition();
    assertSame(g, second.gate());
    assertEquals(1, second.index());
    assertEquals("{\"route\": \"r\", \"index\": 2}",
        manifest.stage("stage_4").edges().get(3).condition().toString());
    assertEquals(List.of("stage_4"),
        manifest.incoming("stage_8").stream().map(Edge::source).collect(Collectors.toList()));
    assertEquals(List.of("stage_1"),
        manifest.incoming("stage_3").stream().map(Edge::source).collect(Collectors.toList()));
  }

  @Test
  public void refusesMalformedConditions() {
    assertRefused("'when' must be \"always\", {\"gate\": name, \"index\": j} or {\"route\": name",
        m -> when(m, 0, 1).put("when", "sometimes"));
    assertRefused("'when' must be \"always\"", m -> when(m, 0, 1).remove("when"));
    assertRefused("'when' must be \"always\"",
        m -> when(m, 0, 1).put("when", object("gate", "g")));
    assertRefused("'when' must be \"always\"",
        m -> when(m, 0, 1).put("when", object("gate", "g", "index", 0L, "route", "r")));
    assertRefused("'when' must be \"always\"",
        m -> when(m, 0, 1).put("when", object("gate", "g", "is", "on")));
    assertRefused("stage 'stage_1' edge to 'stage_2': names unknown gate 'nope'",
        m -> when(m, 0, 1).put("when", object("gate", "nope", "index", 0L)));
    assertRefused("names unknown gate 1", m -> when(m, 0, 1).put("when", object("gate", 1L, "index", 0L)));
    // A gate's name is not a route's.
    assertRefused("names unknown route 'g'",
        m -> when(m, 0, 1).put("when", object("route", "g", "index", 0L)));
    assertRefused("'index' must be an int in [0, 1] for gate 'g'. Received: 2",
        m -> when(m, 0, 1).put("when", object("gate", "g", "index", 2L)));
    assertRefused("'index' must be an int in [0, 2] for route 'r'. Received: -1",
        m -> when(m, 3, 1).put("when", object("route", "r", "index", -1L)));
    assertRefused("'index' must be an int in [0, 1] for gate 'g'. Received: true",
        m -> when(m, 0, 1).put("when", object("gate", "g", "index", true)));
    assertRefused("'index' must be an int in [0, 1] for gate 'g'. Received: 0.0",
        m -> when(m, 0, 1).put("when", object("gate", "g", "index", 0.0)));
    assertRefused("a route edge must leave the stage that computes route 'r' ('stage_4')",
        m -> listAt(m, "stages", 0, "next").add(route("stage_5", "r", 0)));
    assertRefused("a gate edge must leave the stage that computes gate 'g' ('stage_1')",
        m -> when(m, 3, 1).put("when", object("gate", "g", "index", 0L)));
  }

  @Test
  public void refusesEdgesThatDoNotPointForwardOnce() {
    assertRefused("stage 'stage_4' edge to 'stage_2': edges must point to a stage listed later",
        m -> listAt(m, "stages", 3, "next").add(always("stage_2")));
    assertRefused("edges must point to a stage listed later",
        m -> listAt(m, "stages", 3, "next").add(always("stage_4")));
    assertRefused("stage 'stage_1' edge to 'stage_2': the stage has two edges to it",
        m -> listAt(m, "stages", 0, "next").add(always("stage_2")));
    assertRefused("edge to 'stage_9': 'next' names an unknown stage",
        m -> listAt(m, "stages", 0, "next").add(always("stage_9")));
    assertRefused("'stage' must be of type str",
        m -> listAt(m, "stages", 0, "next").add(object("stage", 3L, "when", "always")));
  }

  @Test
  public void refusesGraphsThePythonReaderRefuses() {
    assertRefused("entry 'stage_4' must be the first stage listed ('stage_1')",
        m -> m.put("entry", "stage_4"));
    assertRefused("stage 'stage_3' has no edge into it; it is not reachable from entry 'stage_1'",
        m -> listAt(m, "stages", 0, "next").remove(2));
    // Exits only on stages every sample runs: not on a gated branch.
    assertRefused("exit 'exit_1': stage 'stage_2' is conditional (a gate or route may skip it)",
        m -> at(m, "exits", 0).put("stage", "stage_2"));
    // The last stage reached only through an expert is conditional.
    assertRefused("the last stage 'stage_8' is conditional", m -> {
      listAt(m, "stages", 3, "next").remove(0);
      listAt(m, "stages", 6, "next").add(always("stage_8"));
    });
    // An "always" edge from a conditional stage does not make its target unconditional.
    assertRefused("exit 'exit_1': stage 'stage_4' is conditional", m -> {
      listAt(m, "stages", 0, "next").set(0, gate("stage_4", "g", 0));
      listAt(m, "stages", 0, "next").add(always("stage_8"));
    });
    assertRefused("input 'merged': no model input or earlier stage produces it",
        m -> at(m, "stages", 1).put("inputs", list(tensor("merged", 8, 8, 4))));
    assertRefused("terminal stage 'stage_8' has no exit", m -> listAt(m, "exits").remove(1));
  }

  @Test
  public void refusesBadDecisionTables() {
    assertRefused("'gates' must be a list. Received: 'g'", m -> m.put("gates", "g"));
    assertRefused("'routes' must be a list", m -> m.put("routes", object("name", "r")));
    assertRefused("gates[0]: missing required key 'groups'", m -> at(m, "gates", 0).remove("groups"));
    assertRefused("routes[0]: 'experts' must be of type int",
        m -> at(m, "routes", 0).put("experts", true));
    assertRefused("gate 'g': the gate name is used twice",
        m -> listAt(m, "gates").add(at(m, "gates", 0)));
    assertRefused("gate 'g': unknown stage 'stage_9'", m -> at(m, "gates", 0).put("stage", "stage_9"));
    assertRefused("gate 'g': tensor 'stem' must have shape (batch, 2) for groups=2",
        m -> at(m, "gates", 0).put("tensor", "stem"));
    assertRefused("route 'r': tensor 'g' is not an output of stage 'stage_4'",
        m -> at(m, "routes", 0).put("tensor", "g"));
    assertRefused("gate 'g': 'groups' must lie in [1, 2147483647]. Received: 0",
        m -> at(m, "gates", 0).put("groups", 0L));
    assertRefused("route 'r': 'experts' must lie in [2, 2147483647]. Received: 1",
        m -> at(m, "routes", 0).put("experts", 1L));
    assertRefused("tensor 'r' must have shape (batch, 4) for experts=4. Received: [null, 3]",
        m -> at(m, "routes", 0).put("experts", 4L));
    assertRefused("'gates' is non-empty but the feature 'gates' is not declared",
        m -> listAt(m, "features").remove("gates"));
    assertRefused("'routes' is non-empty but the feature 'routes' is not declared",
        m -> listAt(m, "features").remove("routes"));
  }

  @Test
  public void aGateEdgeNeedsVersion2AndVersion1StaysLinear() {
    assertRefused("version 1 supports only \"when\": \"always\"", m -> {
      m.put("version", 1L);
      m.put("features", list("exits"));
      m.put("gates", list());
      m.put("routes", list());
    });
    // Without tables or conditional edges, a version-2 chain may still branch on "always".
    Map<String, Object> linear = Fixtures.manifest();
    linear.put("version", 2L);
    listAt(linear, "stages", 0, "next").add(always("stage_3"));
    Manifest manifest = ManifestParser.parse(linear);
    assertEquals(2, manifest.incoming("stage_3").size());
    assertTrue(manifest.gates().isEmpty());
  }
}
