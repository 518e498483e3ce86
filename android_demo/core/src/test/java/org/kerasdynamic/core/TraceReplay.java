package org.kerasdynamic.core;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Replays a golden trace through the JVM core and prints a JSON report of how its decisions
 * compare with the Python runtime's.
 *
 * <pre>java ... org.kerasdynamic.core.TraceReplay EXPORT_FOLDER TRACE_FILE</pre>
 *
 * <p>The export folder is loaded and verified as the app loads it (its own manifest.json, every
 * file's size and sha256), and the trace must name that manifest's sha256. Per run and sample
 * the report compares the exit taken, the label, and the score of every exit evaluated.
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
    int agree = 0;
    int ties = 0;
    int marginEvaluations = 0;
    int scores = 0;
    int identical = 0;
    double maxUlps = 0;
    double maxEntropyDifference = 0;
    for (int j = 0; j < trace.samples(); j++) {
      SampleResult result = chain.run(runner.start(j));
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
      if (same && walkOk && !scoresDiverged) {
        agree++;
      } else {
        String detail = String.format(Locale.ROOT,
            "sample %d: python %s/%d, jvm %s/%d, stages %s", j, pythonExit, run.label(j),
            result.exit(), result.label(), runner.invoked());
        (tieDiverged && walkOk && !scoresDiverged ? tieMismatches : mismatches).add(detail);
      }
    }
    return String.format(Locale.ROOT,
        "{\"name\": %s, \"samples\": %d, \"agree\": %d, \"mismatches\": %s, "
            + "\"tie_mismatches\": %s, \"ties\": %d, \"python_margin_evaluations\": %d, "
            + "\"scores_compared\": %d, \"scores_identical\": %d, \"max_score_ulps\": %s, "
            + "\"max_entropy_difference\": %s}",
        quote(run.name()), trace.samples(), agree, quoteAll(mismatches), quoteAll(tieMismatches),
        ties, marginEvaluations, scores, identical, maxUlps, maxEntropyDifference);
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
