package org.kerasdynamic.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.Map;
import org.junit.Test;

/** Policy files and merging rules over the manifest's defaults, as Policy does in Python. */
public class PoliciesTest {
  private final Manifest manifest = ManifestParser.parse(Fixtures.manifest());

  private static Map<String, ExitRule> file(String text) {
    return Policies.parseFile(text.getBytes(StandardCharsets.UTF_8), "policy.json");
  }

  @Test
  public void appliesAPolicyFileOverTheDefaults() {
    Map<String, ExitRule> rules = Policies.merge(Policies.defaults(manifest), file(
        "{\"format\": \"keras_dynamic.policy\", \"version\": 1, \"exits\": "
            + "{\"exit_1\": {\"kind\": \"entropy\", \"threshold\": 0.25}, \"exit_2\": null}}"));
    assertEquals(ExitRule.Kind.ENTROPY, rules.get("exit_1").kind());
    assertEquals(0.25, rules.get("exit_1").threshold(), 0.0);
    assertNull(rules.get("exit_2"));
    assertTrue(rules.containsKey("final"));
  }

  @Test
  public void refusesUnknownExitsAndBadFiles() {
    assertTrue(assertThrows(ManifestException.class, () -> Policies.merge(Policies.defaults(manifest),
        file("{\"format\": \"keras_dynamic.policy\", \"version\": 1, \"exits\": {\"exit_9\": null}}")))
        .getMessage().contains("unknown exit(s) [exit_9]"));
    assertTrue(assertThrows(ManifestException.class,
        () -> file("{\"format\": \"other\", \"version\": 1, \"exits\": {}}")).getMessage()
        .contains("'format' must be 'keras_dynamic.policy'"));
    assertTrue(assertThrows(ManifestException.class,
        () -> file("{\"format\": \"keras_dynamic.policy\", \"version\": 2, \"exits\": {}}"))
        .getMessage().contains("unsupported policy version 2"));
    assertTrue(assertThrows(ManifestException.class,
        () -> file("{\"format\": \"keras_dynamic.policy\", \"version\": 1, \"exits\": []}"))
        .getMessage().contains("'exits' must be an object"));
    assertTrue(assertThrows(ManifestException.class,
        () -> file("{\"format\": \"keras_dynamic.policy\", \"version\": 1, \"exits\": "
            + "{\"exit_1\": {\"kind\": \"max_softmax\", \"threshold\": false}}}"))
        .getMessage().contains("policy of exit 'exit_1': the threshold must be a finite number"));
  }
}
