package org.kerasdynamic.core;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * Replays a golden trace through the JVM core and prints a JSON report of how its decisions
 * compare with the Python runtime's.
 *
 * <pre>java ... org.kerasdynamic.core.TraceReplay EXPORT_FOLDER TRACE_FILE</pre>
 *
 * <p>The export folder is loaded and verified as the app loads it (its own manifest.json, every
 * file's size and sha256), and the trace must name that manifest's sha256. Per run and sample
 * the report compares the exit taken, the label, and the score of every exit evaluated; for an
 * export with gates and routes (trace version 2) also every gate's columns, the expert every
 * route chose (-1: not reached) and the stages run. A walk that fails for a sample (see {@link
 * ReplayRunner}) is a mismatch.
 *
 * <p>A decision can only differ where a score lies within a few ulps of its threshold: the two
 * runtimes round exp and log differently in the last bit. Such evaluations (Python score within
 * {@link #TIE_BAND} of the threshold) are "ties"; a disagreement at a tie whose two scores are
 * not bit-identical is reported apart ({@code tie_mismatches}) from every other disagreement
 * ({@code mismatches}, which must be empty).
 */
public final class TraceReplay {
  /** Absolute distance between a score and its threshold below which the decision is a tie. */
  static final double TIE_BAND = 1e-12;

  /** The relative margin inside which the Python sample loop settles max_softmax with NumPy. */
  static final double PYTHON_MARGIN = 1e-9;

  private TraceReplay() {}

  public static void main(String[] args) throws IOException {
    if (args.length != 2) {
      System.err.println("usage: TraceReplay EXPORT_FOLDER TRACE_FILE");
      System.exit(2);
    }
    Export export = ExportLoader.load(new DirectorySource(Paths.get(args[0])));
    Path tracePath = Paths.get(args[1]);
    Trace trace = TraceParser.parse(Files.readAllBytes(tracePath), tracePath.toString());
    if (!trace.manifestSha256().equals(export.manifestSha256())) {
      throw new ManifestException(
          tracePath + ": recorded with manifest sha256 " + trace.manifestSha256()
              + " but the export's manifest.json has " + export.manifestSha256() + ".");
    }
    StringBuilder report = new StringBuilder("{\"runs\": [");
    for (int r = 0; r < trace.runs().size(); r++) {
      report.append(r == 0 ? "" : ", ").append(replay(export.manifest(), trace, trace.runs().get(r)));
    }
    System.out.println(report.append("]}"));
  }

  private static String replay(Manifest manifest, Trace trace, Trace.Run run) {
    Map<String, ExitRule> rules = Policies.merge(Policies.defaults(manifest), run.policy());
    ReplayRunner runner = new ReplayRunner(manifest, trace);
    Chain<ReplayRunner.Tensor> chain = new Chain<>(manifest, rules, runner);
    List<String> mismatches = new ArrayList<>();
    List<String> tieMismatches = new ArrayList<>();
    DecisionCount decisions = new DecisionCount();
    checkDecisionNames(manifest, trace, run);
    int agree = 0;
    int ties = 0;
    int marginEvaluations = 0;
    int scores = 0;
    int identical = 0;
    double maxUlps = 0;
    double maxEntropyDifference = 0;
    for (int j = 0; j < trace.samples(); j++) {
      SampleResult result;
      try {
        result = chain.run(runner.start(j));
      } catch (StageException e) {
        mismatches.add(
            String.format(Locale.ROOT, "sample %d: the walk failed: %s", j, e.getMessage()));
        continue;
      }
      String pythonExit = trace.exits().get(run.exit(j));
      boolean tieDiverged = false;
      boolean scoresDiverged = false;
      for (String exit : trace.exits()) {
        Double python = run.score(exit, j);
        Double jvm = result.scores().get(exit);
        ExitRule rule = rules.get(exit);
        if (python == null) {
          continue;
        }
        if (rule != null && Math.abs(python - rule.threshold()) <= TIE_BAND) {
          ties++;
          tieDiverged |= jvm != null && jvm.doubleValue() != python.doubleValue()
              && rule.firesAt(jvm) != rule.firesAt(python);
        }
        if (rule != null && rule.kind() == ExitRule.Kind.MAX_SOFTMAX
            && Math.abs(python - rule.threshold()) <= Math.abs(rule.threshold()) * PYTHON_MARGIN) {
          marginEvaluations++;
        }
        if (jvm == null) {
          continue;
        }
        scores++;
        if (jvm.doubleValue() == python.doubleValue()) {
          identical++;
        } else if (rule.kind() == ExitRule.Kind.MAX_SOFTMAX) {
          maxUlps = Math.max(maxUlps, Math.abs(jvm - python) / Math.ulp(python));
        } else {
          maxEntropyDifference = Math.max(maxEntropyDifference, Math.abs(jvm - python));
        }
        scoresDiverged |= Math.abs(jvm - python) > TIE_BAND;
      }
      boolean same = result.exit().equals(pythonExit) && result.label() == run.label(j);
      boolean walkOk = result.stages().equals(runner.invoked());
      String decided = trace.version() == 2 ? decisions.compare(trace, run, j, result) : "";
      if (same && walkOk && !scoresDiverged && decided.isEmpty()) {
        agree++;
      } else {
        String detail = String.format(Locale.ROOT,
            "sample %d: python %s/%d, jvm %s/%d, stages %s%s", j, pythonExit, run.label(j),
            result.exit(), result.label(), runner.invoked(), decided);
        // A tie decided the other way sends the sample down another path: its later gates,
        // routes and stages differ as a consequence, and it stays a tie mismatch.
        (tieDiverged && walkOk && !scoresDiverged ? tieMismatches : mismatches).add(detail);
      }
    }
    return String.format(Locale.ROOT,
        "{\"name\": %s, \"samples\": %d, \"agree\": %d, \"mismatches\": %s, "
            + "\"tie_mismatches\": %s, \"ties\": %d, \"python_margin_evaluations\": %d, "
            + "\"scores_compared\": %d, \"scores_identical\": %d, \"max_score_ulps\": %s, "
            + "\"max_entropy_difference\": %s, %s}",
        quote(run.name()), trace.samples(), agree, quoteAll(mismatches), quoteAll(tieMismatches),
        ties, marginEvaluations, scores, identical, maxUlps, maxEntropyDifference,
        decisions.json());
  }

  /** The run records exactly the manifest's gates and routes (version 2). */
  private static void checkDecisionNames(Manifest manifest, Trace trace, Trace.Run run) {
    if (trace.version() != 2) {
      return;
    }
    Set<String> gates = new LinkedHashSet<>();
    manifest.gates().forEach(g -> gates.add(g.name()));
    Set<String> routes = new LinkedHashSet<>();
    manifest.routes().forEach(r -> routes.add(r.name()));
    if (!gates.equals(run.gateNames()) || !routes.equals(run.routeNames())) {
      throw new ManifestException(
          "run '" + run.name() + "' records gates " + run.gateNames() + " and routes "
              + run.routeNames() + "; the manifest has " + gates + " and " + routes + ".");
    }
  }

  /** Counts and compares the gate, route and stage decisions of version-2 runs. */
  private static final class DecisionCount {
    int gateColumns;
    int gateColumnsOn;
    int routes;
    int routesReached;
    int stageRows;
    int stagesSkipped;

    /** The differences for sample {@code j}, as text ("" when every decision agrees). */
    String compare(Trace trace, Trace.Run run, int j, SampleResult result) {
      StringBuilder differences = new StringBuilder();
      for (Map.Entry<String, boolean[]> gate : result.gates().entrySet()) {
        boolean[] python = run.gate(gate.getKey(), j);
        gateColumns += python.length;
        for (boolean on : python) {
          gateColumnsOn += on ? 1 : 0;
        }
        if (!Arrays.equals(python, gate.getValue())) {
          differences.append(String.format(Locale.ROOT, ", gate %s python %s jvm %s",
              gate.getKey(), Arrays.toString(python),
              Arrays.toString(gate.getValue())));
        }
      }
      for (Map.Entry<String, Integer> route : result.routes().entrySet()) {
        int python = run.route(route.getKey(), j);
        routes++;
        routesReached += python >= 0 ? 1 : 0;
        if (python != route.getValue()) {
          differences.append(String.format(Locale.ROOT, ", route %s python %d jvm %d",
              route.getKey(), python, route.getValue()));
        }
      }
      boolean[] python = run.stagesRun(j);
      boolean[] jvm = new boolean[python.length];
      for (String stage : result.stages()) {
        jvm[trace.stages().indexOf(stage)] = true;
      }
      stageRows++;
      for (boolean stageRan : python) {
        stagesSkipped += stageRan ? 0 : 1;
      }
      if (!Arrays.equals(python, jvm)) {
        differences.append(String.format(Locale.ROOT, ", stages_run python %s jvm %s",
            Arrays.toString(python), Arrays.toString(jvm)));
      }
      return differences.toString();
    }

    String json() {
      return String.format(Locale.ROOT,
          "\"gate_columns_compared\": %d, \"gate_columns_on\": %d, \"routes_compared\": %d, "
              + "\"routes_reached\": %d, \"stage_rows_compared\": %d, \"stages_skipped\": %d",
          gateColumns, gateColumnsOn, routes, routesReached, stageRows, stagesSkipped);
    }
  }

  private static String quote(String text) {
    return "\"" + text.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
  }

  private static String quoteAll(List<String> texts) {
    List<String> quoted = new ArrayList<>();
    for (String text : texts) {
      quoted.add(quote(text));
    }
    return quoted.toString();
  }
}
