package org.kerasdynamic.core;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.StreamReadFeature;
import java.io.IOException;
import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Parses a JSON document strictly into plain Java values.
 *
 * <p>Jackson's streaming parser does the lexing (RFC 8259 only: no comments, NaN, single
 * quotes, leading zeros or raw control characters); on top of it this class refuses duplicate
 * object keys (Python's {@code json} keeps the last one silently, a reader keeping the first
 * would take other decisions), text that is not valid UTF-8, a byte-order mark, anything after
 * the document, nesting deeper than {@link #MAX_DEPTH} and numbers longer than {@link
 * #MAX_NUMBER_LENGTH} characters.
 *
 * <p>Values: objects become {@code LinkedHashMap<String, Object>}, arrays {@code
 * ArrayList<Object>}, strings {@code String}, {@code true}/{@code false} {@code Boolean},
 * {@code null} Java null, integer literals {@code Long} (or {@code BigInteger} outside the long
 * range) and literals with a fraction or exponent {@code Double}, so "int" and "float" stay as
 * distinct as they are for Python's reader.
 */
public final class StrictJson {
  /** Deepest nesting accepted; export manifests nest six levels. */
  public static final int MAX_DEPTH = 64;

  /** Longest number literal accepted, in characters. */
  public static final int MAX_NUMBER_LENGTH = 400;

  private static final JsonFactory FACTORY =
      JsonFactory.builder().enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION).build();

  private StrictJson() {}

  /**
   * Parses {@code utf8} (the bytes of a JSON file).
   *
   * @param source names the document in error messages (e.g. the file path)
   * @throws ManifestException if the bytes are not one strict JSON document
   */
  public static Object parse(byte[] utf8, String source) {
    String text;
    try {
      text =
          StandardCharsets.UTF_8
              .newDecoder()
              .onMalformedInput(CodingErrorAction.REPORT)
              .onUnmappableCharacter(CodingErrorAction.REPORT)
              .decode(ByteBuffer.wrap(utf8))
              .toString();
    } catch (CharacterCodingException e) {
      throw new ManifestException(source + ": not valid UTF-8 text.");
    }
    if (text.startsWith("\uFEFF")) {
      throw new ManifestException(source + ": starts with a byte-order mark; write plain UTF-8.");
    }
    try (JsonParser parser = FACTORY.createParser(text)) {
      JsonToken first = parser.nextToken();
      if (first == null) {
        throw new ManifestException(source + ": empty document.");
      }
      Object value = read(parser, first, 1, source);
      if (parser.nextToken() != null) {
        throw new ManifestException(
            source + ": unexpected content after the JSON document at " + location(parser) + ".");
      }
      return value;
    } catch (JsonProcessingException e) {
      String where =
          e.getLocation() == null
              ? ""
              : " at line " + e.getLocation().getLineNr() + ", column "
                  + e.getLocation().getColumnNr();
      throw new ManifestException(
          source + ": not valid JSON (" + e.getOriginalMessage() + where + ").");
    } catch (IOException e) {
      throw new ManifestException(source + ": cannot parse (" + e.getMessage() + ").");
    }
  }

  private static Object read(JsonParser parser, JsonToken token, int depth, String source)
      throws IOException {
    switch (token) {
      case START_OBJECT:
        checkDepth(parser, depth, source);
        Map<String, Object> object = new LinkedHashMap<>();
        for (JsonToken t = parser.nextToken(); t != JsonToken.END_OBJECT; t = parser.nextToken()) {
          String key = parser.currentName();
          object.put(key, read(parser, parser.nextToken(), depth + 1, source));
        }
        return object;
      case START_ARRAY:
        checkDepth(parser, depth, source);
        List<Object> array = new ArrayList<>();
        for (JsonToken t = parser.nextToken(); t != JsonToken.END_ARRAY; t = parser.nextToken()) {
          array.add(read(parser, t, depth + 1, source));
        }
        return array;
      case VALUE_STRING:
        return parser.getText();
      case VALUE_NUMBER_INT:
        return integer(checkLength(parser, source));
      case VALUE_NUMBER_FLOAT:
        return Double.parseDouble(checkLength(parser, source));
      case VALUE_TRUE:
        return Boolean.TRUE;
      case VALUE_FALSE:
        return Boolean.FALSE;
      case VALUE_NULL:
        return null;
      default:
        throw new ManifestException(
            source + ": unexpected token " + token + " at " + location(parser) + ".");
    }
  }

  private static Object integer(String literal) {
    BigInteger value = new BigInteger(literal);
    return value.bitLength() < 64 ? (Object) value.longValue() : value;
  }

  private static void checkDepth(JsonParser parser, int depth, String source) {
    if (depth > MAX_DEPTH) {
      throw new ManifestException(
          source + ": nesting deeper than " + MAX_DEPTH + " levels at " + location(parser) + ".");
    }
  }

  private static String checkLength(JsonParser parser, String source) throws IOException {
    String literal = parser.getText();
    if (literal.length() > MAX_NUMBER_LENGTH) {
      throw new ManifestException(
          source + ": a number of " + literal.length() + " characters at " + location(parser)
              + " (at most " + MAX_NUMBER_LENGTH + ").");
    }
    return literal;
  }

  private static String location(JsonParser parser) {
    return "line " + parser.currentLocation().getLineNr() + ", column "
        + parser.currentLocation().getColumnNr();
  }
}
