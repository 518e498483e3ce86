package org.kerasdynamic.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Exit rules per exit: the manifest's defaults, policy files (docs/MANIFEST.md, "Policy file")
 * and their merging, as {@code Policy} and {@code Chain._merge_policy} do in the Python runtime.
 *
 * <p>A rule map holds every exit name; a null value means "never leave early here".
 */
public final class Policies {
  public static final String FORMAT = "keras_dynamic.policy";
  public static final long VERSION = 1;

  private Policies() {}

  /** The manifest's default rule of every exit. */
  public static Map<String, ExitRule> defaults(Manifest manifest) {
    Map<String, ExitRule> rules = new LinkedHashMap<>();
    for (ExitSpec exit : manifest.exits()) {
      rules.put(exit.name(), exit.policy());
    }
    return rules;
  }

  /**
   * {@code base} with the rules of {@code overrides} applied (an override may be null: never
   * leave early). Overrides naming an exit that {@code base} lacks are refused.
   */
  public static Map<String, ExitRule> merge(
      Map<String, ExitRule> base, Map<String, ExitRule> overrides) {
    List<String> unknown = new ArrayList<>(overrides.keySet());
    unknown.removeAll(base.keySet());
    if (!unknown.isEmpty()) {
      Collections.sort(unknown);
      throw new ManifestException(
          "policy names unknown exit(s) " + unknown + "; the chain's exits are "
              + new ArrayList<>(base.keySet()) + ".");
    }
    Map<String, ExitRule> merged = new LinkedHashMap<>(base);
    merged.putAll(overrides);
    return Collections.unmodifiableMap(merged);
  }

  /** Parses a policy file's bytes into its rules by exit name. */
  public static Map<String, ExitRule> parseFile(byte[] bytes, String source) {
    Map<String, Object> document = Fields.object(StrictJson.parse(bytes, source), source);
    if (!FORMAT.equals(document.get("format"))) {
      throw new ManifestException(
          source + ": 'format' must be '" + FORMAT + "'. Received: "
              + Fields.show(document.get("format")));
    }
    Object version = document.get("version");
    if (!(version instanceof Long) || (Long) version != VERSION) {
      throw new ManifestException(
          source + ": unsupported policy version " + Fields.show(version)
              + "; this runtime reads version " + VERSION + ".");
    }
    return parseRules(document.get("exits"), source);
  }

  /** Parses an {@code "exits"} object: exit name to a rule or null. */
  static Map<String, ExitRule> parseRules(Object exits, String source) {
    if (!(exits instanceof Map)) {
      throw new ManifestException(source + ": 'exits' must be an object.");
    }
    Map<String, ExitRule> rules = new LinkedHashMap<>();
    for (Map.Entry<String, Object> rule : Fields.object(exits, source).entrySet()) {
      rules.put(
          rule.getKey(),
          ExitRule.parse(rule.getValue(), source + ": policy of exit '" + rule.getKey() + "'"));
    }
    return rules;
  }
}
