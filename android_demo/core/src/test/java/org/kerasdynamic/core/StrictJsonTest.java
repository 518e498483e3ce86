package org.kerasdynamic.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import org.junit.Test;

public class StrictJsonTest {
  private static Object parse(String text) {
    return StrictJson.parse(text.getBytes(StandardCharsets.UTF_8), "doc.json");
  }

  private static String refusal(String text) {
    return assertThrows(ManifestException.class, () -> parse(text)).getMessage();
  }

  @Test
  public void keepsIntegersAndFloatsApart() {
    Map<?, ?> doc = (Map<?, ?>) parse("{\"a\": 1, \"b\": 1.0, \"c\": 1e2, \"d\": -0, \"e\": null, \"f\": [true]}");
    assertEquals(1L, doc.get("a"));
    assertEquals(1.0, doc.get("b"));
    assertEquals(100.0, doc.get("c"));
    assertEquals(0L, doc.get("d"));
    assertNull(doc.get("e"));
    assertTrue(doc.containsKey("e"));
    assertEquals(List.of(true), doc.get("f"));
  }

  @Test
  public void integersBeyondLongStayExact() {
    Map<?, ?> doc = (Map<?, ?>) parse("{\"a\": 123456789012345678901234567890}");
    assertEquals(new BigInteger("123456789012345678901234567890"), doc.get("a"));
  }

  @Test
  public void refusesDuplicateKeysAtAnyDepth() {
    assertTrue(refusal("{\"a\": 1, \"a\": 2}").contains("Duplicate"));
    assertTrue(refusal("{\"x\": [{\"k\": 1, \"k\": 1}]}").contains("Duplicate"));
  }

  @Test
  public void refusesWhatRfc8259Refuses() {
    for (String text : new String[] {
        "{\"a\": NaN}", "{\"a\": Infinity}", "{\"a\": 01}", "{'a': 1}", "{\"a\": 1,}",
        "{\"a\": 1} // comment", "{\"a\": TRUE}", "{\"a\": \"tab\there\"}", "{\"a\": \"\\'\"}",
        "[1 2]", ""}) {
      refusal(text);
    }
  }

  @Test
  public void refusesTrailingContent() {
    assertTrue(refusal("{\"a\": 1} {\"b\": 2}").contains("after the JSON document"));
  }

  @Test
  public void refusesBadUtf8AndByteOrderMarks() {
    byte[] latin1 = "{\"a\": \"caf\u00e9\"}".getBytes(StandardCharsets.ISO_8859_1);
    assertTrue(assertThrows(ManifestException.class, () -> StrictJson.parse(latin1, "doc.json"))
        .getMessage().contains("UTF-8"));
    assertTrue(refusal("\uFEFF{}").contains("byte-order mark"));
  }

  @Test
  public void refusesDeepNestingAndHugeNumbers() {
    String deep = Fixtures.repeat('[', StrictJson.MAX_DEPTH + 1) + Fixtures.repeat(']', StrictJson.MAX_DEPTH + 1);
    assertTrue(refusal(deep).contains("nesting deeper"));
    parse(Fixtures.repeat('[', StrictJson.MAX_DEPTH) + Fixtures.repeat(']', StrictJson.MAX_DEPTH));
    assertTrue(refusal("[" + Fixtures.repeat('9', StrictJson.MAX_NUMBER_LENGTH + 1) + "]")
        .contains("a number of"));
  }

  @Test
  public void messagesNameTheDocument() {
    assertTrue(refusal("{").startsWith("doc.json: "));
  }
}
