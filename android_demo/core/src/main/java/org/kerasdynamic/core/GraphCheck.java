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
 * The cross references of a manifest, checked as the Python reader checks them: edges name
 * known stages, the entry is a stage, every stage is reached from the entry without a cycle,
 * each stage's inputs are produced (with the same shape and dtype) by a model input or a stage
 * that runs before it, and the exits (one per stage, on a 2-D output, the same number of
 * classes everywhere, one on the terminal stage) are consistent.
 *
 * <p>Version 1 chains are linear (at most one edge per stage), so "runs before" is the order of
 * the walk from the entry. When gated and routed edges arrive, this is the one place that learns
 * what "before" means on a graph with branches.
 */
final class GraphCheck {
  private GraphCheck() {}

  static void check(
      List<TensorSpec> inputs,
      String entry,
      Map<String, StageSpec> stages,
      List<ExitSpec> exits) {
    for (StageSpec stage : stages.values()) {
      String where = "manifest: stage '" + stage.name() + "'";
      for (Edge edge : stage.edges()) {
        if (!stages.containsKey(edge.target())) {
          throw new ManifestException(
              where + ": 'next' names unknown stage '" + edge.target() + "'.");
        }
      }
      if (stage.edges().size() > 1) {
        throw new ManifestException(
            where + ": has " + stage.edges().size() + " 'always' edges; version "
                + ManifestParser.VERSION + " chains are linear (at most one edge per stage).");
      }
    }
    if (!stages.containsKey(entry)) {
      throw new ManifestException("manifest: entry '" + entry + "' is not a stage name.");
    }
    List<String> order = walk(entry, stages);
    checkInputs(inputs, stages, order);
    checkExits(stages, exits, order.get(order.size() - 1));
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
      Map<String, StageSpec> stages, List<ExitSpec> exits, String terminal) {
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
