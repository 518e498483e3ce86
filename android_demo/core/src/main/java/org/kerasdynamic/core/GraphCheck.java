package org.kerasdynamic.core;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

/**
 * The cross references of a manifest, checked as the Python reader checks them, and the run
 * order they define. Each stage's inputs are produced (with the same shape and dtype) by a model
 * input or a stage that runs before it, and the exits (one per stage, on a 2-D output, the same
 * number of classes everywhere, one on the last stage) are consistent.
 *
 * <p>Version 1 chains are linear (at most one edge per stage): the run order is the walk from
 * the entry, which must reach every stage without a cycle. Version 2 lists stages in run order
 * (the edges, checked by {@link ManifestParser}, point forward): every stage but the entry needs
 * an edge into it, and exits may only live on <em>unconditional</em> stages, those every sample
 * still in the chain runs (the entry, and any stage an "always" edge leads to from an
 * unconditional stage), the last stage among them, with no edge out of it.
 */
final class GraphCheck {
  private GraphCheck() {}

  /** Checks the graph; returns the stage names in run order. */
  static List<String> check(
      int version,
      List<TensorSpec> inputs,
      String entry,
      Map<String, StageSpec> stages,
      List<ExitSpec> exits) {
    List<String> order;
    Set<String> unconditional;
    if (version == ManifestParser.LINEAR_VERSION) {
      for (StageSpec stage : stages.values()) {
        if (stage.edges().size() > 1) {
          throw new ManifestException(
              "manifest: stage '" + stage.name() + "': has " + stage.edges().size()
                  + " 'always' edges; version " + ManifestParser.LINEAR_VERSION
                  + " chains are linear (at most one edge per stage).");
        }
      }
      order = walk(entry, stages);
      unconditional = new HashSet<>(order);
    } else {
      order = new ArrayList<>(stages.keySet());
      unconditional = unconditional(stages, order);
    }
    checkInputs(inputs, stages, order);
    checkExits(stages, exits, order.get(order.size() - 1), unconditional);
    return order;
  }

  /**
   * Version 2: the stages every sample still in the chain runs, refusing stages no edge leads
   * to and a last stage that is conditional or has edges out of it.
   */
  private static Set<String> unconditional(Map<String, StageSpec> stages, List<String> order) {
    Map<String, List<Edge>> incoming = new HashMap<>();
    for (String name : order) {
      incoming.put(name, new ArrayList<>());
    }
    for (StageSpec stage : stages.values()) {
      for (Edge edge : stage.edges()) {
        incoming.get(edge.target()).add(edge);
      }
    }
    Set<String> unconditional = new HashSet<>();
    unconditional.add(order.get(0));
    for (String name : order.subList(1, order.size())) {
      if (incoming.get(name).isEmpty()) {
        throw new ManifestException(
            "manifest: stage '" + name + "' has no edge into it; it is not reachable from "
                + "entry '" + order.get(0) + "'.");
      }
      for (Edge edge : incoming.get(name)) {
        if (edge.condition() == Condition.ALWAYS && unconditional.contains(edge.source())) {
          unconditional.add(name);
        }
      }
    }
    String last = order.get(order.size() - 1);
    if (!unconditional.contains(last)) {
      throw new ManifestException(
          "manifest: the last stage '" + last + "' is conditional; the last stage must run for "
              + "every sample that reaches it.");
    }
    if (!stages.get(last).edges().isEmpty()) {
      throw new ManifestException("manifest: the last stage '" + last + "' has edges out of it.");
    }
    return unconditional;
  }

  /** Stage names in run order, refusing cycles and stages the walk never reaches. */
  static List<String> walk(String entry, Map<String, StageSpec> stages) {
    List<String> order = new ArrayList<>();
    Set<String> seen = new HashSet<>();
    for (String current = entry; current != null; ) {
      if (!seen.add(current)) {
        throw new ManifestException(
            "manifest: stage '" + current + "' is reached twice (the 'next' edges form a cycle).");
      }
      order.add(current);
      List<Edge> edges = stages.get(current).edges();
      current = edges.isEmpty() ? null : edges.get(0).target();
    }
    Set<String> unreachable = new TreeSet<>(stages.keySet());
    unreachable.removeAll(seen);
    if (!unreachable.isEmpty()) {
      throw new ManifestException(
          "manifest: stage(s) " + unreachable + " are not reachable from entry '" + entry + "'.");
    }
    return order;
  }

  private static void checkInputs(
      List<TensorSpec> inputs, Map<String, StageSpec> stages, List<String> order) {
    Map<String, TensorSpec> available = new HashMap<>();
    for (TensorSpec spec : inputs) {
      available.put(spec.name(), spec);
    }
    for (String name : order) {
      StageSpec stage = stages.get(name);
      for (TensorSpec spec : stage.inputs()) {
        String where = "manifest: stage '" + name + "' input '" + spec.name() + "'";
        TensorSpec produced = available.get(spec.name());
        if (produced == null) {
          throw new ManifestException(where + ": no model input or earlier stage produces it.");
        }
        if (!spec.sameShapeAndType(produced)) {
          throw new ManifestException(
              where + ": declared " + spec.shapeText() + " " + spec.dtype().jsonName()
                  + " but its producer declares " + produced.shapeText() + " "
                  + produced.dtype().jsonName() + ".");
        }
      }
      for (TensorSpec spec : stage.outputs()) {
        available.put(spec.name(), spec);
      }
    }
  }

  private static void checkExits(
      Map<String, StageSpec> stages, List<ExitSpec> exits, String terminal,
      Set<String> unconditional) {
    Map<String, String> exitByStage = new LinkedHashMap<>();
    Set<String> names = new HashSet<>();
    Set<Integer> classes = new TreeSet<>();
    for (ExitSpec exit : exits) {
      String where = "manifest: exit '" + exit.name() + "'";
      if (!names.add(exit.name())) {
        throw new ManifestException(where + ": the exit name is used twice.");
      }
      StageSpec stage = stages.get(exit.stage());
      if (stage == null) {
        throw new ManifestException(where + ": unknown stage '" + exit.stage() + "'.");
      }
      if (!unconditional.contains(exit.stage())) {
        throw new ManifestException(
            where + ": stage '" + exit.stage() + "' is conditional (a gate or route may skip "
                + "it); exits must be on stages every sample runs.");
      }
      if (exitByStage.containsKey(exit.stage())) {
        throw new ManifestException(
            where + ": stage '" + exit.stage() + "' already has exit '"
                + exitByStage.get(exit.stage()) + "'; one exit per stage.");
      }
      exitByStage.put(exit.stage(), exit.name());
      TensorSpec output = stage.output(exit.tensor());
      if (output == null) {
        throw new ManifestException(
            where + ": tensor '" + exit.tensor() + "' is not an output of stage '"
                + exit.stage() + "'.");
      }
      if (output.dims().length != 1) {
        throw new ManifestException(
            where + ": a classifier exit must output (batch, classes) logits; tensor '"
                + exit.tensor() + "' has shape " + output.shapeText() + ".");
      }
      classes.add(output.dims()[0]);
    }
    if (classes.size() > 1) {
      throw new ManifestException(
          "manifest: exits disagree on the number of classes: " + classes + ".");
    }
    if (!exitByStage.containsKey(terminal)) {
      throw new ManifestException(
          "manifest: terminal stage '" + terminal + "' has no exit; the last stage must answer "
              + "for the samples that reach it.");
    }
  }
}
